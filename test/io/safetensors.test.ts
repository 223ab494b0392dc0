// safetensors: round trips of every dtype, the reference's layout, strict header validation, the Python fixture.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, open, readFile, rm, truncate, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DTYPE_BYTES,
  SafetensorsBuffer,
  SafetensorsFile,
  encodeSafetensors,
  parseHeader,
  writeSafetensors,
} from '../../src/io/safetensors.ts';
import type { SafetensorsDType, TensorToWrite } from '../../src/io/safetensors.ts';
import { LorakitError } from '../../src/errors.ts';
import type { ErrorCode } from '../../src/errors.ts';
import { assertAllclose, rng } from '../helpers.ts';

const FIXTURE = new URL('../fixtures/safetensors/', import.meta.url);

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'lorakit-st-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Asserts that fn throws a LorakitError with `code` whose message contains every string in `parts`. */
function throwsLk(fn: () => unknown, code: ErrorCode, ...parts: string[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof LorakitError, `expected a LorakitError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    for (const p of parts)
      assert.ok(e.message.includes(p), `message ${JSON.stringify(e.message)} lacks ${JSON.stringify(p)}`);
    return true;
  });
}

/** A file from a header (object or raw JSON text, not padded) and `dataLen` data bytes (0, 1, 2, …). */
function rawFile(header: unknown, dataLen: number): Uint8Array {
  const json = new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + dataLen);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  for (let i = 0; i < dataLen; i++) out[8 + json.length + i] = i & 0xff;
  return out;
}

// One tensor of each dtype, with values that exercise each type's range.
function everyDtype(): Record<string, TensorToWrite> {
  const r = rng(3);
  return {
    f64: { dtype: 'F64', shape: [2, 3], data: Float64Array.from({ length: 6 }, () => r() * 1e300 - 5e299) },
    f32: { dtype: 'F32', shape: [3], data: new Float32Array([1.5, -0, Infinity]) },
    f16: { dtype: 'F16', shape: [2, 2], data: new Uint16Array([0x3c00, 0xc000, 0x7bff, 0x0001]) },
    bf16: { dtype: 'BF16', shape: [3], data: new Uint16Array([0x3f80, 0x7f7f, 0x8001]) },
    i64: { dtype: 'I64', shape: [2], data: new BigInt64Array([-(2n ** 63n), 2n ** 53n + 1n]) },
    u64: { dtype: 'U64', shape: [1], data: new BigUint64Array([2n ** 64n - 1n]) },
    i32: { dtype: 'I32', shape: [2], data: new Int32Array([-(2 ** 31), 2 ** 31 - 1]) },
    u32: { dtype: 'U32', shape: [1], data: new Uint32Array([2 ** 32 - 1]) },
    i16: { dtype: 'I16', shape: [3], data: new Int16Array([-32768, 0, 32767]) },
    u16: { dtype: 'U16', shape: [1, 1], data: new Uint16Array([65535]) },
    i8: { dtype: 'I8', shape: [3], data: new Int8Array([-128, 1, 127]) },
    u8: { dtype: 'U8', shape: [5], data: new Uint8Array([0, 1, 2, 254, 255]) },
    bool: { dtype: 'BOOL', shape: [4], data: new Uint8Array([1, 0, 0, 1]) },
    scalar: { dtype: 'F32', shape: [], data: new Float32Array([42.5]) },
    scalar_i8: { dtype: 'I8', shape: [], data: new Int8Array([-3]) },
    empty: { dtype: 'F64', shape: [0, 5], data: new Float64Array(0) },
    empty_u8: { dtype: 'U8', shape: [3, 0], data: new Uint8Array(0) },
  };
}

const NATIVE_TYPE = {
  F64: 'f64',
  F32: 'f32',
  F16: 'f16',
  BF16: 'bf16',
  I64: 'i64',
  U64: 'u64',
  I32: 'i32',
  U32: 'u32',
  I16: 'i16',
  U16: 'u16',
  I8: 'i8',
  U8: 'u8',
  BOOL: 'bool',
} as const;

test('every dtype, 0-rank and empty tensors round-trip in memory and through a file', async () => {
  const tensors = everyDtype();
  const bytes = encodeSafetensors(tensors, { format: 'pt', note: 'ünïcode ✓' });
  const buf = SafetensorsBuffer.from(bytes, 'mem.safetensors');
  assert.deepEqual(buf.metadata, { format: 'pt', note: 'ünïcode ✓' });
  assert.deepEqual(buf.names().sort(), Object.keys(tensors).sort());
  await withDir(async (dir) => {
    const path = join(dir, 'all.safetensors');
    await writeSafetensors(path, tensors, { format: 'pt', note: 'ünïcode ✓' });
    assert.deepEqual(
      new Uint8Array(await readFile(path)),
      bytes,
      'writeSafetensors writes what encodeSafetensors returns',
    );
    const file = await SafetensorsFile.open(path);
    try {
      for (const [name, t] of Object.entries(tensors)) {
        for (const info of [buf.info(name), file.info(name)]) {
          assert.equal(info.dtype, t.dtype);
          assert.deepEqual(info.shape, t.shape);
          assert.equal(info.byteLength, t.data.byteLength);
        }
        const want = [...(t.data as Iterable<number>)];
        const type = NATIVE_TYPE[t.dtype];
        assert.deepEqual([...(buf.readAs(name, type) as Iterable<number>)], want, `${name} (memory)`);
        assert.deepEqual([...((await file.readAs(name, type)) as Iterable<number>)], want, `${name} (file)`);
        assert.deepEqual(await file.read(name), buf.read(name));
      }
    } finally {
      await file.close();
    }
  });
});

test('the encoded layout pads the header with spaces and aligns every tensor to its element size', () => {
  const bytes = encodeSafetensors(everyDtype());
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assert.equal((8 + n) % 8, 0);
  const text = new TextDecoder().decode(bytes.subarray(8, 8 + n));
  assert.match(text, /^\{.*\} *$/);
  const { tensors, dataStart } = parseHeader(bytes, bytes.length, 'mem');
  assert.equal(dataStart, 8 + n);
  let prevSize = 8;
  const order = [...tensors.values()].sort((a, b) => a.dataOffset - b.dataOffset || a.byteLength - b.byteLength);
  for (const t of order) {
    const size = DTYPE_BYTES[t.dtype];
    assert.equal(t.dataOffset % size, 0, `${t.name} at ${t.dataOffset} is not ${size}-aligned`);
    if (t.byteLength > 0) assert.ok(size <= prevSize, `${t.name}: element sizes must not increase along the file`);
    if (t.byteLength > 0) prevSize = size;
  }
});

test('metadata is optional, and absent metadata reads as {}', () => {
  const t = { x: { dtype: 'U8' as const, shape: [1], data: new Uint8Array([7]) } };
  const plain = encodeSafetensors(t);
  assert.ok(!new TextDecoder().decode(plain).includes('__metadata__'));
  assert.deepEqual(SafetensorsBuffer.from(plain).metadata, {});
  assert.deepEqual(SafetensorsBuffer.from(encodeSafetensors(t, {})).metadata, {});
});

test('a file with no tensors is valid', () => {
  const buf = SafetensorsBuffer.from(encodeSafetensors([]));
  assert.deepEqual(buf.names(), []);
  assert.ok(SafetensorsBuffer.from(rawFile('{}', 0)).names().length === 0);
});

test('names that look like object internals survive', () => {
  const bytes = encodeSafetensors(
    [
      { name: '__proto__', dtype: 'U8', shape: [1], data: new Uint8Array([5]) },
      { name: 'constructor', dtype: 'U8', shape: [1], data: new Uint8Array([6]) },
    ],
    { ['__proto__']: 'meta', toString: 'x' },
  );
  const buf = SafetensorsBuffer.from(bytes);
  assert.deepEqual(buf.names().sort(), ['__proto__', 'constructor']);
  assert.deepEqual([...buf.read('__proto__')], [5]);
  assert.equal(Object.getOwnPropertyDescriptor(buf.metadata, '__proto__')?.value, 'meta');
});

test('readAs converts floats to f32/f64 and widens integers exactly', () => {
  const bytes = encodeSafetensors({
    h: { dtype: 'F16', shape: [3], data: new Uint16Array([0x3c00, 0xc000, 0x7c00]) },
    b: { dtype: 'BF16', shape: [2], data: new Uint16Array([0x3f80, 0x3dcd]) },
    d: { dtype: 'F64', shape: [2], data: new Float64Array([0.1, 1e300]) },
    f: { dtype: 'F32', shape: [2], data: new Float32Array([1.5, 65520]) },
    i: { dtype: 'I32', shape: [2], data: new Int32Array([-5, 7]) },
    u: { dtype: 'U8', shape: [2], data: new Uint8Array([0, 255]) },
    m: { dtype: 'BOOL', shape: [2], data: new Uint8Array([1, 0]) },
  });
  const buf = SafetensorsBuffer.from(bytes);
  assert.deepEqual([...buf.readAs('h', 'f32')], [1, -2, Infinity]);
  assert.deepEqual([...buf.readAs('b', 'f32')], [1, 0.10009765625]);
  assert.deepEqual([...buf.readAs('d', 'f32')], [Math.fround(0.1), Infinity]);
  assert.deepEqual([...buf.readAs('h', 'f64')], [1, -2, Infinity]);
  assert.deepEqual([...buf.readAs('f', 'f16')], [0x3e00, 0x7c00]);
  assert.deepEqual([...buf.readAs('f', 'bf16')], [0x3fc0, 0x477f + 1]);
  assert.ok(buf.readAs('i', 'i64') instanceof BigInt64Array);
  assert.deepEqual([...buf.readAs('i', 'i64')], [-5n, 7n]);
  assert.deepEqual([...buf.readAs('i', 'f64')], [-5, 7]);
  assert.deepEqual([...buf.readAs('u', 'i32')], [0, 255]);
  assert.deepEqual([...buf.readAs('u', 'f32')], [0, 255]);
  assert.deepEqual([...buf.readAs('m', 'bool')], [1, 0]);
  assertAllclose(buf.readAs('d', 'f64'), [0.1, 1e300], { rtol: 0, atol: 0 });
});

test('readAs refuses lossy or meaningless conversions and names what would work', async () => {
  const bytes = encodeSafetensors({
    f: { dtype: 'F32', shape: [1], data: new Float32Array([1]) },
    l: { dtype: 'I64', shape: [1], data: new BigInt64Array([1n]) },
  });
  const buf = SafetensorsBuffer.from(bytes, 'w.safetensors');
  throwsLk(() => buf.readAs('f', 'i32'), 'LK_DTYPE_MISMATCH', 'w.safetensors', "'f'", 'F32', "'i32'", 'f32');
  throwsLk(() => buf.readAs('l', 'i32'), 'LK_DTYPE_MISMATCH', "'l'", 'I64', 'i64');
  throwsLk(() => buf.readAs('l', 'f32'), 'LK_DTYPE_MISMATCH');
  throwsLk(() => buf.readAs('f', 'float32' as 'f32'), 'LK_INVALID_ARGUMENT', 'float32');
});

test('an unknown tensor name lists similar names', () => {
  const bytes = encodeSafetensors({
    'model.layers.0.q_proj.weight': { dtype: 'U8', shape: [1], data: new Uint8Array(1) },
    'model.layers.0.k_proj.weight': { dtype: 'U8', shape: [1], data: new Uint8Array(1) },
    'lm_head.weight': { dtype: 'U8', shape: [1], data: new Uint8Array(1) },
  });
  const buf = SafetensorsBuffer.from(bytes, 'm.safetensors');
  throwsLk(
    () => buf.info('model.layers.0.v_proj.weight'),
    'LK_INVALID_ARGUMENT',
    "'model.layers.0.v_proj.weight'",
    'm.safetensors',
    'model.layers.0.q_proj.weight',
    '3 tensors',
  );
  throwsLk(() => SafetensorsBuffer.from(encodeSafetensors([])).read('x'), 'LK_INVALID_ARGUMENT', 'no tensors');
});

test('readAs copies a tensor whose bytes are not aligned in the source buffer', () => {
  const bytes = encodeSafetensors({ x: { dtype: 'F32', shape: [2], data: new Float32Array([1.25, -3]) } });
  const shifted = new Uint8Array(bytes.length + 1);
  shifted.set(bytes, 1);
  const buf = SafetensorsBuffer.from(shifted.subarray(1));
  assert.deepEqual([...buf.readAs('x', 'f32')], [1.25, -3]);
});

// Header validation: each malformed header gives LK_FILE_INVALID (or LK_UNSUPPORTED) naming the file, tensor and
// problem.
const F = 'bad.safetensors';
const ok = { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } };
const invalidCases: Array<[string, Uint8Array, ErrorCode, string[]]> = [
  ['a file shorter than 8 bytes', new Uint8Array(5), 'LK_FILE_INVALID', ['at least 8 bytes', '5 bytes']],
  [
    'a header length past the end of the file',
    (() => {
      const b = rawFile(ok, 8);
      b[0] = 200;
      return b;
    })(),
    'LK_FILE_INVALID',
    ['header length 200', 'past the end'],
  ],
  [
    'a header length over 100 MB',
    (() => {
      const b = rawFile(ok, 8);
      b[6] = 1;
      return b;
    })(),
    'LK_FILE_INVALID',
    ['at most 100000000'],
  ],
  [
    'invalid UTF-8',
    (() => {
      const b = rawFile('{"\u00e9":{}}', 0);
      b[10] = 0xff;
      return b;
    })(),
    'LK_FILE_INVALID',
    ['UTF-8'],
  ],
  ['invalid JSON', rawFile('{"a": {', 0), 'LK_FILE_INVALID', ['not valid JSON']],
  ['a JSON array', rawFile('[1, 2]', 0), 'LK_FILE_INVALID', ['JSON object', '[1,2]']],
  ['a byte-order mark', rawFile('\ufeff{}', 0), 'LK_FILE_INVALID', ['not valid JSON']],
  [
    'an entry that is not an object',
    rawFile({ a: 5 }, 0),
    'LK_FILE_INVALID',
    ["tensor 'a'", 'expected an object', 'found 5'],
  ],
  [
    'a missing dtype',
    rawFile({ a: { shape: [2], data_offsets: [0, 8] } }, 8),
    'LK_FILE_INVALID',
    ["tensor 'a'", 'dtype', 'found nothing'],
  ],
  [
    'a numeric dtype',
    rawFile({ a: { dtype: 4, shape: [2], data_offsets: [0, 8] } }, 8),
    'LK_FILE_INVALID',
    ["tensor 'a'", 'dtype', 'found 4'],
  ],
  [
    'a missing shape',
    rawFile({ a: { dtype: 'F32', data_offsets: [0, 8] } }, 8),
    'LK_FILE_INVALID',
    ["tensor 'a'", 'shape'],
  ],
  [
    'a negative dim',
    rawFile({ a: { dtype: 'F32', shape: [-2], data_offsets: [0, 8] } }, 8),
    'LK_FILE_INVALID',
    ["tensor 'a'", 'non-negative integers', '[-2]'],
  ],
  [
    'a fractional dim',
    rawFile({ a: { dtype: 'F32', shape: [2.5], data_offsets: [0, 10] } }, 10),
    'LK_FILE_INVALID',
    ["tensor 'a'", 'shape'],
  ],
  [
    'a string dim',
    rawFile({ a: { dtype: 'F32', shape: ['2'], data_offsets: [0, 8] } }, 8),
    'LK_FILE_INVALID',
    ["tensor 'a'", 'shape'],
  ],
  [
    'a huge dim',
    rawFile({ a: { dtype: 'F32', shape: [1e300], data_offsets: [0, 8] } }, 8),
    'LK_FILE_INVALID',
    ["tensor 'a'", 'shape'],
  ],
  [
    'missing data_offsets',
    rawFile({ a: { dtype: 'F32', shape: [2] } }, 8),
    'LK_FILE_INVALID',
    ["tensor 'a'", 'data_offsets'],
  ],
  [
    'three data_offsets',
    rawFile({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8, 8] } }, 8),
    'LK_FILE_INVALID',
    ["tensor 'a'", 'data_offsets'],
  ],
  [
    'a negative offset',
    rawFile({ a: { dtype: 'F32', shape: [2], data_offsets: [-8, 0] } }, 8),
    'LK_FILE_INVALID',
    ["tensor 'a'", 'data_offsets'],
  ],
  [
    'begin after end',
    rawFile({ a: { dtype: 'F32', shape: [0], data_offsets: [8, 0] } }, 8),
    'LK_FILE_INVALID',
    ["tensor 'a'", 'begin <= end', '[8, 0]'],
  ],
  [
    'offsets past the buffer',
    rawFile({ a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, 8),
    'LK_FILE_INVALID',
    ["tensor 'a'", 'past the end of the data buffer (8 bytes)'],
  ],
  [
    'a byte length that does not match dtype×shape',
    rawFile({ a: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, 8),
    'LK_FILE_INVALID',
    ["tensor 'a'", 'F32 of shape [3] needs 12 bytes', '(8 bytes)'],
  ],
  [
    'overlapping tensors',
    rawFile(
      { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'U8', shape: [4], data_offsets: [4, 8] } },
      8,
    ),
    'LK_FILE_INVALID',
    ["tensor 'b'", 'overlap'],
  ],
  [
    'an empty tensor inside another',
    rawFile(
      { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, e: { dtype: 'F32', shape: [0], data_offsets: [4, 4] } },
      8,
    ),
    'LK_FILE_INVALID',
    ["tensor 'e'", 'overlap'],
  ],
  [
    'a hole between tensors',
    rawFile(
      { a: { dtype: 'U8', shape: [2], data_offsets: [0, 2] }, b: { dtype: 'U8', shape: [2], data_offsets: [4, 6] } },
      6,
    ),
    'LK_FILE_INVALID',
    ["tensor 'b'", 'start at 4, expected 2'],
  ],
  [
    'a hole at the start',
    rawFile({ a: { dtype: 'U8', shape: [2], data_offsets: [2, 4] } }, 4),
    'LK_FILE_INVALID',
    ["tensor 'a'", 'start at 2, expected 0'],
  ],
  ['trailing bytes', rawFile(ok, 12), 'LK_FILE_INVALID', ['cover 8 bytes', 'all 12']],
  ['trailing bytes with no tensors', rawFile({}, 3), 'LK_FILE_INVALID', ['cover 0 bytes', 'all 3']],
  [
    '__metadata__ that is not an object',
    rawFile({ __metadata__: 'pt', ...ok }, 8),
    'LK_FILE_INVALID',
    ['__metadata__', '"pt"'],
  ],
  [
    'a non-string metadata value',
    rawFile({ __metadata__: { total_size: 8 }, ...ok }, 8),
    'LK_FILE_INVALID',
    ["__metadata__['total_size']", 'string', 'found 8'],
  ],
  [
    'an F8 dtype',
    rawFile({ a: { dtype: 'F8_E4M3', shape: [8], data_offsets: [0, 8] } }, 8),
    'LK_UNSUPPORTED',
    ["tensor 'a'", 'F8_E4M3', 'supported: F64'],
  ],
  [
    'an unknown dtype',
    rawFile({ a: { dtype: 'Q7', shape: [8], data_offsets: [0, 8] } }, 8),
    'LK_UNSUPPORTED',
    ["tensor 'a'", 'unknown dtype "Q7"'],
  ],
];
for (const [what, bytes, code, parts] of invalidCases) {
  test(`the parser rejects ${what}`, () => throwsLk(() => SafetensorsBuffer.from(bytes, F), code, F, ...parts));
}

test(
  'parseHeader accepts what the reference accepts: whitespace, null metadata, extra fields, empty tensors ' +
    'between others',
  () => {
    assert.deepEqual(SafetensorsBuffer.from(rawFile(' \n{"__metadata__": null} ', 0)).metadata, {});
    const b = rawFile(
      {
        a: { dtype: 'U8', shape: [2], data_offsets: [0, 2], extra: true },
        e: { dtype: 'F64', shape: [0], data_offsets: [2, 2] },
        c: { dtype: 'U8', shape: [1], data_offsets: [2, 3] },
      },
      3,
    );
    const buf = SafetensorsBuffer.from(b);
    assert.deepEqual([...buf.read('c')], [2]);
    assert.equal(buf.read('e').length, 0);
  },
);

test('the encoder checks names, dtypes, shapes and data', () => {
  const u8 = (n: number): Uint8Array => new Uint8Array(n);
  throwsLk(
    () => encodeSafetensors({ x: { dtype: 'F32', shape: [3], data: new Float32Array(2) } }),
    'LK_SHAPE_MISMATCH',
    "'x'",
    'shape [3]',
    '12 bytes',
    '8 bytes',
  );
  throwsLk(
    () => encodeSafetensors({ x: { dtype: 'F32', shape: [2], data: new Float64Array(1) } }),
    'LK_DTYPE_MISMATCH',
    "'x'",
    'Float32Array',
    'Float64Array',
  );
  throwsLk(
    () => encodeSafetensors({ x: { dtype: 'F8_E4M3' as SafetensorsDType, shape: [1], data: u8(1) } }),
    'LK_UNSUPPORTED',
    'F8_E4M3',
  );
  throwsLk(
    () => encodeSafetensors({ x: { dtype: 'U8', shape: [-1], data: u8(0) } }),
    'LK_INVALID_ARGUMENT',
    "'x'",
    'shape',
  );
  throwsLk(
    () => encodeSafetensors({ x: { dtype: 'BOOL', shape: [2], data: new Uint8Array([1, 2]) } }),
    'LK_INVALID_ARGUMENT',
    "'x'",
    '0 or 1',
    'found 2',
  );
  throwsLk(
    () =>
      encodeSafetensors([
        { name: 'x', dtype: 'U8', shape: [1], data: u8(1) },
        { name: 'x', dtype: 'U8', shape: [1], data: u8(1) },
      ]),
    'LK_INVALID_ARGUMENT',
    "'x'",
    'twice',
  );
  throwsLk(
    () => encodeSafetensors({ __metadata__: { dtype: 'U8', shape: [1], data: u8(1) } }),
    'LK_INVALID_ARGUMENT',
    '__metadata__',
  );
  throwsLk(() => encodeSafetensors({}, { n: 3 as unknown as string }), 'LK_INVALID_ARGUMENT', "metadata['n']");
  // Raw bytes are accepted for any dtype.
  const raw = SafetensorsBuffer.from(
    encodeSafetensors({ x: { dtype: 'BF16', shape: [1], data: new Uint8Array([0x80, 0x3f]) } }),
  );
  assert.deepEqual([...raw.readAs('x', 'f32')], [1]);
});

test('a failed writeSafetensors leaves the previous file in place', async () => {
  await withDir(async (dir) => {
    const path = join(dir, 'a.safetensors');
    await writeSafetensors(path, { x: { dtype: 'U8', shape: [1], data: new Uint8Array([1]) } });
    const before = await readFile(path);
    await assert.rejects(
      writeSafetensors(path, { x: { dtype: 'F32', shape: [9], data: new Float32Array(1) } }),
      LorakitError,
    );
    assert.deepEqual(await readFile(path), before);
  });
});

test('SafetensorsFile.open reports a missing file, a folder, and a file truncated after opening', async () => {
  await withDir(async (dir) => {
    const missing = join(dir, 'nope.safetensors');
    await assert.rejects(
      SafetensorsFile.open(missing),
      (e: unknown) => e instanceof LorakitError && e.code === 'LK_FILE_NOT_FOUND' && e.message.includes(missing),
    );
    await mkdir(join(dir, 'sub'));
    await assert.rejects(
      SafetensorsFile.open(join(dir, 'sub')),
      (e: unknown) => e instanceof LorakitError && e.code === 'LK_INVALID_ARGUMENT',
    );
    const path = join(dir, 'a.safetensors');
    await writeFile(path, encodeSafetensors({ x: { dtype: 'F32', shape: [1000], data: new Float32Array(1000) } }));
    const f = await SafetensorsFile.open(path);
    await truncate(path, 100);
    await assert.rejects(
      f.read('x'),
      (e: unknown) =>
        e instanceof LorakitError &&
        e.code === 'LK_FILE_INVALID' &&
        e.message.includes("tensor 'x'") &&
        e.message.includes('truncated'),
    );
    await f.close();
    await assert.rejects(f.read('x'), (e: unknown) => e instanceof LorakitError && e.message.includes('after close()'));
    await f.close();
    await writeFile(path, rawFile({ a: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, 8));
    await assert.rejects(
      SafetensorsFile.open(path),
      (e: unknown) => e instanceof LorakitError && e.code === 'LK_FILE_INVALID' && e.message.includes(path),
    );
  });
});

test('SafetensorsFile reads only the header and the tensor asked for (a 5 GiB sparse file opens at once)', async () => {
  await withDir(async (dir) => {
    const big = 5 * 2 ** 30;
    const header = rawFile(
      {
        big: { dtype: 'F32', shape: [big / 4], data_offsets: [0, big] },
        tail: { dtype: 'U8', shape: [4], data_offsets: [big, big + 4] },
      },
      0,
    );
    const path = join(dir, 'sparse.safetensors');
    await writeFile(path, header);
    const fh = await open(path, 'r+');
    // leaves a hole: no disk blocks, reads as zeros
    await fh.write(new Uint8Array([9, 8, 7, 6]), 0, 4, header.length + big);
    await fh.close();
    const t0 = performance.now();
    const f = await SafetensorsFile.open(path);
    assert.deepEqual([...(await f.read('tail'))], [9, 8, 7, 6]);
    assert.equal(f.info('big').byteLength, big);
    assert.equal(f.info('tail').dataOffset, header.length + big);
    await f.close();
    assert.ok(performance.now() - t0 < 2000);
  });
});

// Interop: the fixture written by Python's safetensors (interop/safetensors_fixture.py).
interface Expected {
  metadata: Record<string, string>;
  tensors: Record<
    string,
    { dtype: SafetensorsDType; shape: number[]; values: Array<number | string>; bits?: number[] }
  >;
}

test('reads the file written by Python safetensors, value for value', async () => {
  const expected = JSON.parse(await readFile(new URL('python.json', FIXTURE), 'utf8')) as Expected;
  const path = new URL('python.safetensors', FIXTURE).pathname;
  const file = await SafetensorsFile.open(path);
  const buf = SafetensorsBuffer.from(new Uint8Array(await readFile(path)), 'python.safetensors');
  try {
    assert.deepEqual(file.metadata, expected.metadata);
    assert.deepEqual(file.names().sort(), Object.keys(expected.tensors).sort());
    for (const [name, want] of Object.entries(expected.tensors)) {
      const info = file.info(name);
      assert.equal(info.dtype, want.dtype, name);
      assert.deepEqual(info.shape, want.shape, name);
      if (want.dtype === 'I64') {
        assert.deepEqual(
          [...(await file.readAs(name, 'i64'))],
          want.values.map((v) => BigInt(v)),
          name,
        );
      } else if (want.dtype === 'BOOL') {
        assert.deepEqual([...(await file.readAs(name, 'bool'))], want.values, name);
      } else if (want.dtype === 'I32' || want.dtype === 'U8') {
        assert.deepEqual([...(await file.readAs(name, 'f64'))], want.values, name);
      } else {
        const asF64 = await file.readAs(name, 'f64');
        assertAllclose(asF64, want.values as number[], { rtol: 0, atol: 0, what: name });
        if (want.bits) assert.deepEqual([...buf.readAs(name, NATIVE_TYPE[want.dtype])], want.bits, `${name} bits`);
      }
    }
  } finally {
    await file.close();
  }
});

test('encoding the fixture tensors reproduces the Python file byte for byte', async () => {
  const expected = JSON.parse(await readFile(new URL('python.json', FIXTURE), 'utf8')) as Expected;
  const python = new Uint8Array(await readFile(new URL('python.safetensors', FIXTURE)));
  const tensors: Record<string, TensorToWrite> = {};
  for (const [name, t] of Object.entries(expected.tensors)) {
    const v = t.values;
    const data = t.bits
      ? new Uint16Array(t.bits)
      : t.dtype === 'F32'
        ? new Float32Array(v as number[])
        : t.dtype === 'F64'
          ? new Float64Array(v as number[])
          : t.dtype === 'I64'
            ? new BigInt64Array(v.map((x) => BigInt(x)))
            : t.dtype === 'I32'
              ? new Int32Array(v as number[])
              : new Uint8Array(v as number[]);
    tensors[name] = { dtype: t.dtype, shape: t.shape, data };
  }
  assert.deepEqual(encodeSafetensors(tensors, expected.metadata), python);
});
