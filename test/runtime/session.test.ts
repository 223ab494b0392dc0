// Sessions: the worker keeps the event loop free, feeds are validated with lorakit errors, ORT failures are mapped.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Graph } from '../../src/graph/index.ts';
import { compile } from '../../src/runtime/index.ts';
import { LorakitError } from '../../src/errors.ts';

function matmulGraph() {
  const g = new Graph('mm');
  const a = g.input('a', 'f32', ['N', 4]);
  const b = g.input('b', 'f32', [4, 'M']);
  g.output('c', a.matmul(b));
  return g;
}

const code = (c: string, re?: RegExp) => (e: unknown) =>
  e instanceof LorakitError && e.code === c && (!re || re.test(e.message));

test('with worker: true the event loop keeps ticking while a long run executes', async () => {
  const g = new Graph('long');
  const a = g.input('a', 'f32', [600, 600]);
  let y = a;
  for (let i = 0; i < 12; i++) y = y.matmul(a).mul(1e-3);
  g.output('y', y);
  const s = await compile(g, { worker: true });
  const data = new Float32Array(600 * 600).fill(0.01);
  let ticks = 0;
  const iv = setInterval(() => ticks++, 1);
  const t0 = performance.now();
  await s.run({ a: data });
  const ms = performance.now() - t0;
  clearInterval(iv);
  assert.ok(ms > 20, `run too short to judge (${ms.toFixed(1)} ms)`);
  assert.ok(ticks >= Math.min(10, ms / 10), `only ${ticks} ticks of 1 ms during a ${ms.toFixed(0)} ms run`);
});

test('symbolic dims bind at run time and must agree across feeds', async () => {
  const s = await compile(matmulGraph(), { worker: false });
  const out = await s.run({
    a: { data: new Float32Array(8).fill(1), shape: [2, 4] },
    b: { data: new Float32Array(12).fill(1), shape: [4, 3] },
  });
  assert.deepEqual(out.c.shape, [2, 3]);
  assert.deepEqual(Array.from(out.c.data as Float32Array), [4, 4, 4, 4, 4, 4]);
});

test(
  'with worker: true, feeds named in transfer move to the worker and back (a {data, shape} feed gets a new ' +
    'view), the others are copied',
  async () => {
    const s = await compile(matmulGraph(), { worker: true });
    const a = new Float32Array(8).fill(1),
      b = new Float32Array(12).fill(1);
    const fa = { data: a, shape: [2, 4] };
    const out = await s.run({ a: fa, b: { data: b, shape: [4, 3] } }, undefined, { transfer: ['a'] });
    assert.deepEqual(Array.from(out.c.data as Float32Array), [4, 4, 4, 4, 4, 4]);
    assert.equal(a.length, 0); // moved
    assert.notEqual(fa.data, a);
    assert.deepEqual(Array.from(fa.data), new Array(8).fill(1)); // and back, same values
    assert.equal(b.length, 12);
    fa.data[0] = 2; // the returned view is usable for the next run
    const again = await s.run({ a: fa, b: { data: b, shape: [4, 3] } }, undefined, { transfer: ['a'] });
    assert.deepEqual(Array.from(again.c.data as Float32Array).slice(0, 3), [5, 5, 5]);
  },
);

test('in the calling thread (the default) transfer moves nothing: the feeds stay usable', async () => {
  const s = await compile(matmulGraph());
  const a = new Float32Array(8).fill(1);
  const out = await s.run(
    { a: { data: a, shape: [2, 4] }, b: { data: new Float32Array(12).fill(1), shape: [4, 3] } },
    undefined,
    { transfer: ['a'] },
  );
  assert.deepEqual(Array.from(out.c.data as Float32Array), [4, 4, 4, 4, 4, 4]);
  assert.equal(a.length, 8);
});

