// The on-disk session cache: entries of model.onnx + hard links, one link (or copy) per weight file shared by every
// entry, symlinked weights (the hub cache layout), atomic entries under concurrent compiles, and the sweep's bounds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  statSync,
  symlinkSync,
  utimesSync,
} from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Graph } from '../../src/graph/index.ts';
import {
  Runtime,
  type Session,
  clearSessionCache,
  compile,
  sessionCacheInfo,
  sweepSessionCache,
} from '../../src/runtime/index.ts';

/** A 2×2 f32 weight file holding [[1, 2], [3, 4]] (after `pad` bytes). */
async function weightFile(dir: string, name = 'w.bin', pad = 0): Promise<string> {
  const path = join(dir, name);
  const bytes = new Uint8Array(pad + 16);
  bytes.set(new Uint8Array(new Float32Array([1, 2, 3, 4]).buffer), pad);
  await writeFile(path, bytes);
  return path;
}

/** y = x·W (+ `plus`), W read from `path` at `offset`: graphs differing in `plus` share the weight file. */
function graph(path: string, plus = 0, offset = 0) {
  const g = new Graph('file-weights');
  const x = g.input('x', 'f32', [1, 2]);
  const w = g.initializer('w', 'f32', [2, 2], { kind: 'file', path, offset, length: 16 });
  g.output('y', plus ? x.matmul(w).add(plus) : x.matmul(w));
  return g;
}
const run = async (s: Session) => Array.from((await s.run({ x: new Float32Array([1, 1]) })).y.data as Float32Array);
const tempDir = () => mkdtempSync(join(tmpdir(), 'lk-diskcache-'));
const ls = (dir: string) => (existsSync(dir) ? readdirSync(dir).sort() : []);
const ino = (p: string) => statSync(p).ino;

test('entries hold model.onnx and hard links; graphs sharing a weight file share one link of it', async () => {
  const dir = tempDir(),
    cache = join(dir, 'cache');
  const src = await weightFile(dir);
  const rt = new Runtime();
  const a = await rt.compile(graph(src), { cacheDir: cache });
  const b = await rt.compile(graph(src, 10), { cacheDir: cache });
  assert.deepEqual(await run(a), [4, 6]);
  assert.deepEqual(await run(b), [14, 16]);
  assert.deepEqual(ls(join(cache, 'entries')), [a.key, b.key].sort());
  const [link] = ls(join(cache, 'weights'));
  assert.equal(ls(join(cache, 'weights')).length, 1, 'one link per weight file, not one per graph');
  for (const s of [a, b]) {
    assert.deepEqual(ls(join(cache, 'entries', s.key)), ['model.onnx', 'w0_w.bin']);
    assert.equal(ino(join(cache, 'entries', s.key, 'w0_w.bin')), ino(src), 'a hard link to the model file itself');
  }
  assert.equal(ino(join(cache, 'weights', link)), ino(src));
  assert.deepEqual(ls(join(cache, 'tmp')), [], 'nothing left half-built');
  await rt.shutdown();
});

test('weights that are symlinks (a hub snapshot linking into blobs/) load: the cache links the real file', async () => {
  const dir = tempDir();
  mkdirSync(join(dir, 'blobs'));
  mkdirSync(join(dir, 'snapshots', 'abc'), { recursive: true });
  const blob = await weightFile(join(dir, 'blobs'), '4f1e9a');
  symlinkSync('../../blobs/4f1e9a', join(dir, 'snapshots', 'abc', 'model.bin')); // relative, as huggingface_hub does
  const cache = join(dir, 'cache');
  const s = await compile(graph(join(dir, 'snapshots', 'abc', 'model.bin'), 1), { cacheDir: cache });
  assert.deepEqual(await run(s), [5, 7]);
  const linked = join(cache, 'entries', s.key, 'w0_model.bin');
  assert.ok(lstatSync(linked).isFile(), 'a hard link to the blob, not to the symlink');
  assert.equal(ino(linked), ino(blob));
  await s.dispose();
});

