// The Runtime: equal graphs share one ORT session through counted handles, the cache of sessions is a bounded LRU,
// and shutdown releases everything.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Graph } from '../../src/graph/index.ts';
import { LorakitError } from '../../src/errors.ts';
import { Runtime, compile, defaultRuntime, type Session } from '../../src/runtime/index.ts';

/** y = x·k (+ a reshape to a run-time shape, whose dims get fresh symbols) for x [N, 2]. */
function scaleGraph(k: number) {
  const g = new Graph('scale');
  const x = g.input('x', 'f32', ['N', 2]);
  g.output('y', x.mul(k).reshape(x.shapeOf())); // y: [d0, d1]
  return g;
}
const feed = { x: { data: new Float32Array([1, 2, 3, 4]), shape: [2, 2] } };
const y = async (s: Session) => Array.from((await s.run(feed)).y.data as Float32Array);
const disposedError = (e: unknown) => e instanceof LorakitError && e.code === 'LK_SESSION_DISPOSED';

test('two compiles of identical graphs share one ORT session; disposing one handle leaves the other working', async () => {
  const s1 = await compile(scaleGraph(2));
  const s2 = await compile(scaleGraph(2)); // built anew: its run-time dims get the same symbols, so the same key
  assert.equal(s1.key, s2.key);
  assert.notEqual(s1, s2);
  await s1.dispose();
  await assert.rejects(s1.run(feed), disposedError);
  assert.deepEqual(await y(s2), [2, 4, 6, 8]);
  await s2.dispose();
});

test('a Runtime counts ORT sessions: one per structure, whatever the number of handles', async () => {
  const rt = new Runtime();
  const [a, b] = await Promise.all([rt.compile(scaleGraph(3)), rt.compile(scaleGraph(3))]); // concurrent, too
  const c = await rt.compile(scaleGraph(3));
  const other = await rt.compile(scaleGraph(4));
  assert.deepEqual(rt.stats(), { created: 2, released: 0, alive: 2, cached: 2 });
  assert.deepEqual(await y(c), [3, 6, 9, 12]);
  assert.deepEqual(await y(other), [4, 8, 12, 16]);
  for (const s of [a, b, c, other]) await s.dispose();
  // Kept by the cache: a later compile of the same structure creates nothing.
  assert.deepEqual(rt.stats(), { created: 2, released: 0, alive: 2, cached: 2 });
  await rt.compile(scaleGraph(3));
  assert.equal(rt.stats().created, 2);
  await rt.shutdown();
  assert.deepEqual(rt.stats(), { created: 2, released: 2, alive: 0, cached: 0 });
});

test('the cache holds maxCachedSessions: an evicted session is released when unused, kept while a handle lives', async () => {
  const rt = new Runtime({ maxCachedSessions: 1 });
  const a = await rt.compile(scaleGraph(1));
  const b = await rt.compile(scaleGraph(2)); // evicts a's session from the cache, but a still uses it
  assert.deepEqual(rt.stats(), { created: 2, released: 0, alive: 2, cached: 1 });
  assert.deepEqual(await y(a), [1, 2, 3, 4]);
  const a2 = await rt.compile(scaleGraph(1)); // still alive, so shared (and back in the cache, evicting b's)
  assert.equal(rt.stats().created, 2);
  await a.dispose();
  assert.deepEqual(await y(a2), [1, 2, 3, 4]);
  await b.dispose(); // out of the cache and unused: released now
  assert.deepEqual(rt.stats(), { created: 2, released: 1, alive: 1, cached: 1 });
  await a2.dispose(); // in the cache: kept
  assert.deepEqual(rt.stats(), { created: 2, released: 1, alive: 1, cached: 1 });
  const c = await rt.compile(scaleGraph(3)); // evicts the unused session of scaleGraph(1): released at once
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(rt.stats(), { created: 3, released: 2, alive: 1, cached: 1 });
  await c.dispose();
  await rt.shutdown();
});

test('retain: false releases the session at its last dispose', async () => {
  const rt = new Runtime();
  const s = await rt.compile(scaleGraph(5), { retain: false });
  const t = await rt.compile(scaleGraph(5), { retain: false });
  await s.dispose();
  assert.deepEqual(await y(t), [5, 10, 15, 20]);
  await t.dispose();
  assert.deepEqual(rt.stats(), { created: 1, released: 1, alive: 0, cached: 0 });
});

test('shutdown releases sessions still in use: their handles refuse to run, and the runtime compiles again', async () => {
  const rt = new Runtime();
  const s = await rt.compile(scaleGraph(6), { worker: true });
  assert.deepEqual(await y(s), [6, 12, 18, 24]);
  await rt.shutdown();
  await assert.rejects(s.run(feed), (e: unknown) => disposedError(e) && /shutdownRuntime/.test(String(e)));
  await s.dispose();
  const again = await rt.compile(scaleGraph(6), { worker: true });
  assert.deepEqual(await y(again), [6, 12, 18, 24]);
  await rt.shutdown();
});

test('compile() uses the default Runtime', async () => {
  const before = defaultRuntime().stats().created;
  const s = await compile(scaleGraph(7));
  assert.equal(defaultRuntime().stats().created, before + 1);
  await s.dispose();
});