test('bad feeds are lorakit errors naming the input and the shapes', async () => {
  const s = await compile(matmulGraph(), { worker: false });
  const b = { data: new Float32Array(12), shape: [4, 3] };
  await assert.rejects(s.run({ b }), code('LK_FEED_MISSING', /a: f32\[N, 4\]/));
  await assert.rejects(
    s.run({ a: { data: new Float32Array(8), shape: [2, 4] }, b, z: new Float32Array(1) }),
    code('LK_FEED_UNKNOWN', /"z"/),
  );
  await assert.rejects(
    s.run({ a: { data: new Float64Array(8), shape: [2, 4] }, b }),
    code('LK_DTYPE_MISMATCH', /expected f32 \(Float32Array\), got Float64Array/),
  );
  await assert.rejects(
    s.run({ a: { data: new Float32Array(10), shape: [2, 5] }, b }),
    code('LK_SHAPE_MISMATCH', /shape \[2, 5\] does not fit input a: f32\[N, 4\]/),
  );
  await assert.rejects(
    s.run({ a: { data: new Float32Array(7), shape: [2, 4] }, b }),
    code('LK_SHAPE_MISMATCH', /needs 8 values, got 7/),
  );
  await assert.rejects(s.run({ a: new Float32Array(8), b }), code('LK_SHAPE_MISMATCH', /symbolic dims/));
});

test('shape errors at build time name the node and both shapes', () => {
  const g = new Graph();
  const a = g.input('a', 'f32', [3, 4]);
  const b = g.input('b', 'f32', [5, 6]);
  assert.throws(
    () => g.scope('model.layers.0', () => a.matmul(b)),
    code('LK_SHAPE_MISMATCH', /model\.layers\.0\/MatMul_\d+: cannot multiply \[3, 4\] by \[5, 6\]/),
  );
  assert.throws(
    () => a.add(g.input('c', 'f32', [2, 4])),
    code('LK_SHAPE_MISMATCH', /cannot broadcast \[3, 4\] with \[2, 4\]/),
  );
  assert.throws(() => a.add(g.input('d', 'f64', [3, 4])), code('LK_DTYPE_MISMATCH', /f32 and f64/));
  assert.throws(
    () => a.reshape([5, 5]),
    code('LK_SHAPE_MISMATCH', /cannot reshape \[3, 4\] \(12 elements\) to \[5, 5\]/),
  );
});

test('an unknown op is rejected by name', () => {
  const g = new Graph();
  const a = g.input('a', 'f32', [2]);
  assert.throws(() => g.op('FancyOp' as never, [a]), code('LK_UNKNOWN_OP', /unknown op "FancyOp"/));
});

test('a graph without outputs, or with a duplicate name, is rejected', async () => {
  const g = new Graph('empty');
  g.input('a', 'f32', [2]);
  await assert.rejects(compile(g), code('LK_GRAPH_INVALID', /no outputs/));
  assert.throws(() => g.input('a', 'f32', [2]), code('LK_GRAPH_INVALID', /already used/));
});

test('ORT failures at run time name the node', async () => {
  const g = new Graph('rt');
  const a = g.input('a', 'f32', ['N']);
  const idx = g.input('i', 'i64', [1]);
  g.output('y', a.gather(idx));
  const s = await compile(g, { worker: false });
  await assert.rejects(
    s.run({ a: { data: new Float32Array(3), shape: [3] }, i: BigInt64Array.from([7n]) }),
    code('LK_RUNTIME', /at node Gather_\d+; its inputs are a: f32\[N\], i: i64\[1\]/),
  );
});

test('a disposed handle refuses to run; compiling again gives a working one', async () => {
  const s1 = await compile(matmulGraph(), { worker: false });
  await s1.dispose();
  await s1.dispose(); // idempotent
  await assert.rejects(s1.run({}), code('LK_SESSION_DISPOSED', /was disposed/));
  const s2 = await compile(matmulGraph(), { worker: false });
  const out = await s2.run({
    a: { data: new Float32Array(4), shape: [1, 4] },
    b: { data: new Float32Array(4).fill(1), shape: [4, 1] },
  });
  assert.deepEqual(out.c.shape, [1, 1]);
});

test('the WebGPU EP falls back to CPU with a warning when no GPU adapter exists', async () => {
  const g = new Graph('gpu');
  const a = g.input('a', 'f32', [2]);
  g.output('y', a.mul(2));
  const warn = console.warn;
  const seen: string[] = [];
  console.warn = (m: string) => seen.push(m);
  try {
    const s = await compile(g, { ep: 'webgpu', worker: false });
    const out = await s.run({ a: new Float32Array([1, 2]) });
    assert.deepEqual(Array.from(out.y.data as Float32Array), [2, 4]);
    if (s.ep === 'cpu') assert.match(seen.join('\n'), /WebGPU execution provider is unavailable here/);
  } finally {
    console.warn = warn;
  }
});