test('a weight file on another file system is copied once, and every entry links that copy', async (t) => {
  const other = existsSync('/dev/shm') ? mkdtempSync('/dev/shm/lk-diskcache-') : null;
  const dir = tempDir();
  if (!other || statSync(other).dev === statSync(dir).dev) return t.skip('no second file system here');
  try {
    const src = await weightFile(other);
    const cache = join(dir, 'cache');
    const rt = new Runtime();
    const a = await rt.compile(graph(src), { cacheDir: cache });
    const b = await rt.compile(graph(src, 2), { cacheDir: cache });
    assert.deepEqual(await run(b), [6, 8]);
    const copies = ls(join(cache, 'weights'));
    assert.equal(copies.length, 1);
    const copy = join(cache, 'weights', copies[0]);
    assert.notEqual(statSync(copy).dev, statSync(src).dev);
    assert.equal(statSync(copy).nlink, 3, 'the copy and one hard link per entry');
    for (const s of [a, b]) assert.equal(ino(join(cache, 'entries', s.key, 'w0_w.bin')), ino(copy));
    await rt.shutdown();
  } finally {
    await rm(other, { recursive: true, force: true });
  }
});

test('an entry that ORT cannot load is deleted and rebuilt, never reused', async () => {
  const dir = tempDir(),
    cache = join(dir, 'cache');
  const src = await weightFile(dir);
  const rt = new Runtime();
  const s = await rt.compile(graph(src), { cacheDir: cache });
  await rt.shutdown();
  const model = join(cache, 'entries', s.key, 'model.onnx');
  await writeFile(model, 'not a model'); // e.g. an entry broken by another tool
  const again = await new Runtime().compile(graph(src), { cacheDir: cache });
  assert.deepEqual(await run(again), [4, 6]);
  assert.ok(statSync(model).size > 100, 'the entry was rebuilt');
  await again.dispose();
});

test("persistOptimized saves ORT's optimized model in the entry, loads it next run, remakes a broken one", async () => {
  const dir = tempDir(),
    cache = join(dir, 'cache');
  const src = await weightFile(dir);
  const opts = { cacheDir: cache, persistOptimized: true };
  const first = await new Runtime().compile(graph(src, 10), opts);
  assert.deepEqual(await run(first), [14, 16]);
  await first.dispose();
  const entry = join(cache, 'entries', first.key);
  assert.ok(ls(entry).includes('optimized.onnx'), ls(entry).join());
  assert.deepEqual(
    ls(entry).filter(
      (f) => f.includes('.tmp') || (f.endsWith('.onnx') && !['model.onnx', 'optimized.onnx'].includes(f)),
    ),
    [],
  );
  // model.onnx unreadable: the next process runs from the optimized model alone
  const model = readFileSync(join(entry, 'model.onnx'));
  await writeFile(join(entry, 'model.onnx'), 'not a model');
  const second = await new Runtime().compile(graph(src, 10), opts);
  assert.deepEqual(await run(second), [14, 16]);
  await second.dispose();
  // had the saved model failed to load, the entry would have been rebuilt, model.onnx with it
  assert.equal(readFileSync(join(entry, 'model.onnx'), 'utf8'), 'not a model');
  // a broken optimized model is deleted and made again from model.onnx
  await writeFile(join(entry, 'model.onnx'), model);
  await writeFile(join(entry, 'optimized.onnx'), 'not a model');
  const third = await new Runtime().compile(graph(src, 10), opts);
  assert.deepEqual(await run(third), [14, 16]);
  await third.dispose();
  assert.ok(statSync(join(entry, 'optimized.onnx')).size > 100, 'remade');
});

