// GGUF reading: metadata of every value type, tensor infos, alignment, the dequantization of every ggml type against
// the `gguf` Python package (bit for bit), v2 files, strict validation naming file and field, and the real SmolLM2
// file against gguf-py's dequantized values (skipped when ../shared is absent).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { GgufFile, parseGguf } from '../../src/io/gguf.ts';
import { GGML_TYPES, dequantize, ggmlTypeByName, quantizeQ8_0 } from '../../src/io/gguf-quants.ts';
import { SafetensorsFile } from '../../src/io/safetensors.ts';
import { LorakitError } from '../../src/errors.ts';
import type { ErrorCode } from '../../src/errors.ts';
import { rng } from '../helpers.ts';
import { SMOLLM2_GGUF, skipNote } from './gguf-shared.ts';

const FIX = fileURLToPath(new URL('../fixtures/gguf/', import.meta.url));
const TYPES = join(FIX, 'types.gguf');

function throwsLk(fn: () => unknown, code: ErrorCode, ...parts: string[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof LorakitError, `expected a LorakitError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    for (const p of parts) assert.ok(e.message.includes(p), `message ${JSON.stringify(e.message)} lacks ${p}`);
    return true;
  });
}

test('gguf: metadata of every value type, alignment and data offset as gguf-py reads them', async () => {
  const want = JSON.parse(await readFile(join(FIX, 'types.expected.json'), 'utf8'));
  const f = await GgufFile.open(TYPES);
  try {
    const h = f.header;
    assert.equal(h.version, 3);
    assert.equal(h.alignment, want.alignment);
    assert.equal(h.dataOffset, want.data_offset);
    const types: Record<string, string> = {
      'test.u8': 'u8',
      'test.i8': 'i8',
      'test.u16': 'u16',
      'test.i16': 'i16',
      'test.u32': 'u32',
      'test.i32': 'i32',
      'test.f32': 'f32',
      'test.bool': 'bool',
      'test.string': 'string',
      'test.u64': 'u64',
      'test.i64': 'i64',
      'test.f64': 'f64',
      'test.array_i32': 'array',
    };
    for (const [k, t] of Object.entries(types)) assert.equal(h.metadata.get(k)?.type, t, k);
    for (const [k, v] of Object.entries(want)) {
      if (!k.startsWith('test.')) continue;
      const got = f.get(k);
      assert.deepEqual(typeof got === 'bigint' ? String(got) : got, v, k);
    }
    assert.equal(h.metadata.get('test.array_str')?.itemType, 'string');
    assert.equal(typeof f.get('test.u64'), 'bigint'); // 2^60 + 3 is not a safe integer
    assert.equal(f.get('general.architecture'), 'llama');
    for (const [name, t] of Object.entries(want.tensors as Record<string, { type: string; dims: number[] }>)) {
      const info = f.info(name);
      assert.equal(info.type.name, t.type, name);
      assert.deepEqual(info.dims, t.dims, name);
      assert.deepEqual(info.shape, [...t.dims].reverse(), name);
      assert.equal(info.offset % h.alignment, 0);
    }
  } finally {
    await f.close();
  }
});

test('gguf: every ggml type dequantizes bit for bit as gguf-py does (K types from random blocks)', async () => {
  const f = await GgufFile.open(TYPES);
  const ref = await SafetensorsFile.open(join(FIX, 'types.expected.safetensors'));
  try {
    const seen = new Set<string>();
    for (const name of f.names()) {
      const got = await f.read(name);
      const want = await ref.readAs(name, 'f32');
      assert.deepEqual(f.info(name).shape, ref.info(name).shape, name);
      assert.equal(got.length, want.length, name);
      for (let i = 0; i < got.length; i++)
        if (!Object.is(got[i], want[i])) assert.fail(`${name}[${i}]: ${got[i]} != gguf-py's ${want[i]}`);
      seen.add(f.info(name).type.name);
    }
    const all = ['F32', 'F16', 'BF16', 'Q8_0', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q2_K', 'Q3_K', 'Q4_K', 'Q5_K'];
    assert.deepEqual([...seen].sort(), [...all, 'Q6_K', 'Q8_K'].sort());
  } finally {
    await Promise.all([f.close(), ref.close()]);
  }
});

