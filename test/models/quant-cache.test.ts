// The quantized-weight cache (models/quant-cache.ts) on the GPT-2 (Conv1D) and Llama fixture models: a miss writes
// the file and a hit reads the same codes and scales as quantizing in memory (compared against quantizeBase without
// the cache); the graph references the file instead of carrying the codes, and its logits equal those of the
// in-memory weights; a changed model file is a miss that replaces the old entry; an unusable file (truncated,
// garbage, another model's) is rebuilt with a note; concurrent writers leave one complete file and no temporaries.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  cpSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  truncateSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Graph, type Tensor } from '../../src/graph/index.ts';
import { encodeSafetensors } from '../../src/io/index.ts';
import {
  buildCausalLM,
  cachedQuantizeBase,
  loadModel,
  quantizeModel,
  type LoadedModel,
} from '../../src/models/index.ts';
import { type QuantizedWeight, kernelsFor } from '../../src/nn/index.ts';
import { cpuFeatures } from '../../src/io/host.ts';
import { compile } from '../../src/runtime/index.ts';
import { FIXTURES } from './helpers.ts';

/** A private copy of a fixture model folder (so its file can be changed) and an empty cache folder. */
function fresh(name: string): { dir: string; cache: string } {
  const root = mkdtempSync(join(tmpdir(), 'lk-qcache-'));
  const dir = join(root, name);
  cpSync(join(FIXTURES, name), dir, { recursive: true });
  return { dir, cache: join(root, 'quantized') };
}

const cacheFiles = (cache: string) => (existsSync(cache) ? readdirSync(cache) : []);

/** The arrays of a quantized weight, for exact comparison. */
function arrays(q: QuantizedWeight): ArrayLike<number>[] {
  return q.kind === 'int8' ? [q.q, q.scale] : [q.blocks, q.scales, q.back.q, q.back.scale];
}

function assertSameWeights(a: ReadonlyMap<string, QuantizedWeight>, b: ReadonlyMap<string, QuantizedWeight>): void {
  assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort());
  for (const [name, qa] of a) {
    const qb = b.get(name)!;
    assert.equal(qa.kind, qb.kind);
    assert.deepEqual([qa.out, qa.in], [qb.out, qb.in], name);
    arrays(qa).forEach((x, i) => assert.deepEqual(Array.from(x), Array.from(arrays(qb)[i]), `${name} part ${i}`));
  }
}

/** Logits of the quantized model on a fixed batch, and the graph's initializers that read a file. */
async function logits(model: LoadedModel): Promise<{ logits: Float32Array; files: string[]; converted: string[] }> {
  const g = new Graph('qcache-forward');
  const ids = g.input('input_ids', 'i64', [1, 5]);
  g.output('logits', buildCausalLM(model.context(g), { inputIds: ids }).logits);
  const files = g
    .liveInitializers()
    .flatMap((i) => (i.data.kind === 'file' ? [i.data.path] : []))
    .filter((p) => !p.endsWith('model.safetensors'));
  // a weight's codes inline, or transposed or cast in the graph (ORT would fold each into a new initializer)
  const codes = (t: Tensor) => t.kind === 'initializer' && t.rank >= 2 && ['u8', 'i8'].includes(t.dtype);
  const converted = [
    ...g
      .liveInitializers()
      .filter((i) => codes(i.tensor) && i.data.kind !== 'file')
      .map((i) => `inline ${i.tensor.name}`),
    ...g
      .liveNodes()
      .filter((n) => (n.op === 'Transpose' || n.op === 'Cast') && codes(n.inputs[0]!))
      .map((n) => `${n.op} ${n.inputs[0]!.name}`),
  ];
  const s = await compile(g, { worker: false, retain: false });
  const out = await s.run({ input_ids: BigInt64Array.from([1n, 5n, 9n, 2n, 7n]) });
  await s.dispose();
  return { logits: out.logits.data as Float32Array, files, converted };
}

/** s8 codes only where the CPU's kernels take them without saturating (kernelsFor). */
const codes = kernelsFor(cpuFeatures()).codes;
for (const [name, mode, kernels] of [
  ['gpt2', 'int8', { inputs: 'int8', codes: 'u8' }],
  ['gpt2', 'int8', { inputs: 'int8-rows', codes }],
  ['llama', 'q4', { inputs: 'int8', codes: 'u8' }],
  ['llama', 'q4', { inputs: 'int8', codes }],
] as const) {
  test(`${name} ${mode} ${JSON.stringify(kernels)}: a miss writes the cache, a hit reads the same weights, the graph maps the file`, async () => {
    const { dir, cache } = fresh(name);
    const model = await loadModel(dir);
    const plain = await cachedQuantizeBase(model, mode, { cacheDir: false, ...kernels });
    assert.equal(plain.cache, undefined);
    assert.deepEqual(cacheFiles(cache), [], 'cacheDir false writes nothing');

    const notes: string[] = [];
    const miss = await cachedQuantizeBase(model, mode, { cacheDir: cache, onNote: (m) => notes.push(m), ...kernels });
    assert.equal(miss.cache?.hit, false);
    assert.equal(cacheFiles(cache).length, 1);
    const hit = await cachedQuantizeBase(model, mode, { cacheDir: cache, onNote: (m) => notes.push(m), ...kernels });
    assert.deepEqual(hit.cache, { path: miss.cache!.path, hit: true });
    assert.deepEqual(notes, []);
    for (const q of hit.weights.values()) assert.ok(q.stored, 'a cached weight points into the file');
    assertSameWeights(hit.weights, plain.weights);
    assert.equal(hit.quantizedBytes, plain.quantizedBytes);

    const cached = await logits(await quantizeModel(model, mode, { cacheDir: cache, ...kernels }));
    const inMemory = await logits(await quantizeModel(model, mode, { cacheDir: false, ...kernels }));
    assert.ok(cached.files.length > 0 && cached.files.every((p) => p === miss.cache!.path), cached.files.join());
    assert.deepEqual(cached.converted, [], 'the file holds the codes in the layout and storage the kernels read');
    assert.ok(inMemory.converted.every((c) => c.startsWith('inline ')));
    assert.deepEqual(inMemory.files, [], 'without the cache the codes are inline');
    assert.deepEqual(Array.from(cached.logits), Array.from(inMemory.logits));
    await model.close();
  });
}