test('a saved optimized model with a Scan whose body ORT folds constants in loads next run, not rebuilt', async () => {
  // ORT 1.30 writes such a body's initializers twice and then refuses the file; the runtime mends it when saving
  const dir = tempDir(),
    cache = join(dir, 'cache');
  const src = await weightFile(dir);
  const scanned = () => {
    const g = new Graph('scan-saved');
    const x = g.input('x', 'f32', [3, 1, 2]);
    const w = g.initializer('w', 'f32', [2, 2], { kind: 'file', path: src, offset: 0, length: 16 });
    // 10 expanded to the shape of a body value: ORT folds it into an initializer of the body
    const [y] = g.scan([x], ([h]) => {
      const z = h.matmul(w);
      return [z.add(g.scalar(10, 'f32').expand(z.shapeOf()))];
    });
    g.output('y', y);
    return g;
  };
  const opts = { cacheDir: cache, persistOptimized: true };
  const x = { data: new Float32Array([1, 1, 0, 1, 1, 0]), shape: [3, 1, 2] };
  const want = [14, 16, 13, 14, 11, 12];
  const first = await new Runtime().compile(scanned(), opts);
  assert.deepEqual(Array.from((await first.run({ x })).y.data as Float32Array), want);
  await first.dispose();
  const entry = join(cache, 'entries', first.key);
  assert.ok(ls(entry).includes('optimized.onnx'), ls(entry).join());
  await writeFile(join(entry, 'model.onnx'), 'not a model');
  const second = await new Runtime().compile(scanned(), opts);
  assert.deepEqual(Array.from((await second.run({ x })).y.data as Float32Array), want);
  await second.dispose();
  assert.equal(readFileSync(join(entry, 'model.onnx'), 'utf8'), 'not a model', 'ran from the saved model alone');
});

test("the key holds the environment (ORT build, CPU flags): another machine's entry is not used", async () => {
  const dir = tempDir(),
    cache = join(dir, 'cache');
  const src = await weightFile(dir);
  const opts = { cacheDir: cache, persistOptimized: true };
  const here = new Runtime();
  assert.match(here.environment, /"common":"\d+\.\d+/, 'the default names the ORT build');
  const keys: string[] = [];
  for (const environment of ['machine-a', 'machine-b', 'machine-a']) {
    const s = await new Runtime({ environment }).compile(graph(src, 10), opts);
    assert.deepEqual(await run(s), [14, 16]);
    keys.push(s.key);
    await s.dispose();
  }
  assert.notEqual(keys[0], keys[1]);
  assert.equal(keys[0], keys[2]);
  assert.deepEqual(ls(join(cache, 'entries')), [keys[0], keys[1]].sort());
});

test('two runtimes compiling the same graphs at once into one folder both work, and leave one entry each', async () => {
  const dir = tempDir(),
    cache = join(dir, 'cache');
  const src = await weightFile(dir);
  const [r1, r2] = [new Runtime(), new Runtime()];
  const sessions = await Promise.all(
    [1, 2, 3].flatMap((k) => [r1, r2].map((r) => r.compile(graph(src, k), { cacheDir: cache }))),
  );
  for (const [i, s] of sessions.entries()) assert.deepEqual(await run(s), [4 + 1 + (i >> 1), 6 + 1 + (i >> 1)]);
  assert.equal(ls(join(cache, 'entries')).length, 3);
  assert.equal(ls(join(cache, 'weights')).length, 1);
  assert.deepEqual(ls(join(cache, 'tmp')), []);
  await r1.shutdown();
  await r2.shutdown();
});

test('two processes compiling the same graph at once into one folder both run it', async () => {
  const dir = tempDir(),
    cache = join(dir, 'cache');
  const src = await weightFile(dir);
  const script = `
    import { Graph } from './src/graph/index.ts';
    import { compile, shutdownRuntime } from './src/runtime/index.ts';
    const g = new Graph('file-weights');
    const x = g.input('x', 'f32', [1, 2]);
    const w = g.initializer('w', 'f32', [2, 2], { kind: 'file', path: ${JSON.stringify(src)}, offset: 0, length: 16 });
    g.output('y', x.matmul(w));
    const s = await compile(g, { cacheDir: ${JSON.stringify(cache)} });
    console.log(Array.from((await s.run({ x: new Float32Array([1, 1]) })).y.data).join(','));
    await shutdownRuntime();`;
  const child = () =>
    new Promise<string>((resolve, reject) => {
      const p = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script]);
      let out = '',
        err = '';
      p.stdout.on('data', (d) => (out += d));
      p.stderr.on('data', (d) => (err += d));
      p.on('close', (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(err))));
    });
  assert.deepEqual(await Promise.all([child(), child()]), ['4,6', '4,6']);
  assert.equal(ls(join(cache, 'entries')).length, 1);
  assert.deepEqual(ls(join(cache, 'tmp')), []);
});