test('gguf: a v2 file reads the same; v1, a wrong magic and truncation are refused by field', async () => {
  const bytes = new Uint8Array(await readFile(TYPES));
  const v2 = bytes.slice();
  v2[4] = 2;
  const h2 = parseGguf(v2, 'v2.gguf');
  assert.equal(h2.version, 2);
  assert.equal(h2.tensors.size, parseGguf(bytes).tensors.size);
  const v1 = bytes.slice();
  v1[4] = 1;
  throwsLk(() => parseGguf(v1, 'v1.gguf'), 'LK_UNSUPPORTED', 'v1.gguf', 'version', 'found 1');
  const bad = bytes.slice();
  bad[0] = 0x47 + 1;
  throwsLk(() => parseGguf(bad, 'x.gguf'), 'LK_FILE_INVALID', 'x.gguf', 'magic', 'GGUF');
  throwsLk(() => parseGguf(bytes.subarray(0, 100), 'cut.gguf'), 'LK_FILE_INVALID', 'cut.gguf', 'file ends');
  throwsLk(() => parseGguf(bytes.subarray(0, bytes.length - 200), 'cut.gguf'), 'LK_FILE_INVALID', 'truncated');
  // general.alignment must be a power of two: patch the u32 value 64 into 48 where the key's value sits
  const key = new TextEncoder().encode('general.alignment');
  const at = findBytes(bytes, key);
  assert.ok(at > 0);
  const patched = bytes.slice();
  patched[at + key.length + 4] = 48; // after the u32 value type comes the value
  throwsLk(() => parseGguf(patched, 'a.gguf'), 'LK_FILE_INVALID', 'general.alignment', 'power of two', '48');
});

test('gguf: open() on a missing file and on a non-GGUF file names the path', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'lorakit-gguf-'));
  try {
    await assert.rejects(GgufFile.open(join(dir, 'none.gguf')), (e: unknown) => {
      return e instanceof LorakitError && e.code === 'LK_FILE_NOT_FOUND' && e.message.includes('none.gguf');
    });
    await writeFile(join(dir, 'x.gguf'), '{"not": "gguf"}');
    await assert.rejects(GgufFile.open(join(dir, 'x.gguf')), (e: unknown) => {
      return e instanceof LorakitError && e.code === 'LK_FILE_INVALID' && e.message.includes('magic');
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('gguf: dequantize refuses bytes that are not whole blocks and types it cannot read', () => {
  throwsLk(() => dequantize(ggmlTypeByName('Q4_0'), new Uint8Array(17), 32), 'LK_FILE_INVALID', '18', '17');
  throwsLk(() => dequantize(GGML_TYPES.get(9)!, new Uint8Array(36), 32), 'LK_UNSUPPORTED', 'Q8_1');
});

test('gguf: quantizeQ8_0 round trip stays within half a step of each block', () => {
  const r = rng(3);
  const x = new Float32Array(256).map(() => r() * 4 - 2);
  const y = dequantize(ggmlTypeByName('Q8_0'), quantizeQ8_0(x), x.length);
  for (let b = 0; b < 8; b++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[b * 32 + j]!));
    for (let j = 0; j < 32; j++) {
      const i = b * 32 + j;
      // step d = amax/127 (rounded to f16: relative 2^-11), error ≤ d/2 plus the f16 rounding of d times |q| ≤ 127
      assert.ok(Math.abs(y[i]! - x[i]!) <= (amax / 127) * (0.5 + 127 * 2 ** -11) + 1e-7, `${i}`);
    }
  }
});

test('gguf: the real SmolLM2 Q4_1 file dequantizes as gguf-py does', { skip: skipNote() }, async () => {
  const want = JSON.parse(await readFile(join(FIX, 'smollm2.json'), 'utf8'));
  const f = await GgufFile.open(SMOLLM2_GGUF);
  try {
    assert.equal(f.names().length, 272);
    for (const [name, t] of Object.entries(
      want.tensors as Record<string, { type: string; first64: number[]; sum: number }>,
    )) {
      assert.equal(f.info(name).type.name, t.type);
      const v = await f.read(name);
      assert.deepEqual([...v.subarray(0, 64)], t.first64, name);
      let s = 0;
      for (const x of v) s += x;
      assert.ok(Math.abs(s - t.sum) <= 1e-9 * Math.max(1, Math.abs(t.sum)), `${name}: sum ${s} != ${t.sum}`);
    }
  } finally {
    await f.close();
  }
});

function findBytes(hay: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}