test('a changed model file is a miss: new weights, and the old entry of that folder is deleted', async () => {
  const blocks = { inputs: 'int8', codes: 'u8' } as const; // 8-bit blocks on every CPU
  const { dir, cache } = fresh('gpt2');
  const m0 = await loadModel(dir);
  const first = await cachedQuantizeBase(m0, 'int8', { cacheDir: cache, ...blocks });
  await m0.close();
  // read now: the rebuild deletes this file, and a cached weight reads its arrays from it lazily
  const before = first.weights.get([...first.weights.keys()][0])!;
  // int8 mode: 8-bit blocks whose bytes are code + 128
  const [codes0, scale0] =
    before.kind === 'q8' ? [Array.from(before.blocks, (x) => x - 128), [...before.scales]] : [[]];
  // The file rewritten in place with one weight negated: same size and inode, a new mtime (what the key sees); the
  // codes below show the new values were quantized, not the old file's.
  const path = join(dir, 'model.safetensors');
  const m = await loadModel(dir);
  const name = [...first.weights.keys()][0];
  const stored = await m.read(name);
  await m.close();
  const bytes = readFileSync(path);
  const f32 = new Float32Array(bytes.buffer, bytes.byteOffset, Math.floor(bytes.length / 4));
  const at = indexOf(f32, stored);
  assert.ok(at >= 0, 'the weight is found in the file');
  for (let i = 0; i < stored.length; i++) f32[at + i] = -f32[at + i];
  writeFileSync(path, bytes);
  utimesSync(path, new Date(), new Date(Date.now() + 5000));

  const model = await loadModel(dir);
  const second = await cachedQuantizeBase(model, 'int8', { cacheDir: cache, ...blocks });
  assert.equal(second.cache?.hit, false);
  assert.notEqual(second.cache?.path, first.cache?.path);
  assert.deepEqual(cacheFiles(cache), [second.cache!.path.split('/').at(-1)]);
  assertSameWeights(second.weights, (await cachedQuantizeBase(model, 'int8', { cacheDir: false, ...blocks })).weights);
  const b = second.weights.get(name)!;
  assert.ok(b.kind === 'q8' && codes0.some((x) => x !== 0));
  // negating W negates the codes (symmetric rounding) and keeps the scales
  assert.deepEqual(
    Array.from(b.blocks, (x) => x - 128),
    codes0.map((x) => (x === 0 ? 0 : -x)),
  );
  assert.deepEqual(Array.from(b.scales), scale0);
  await model.close();
});

/** Where `needle` starts in `hay` (4-byte aligned), or −1. */
function indexOf(hay: Float32Array, needle: Float32Array): number {
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < 8; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

test('an unusable cache file (truncated, torn, garbage, another model) is rebuilt with a note', async () => {
  const { dir, cache } = fresh('llama');
  const model = await loadModel(dir);
  const good = await cachedQuantizeBase(model, 'int8', { cacheDir: cache });
  const path = good.cache!.path;
  const expected = readFileSync(path);
  const spoil: [string, () => void][] = [
    ['truncated', () => truncateSync(path, expected.length - 100)],
    // what a crash can leave of a file written without fsync (writeQuantCache: durable false): nothing, a cut
    // header, or a whole header over part of the data
    ['torn: empty', () => truncateSync(path, 0)],
    ['torn: cut in the header', () => truncateSync(path, 20)],
    ['torn: cut in the data', () => truncateSync(path, Math.floor(expected.length / 2))],
    ['garbage', () => writeFileSync(path, 'not a safetensors file at all')],
    ['another key', () => writeFileSync(path, encodeSafetensors({}, { format: 'lorakit-quantized-base', key: 'x' }))],
  ];
  for (const [what, act] of spoil) {
    act();
    const notes: string[] = [];
    const again = await cachedQuantizeBase(model, 'int8', { cacheDir: cache, onNote: (m) => notes.push(m) });
    assert.equal(notes.length, 1, what);
    assert.match(notes[0], /quantized-weight cache .* is unusable .*; rebuilding it/, what);
    assert.deepEqual(again.cache, { path, hit: false }, what);
    assert.ok(readFileSync(path).equals(expected), `${what}: rebuilt byte for byte`);
    assertSameWeights(again.weights, good.weights);
  }
  await model.close();
});

test('concurrent builds of one entry leave one complete file and no temporary files', async () => {
  const { dir, cache } = fresh('gpt2');
  const model = await loadModel(dir);
  const runs = await Promise.all([1, 2, 3].map(() => cachedQuantizeBase(model, 'int8', { cacheDir: cache })));
  assert.deepEqual(cacheFiles(cache), [runs[0].cache!.path.split('/').at(-1)], 'only the entry, no .tmp file');
  const hit = await cachedQuantizeBase(model, 'int8', { cacheDir: cache });
  assert.equal(hit.cache?.hit, true);
  for (const r of runs) assertSameWeights(r.weights, hit.weights);
  await model.close();
});