test('the sweep deletes old entries, then the least recently used past maxBytes, then unused weight links', async () => {
  const dir = tempDir(),
    cache = join(dir, 'cache');
  const rt = new Runtime({ maxCachedSessions: 0 });
  const srcs = await Promise.all(['a.bin', 'b.bin', 'c.bin'].map((n) => weightFile(dir, n)));
  const sessions: Session[] = [];
  for (const src of srcs) sessions.push(await rt.compile(graph(src), { cacheDir: cache }));
  const [ka, kb, kc] = sessions.map((s) => s.key);
  const now = Date.now();
  const age = (key: string, ms: number) =>
    utimesSync(join(cache, 'entries', key), new Date(now - ms), new Date(now - ms));
  age(ka, 30 * 86400_000); // a month unused
  age(kb, 2 * 3600_000);
  age(kc, 3600_000);
  const later = now + 120_000; // past the minute in which new files are never deleted
  const day = 86400_000;
  assert.deepEqual(await sweepSessionCache(cache, { maxAgeMs: day }, new Set(), later), { entries: 1, weightFiles: 1 });
  assert.deepEqual(ls(join(cache, 'entries')), [kb, kc].sort());
  // The bytes only the cache holds: the two model.onnx files (the weights are links to files that still exist).
  const info = await sessionCacheInfo(cache);
  const onnx = (k: string) => statSync(join(cache, 'entries', k, 'model.onnx')).size;
  assert.equal(info.ownBytes, onnx(kb) + onnx(kc));
  assert.deepEqual([info.entries, info.weightFiles], [2, 2]);
  // Over a bound that fits one entry, the least recently used goes; a protected entry stays whatever its age.
  assert.deepEqual(await sweepSessionCache(cache, { maxBytes: onnx(kc) }, new Set(), later), {
    entries: 1,
    weightFiles: 1,
  });
  assert.deepEqual(ls(join(cache, 'entries')), [kc]);
  assert.deepEqual(await sweepSessionCache(cache, { maxBytes: 0 }, new Set([kc]), later), {
    entries: 0,
    weightFiles: 0,
  });
  // A session whose files were deleted keeps running (ORT read model.onnx and mapped the weights).
  for (const s of sessions) assert.deepEqual(await run(s), [4, 6]);
  await rt.shutdown();
});

test("a link to a deleted model counts as the cache's own bytes; clear empties the folder, live sessions still run", async () => {
  const dir = tempDir(),
    cache = join(dir, 'cache');
  const src = await weightFile(dir, 'w.bin', 4096);
  const s = await compile(graph(src, 0, 4096), { cacheDir: cache });
  const before = await sessionCacheInfo(cache);
  await rm(src);
  const after = await sessionCacheInfo(cache);
  assert.equal(after.ownBytes - before.ownBytes, 4096 + 16);
  assert.equal(after.bytes, before.bytes);
  const cleared = await clearSessionCache(cache);
  assert.equal(cleared.entries, 1);
  assert.deepEqual(await sessionCacheInfo(cache), {
    dir: cache,
    entries: 0,
    weightFiles: 0,
    bytes: 0,
    ownBytes: 0,
    oldestUseMs: null,
    newestUseMs: null,
  });
  assert.deepEqual(await run(s), [4, 6]);
  await s.dispose();
});
