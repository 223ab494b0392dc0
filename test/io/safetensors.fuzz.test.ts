// Fuzzing the safetensors reader: 5000 seeded mutations of valid files. Each must either parse and read every tensor
// within bounds, or throw a LorakitError coded LK_FILE_INVALID / LK_UNSUPPORTED; anything else is a bug.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DTYPE_BYTES, SafetensorsBuffer, SafetensorsFile, encodeSafetensors } from '../../src/io/safetensors.ts';
import type { ReadType, SafetensorsDType, TensorInfo } from '../../src/io/safetensors.ts';
import { LorakitError } from '../../src/errors.ts';
import { rng } from '../helpers.ts';

const CASES = 5000;
const FILE_EVERY = 25; // every 25th case also goes through SafetensorsFile on disk

function seeds(): Uint8Array[] {
  return [
    encodeSafetensors(
      {
        w: { dtype: 'F32', shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6]) },
        h: { dtype: 'F16', shape: [3], data: new Uint16Array([0x3c00, 0x7c00, 0x0001]) },
        b: { dtype: 'BF16', shape: [2], data: new Uint16Array([0x3f80, 0x7fc0]) },
        l: { dtype: 'I64', shape: [2], data: new BigInt64Array([-1n, 2n ** 62n]) },
        m: { dtype: 'BOOL', shape: [3], data: new Uint8Array([1, 0, 1]) },
      },
      { format: 'pt' },
    ),
    encodeSafetensors({ x: { dtype: 'F64', shape: [], data: new Float64Array([Math.PI]) } }),
    encodeSafetensors(
      {
        e: { dtype: 'F32', shape: [0, 4], data: new Float32Array(0) },
        s: { dtype: 'I8', shape: [], data: new Int8Array([-5]) },
        u: { dtype: 'U16', shape: [2, 2], data: new Uint16Array([1, 2, 3, 65535]) },
        v: { dtype: 'U64', shape: [1], data: new BigUint64Array([2n ** 64n - 1n]) },
        i: { dtype: 'I32', shape: [2], data: new Int32Array([-7, 7]) },
      },
      { a: 'b', total: '12' },
    ),
    encodeSafetensors([]),
    encodeSafetensors({ big: { dtype: 'F32', shape: [16, 16], data: new Float32Array(256).map((_, i) => i) } }),
  ];
}

const NATURAL: Record<SafetensorsDType, ReadType> = {
  F64: 'f32',
  F32: 'f32',
  F16: 'f32',
  BF16: 'f32',
  I64: 'i64',
  U64: 'u64',
  I32: 'f64',
  U32: 'f64',
  I16: 'f32',
  U16: 'f32',
  I8: 'f32',
  U8: 'f32',
  BOOL: 'bool',
};

const JSON_CHARS = '{}[]":,-0123456789 eE.';
const DTYPES: unknown[] = [
  'F32',
  'F16',
  'BF16',
  'F64',
  'I64',
  'U8',
  'BOOL',
  'F8_E4M3',
  'F8_E5M2',
  'Q7',
  '',
  3,
  null,
  ['F32'],
];
const DIMS: unknown[] = [-1, 0, 1, 2, 3, 1.5, '2', 1e20, 2 ** 53, null, 4096];

/** Mutates a copy of `src`; returns the bytes and a description for failure messages. */
function mutate(src: Uint8Array, r: () => number): [Uint8Array, string] {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const int = (n: number): number => Math.floor(r() * n);
  const n = Number(new DataView(src.buffer, src.byteOffset).getBigUint64(0, true));
  const kind = int(7);
  let b = src.slice();
  switch (kind) {
    case 0: {
      // bit flips, mostly in the header
      const k = 1 + int(3);
      const at: number[] = [];
      for (let i = 0; i < k; i++) {
        const p = r() < 0.8 ? int(Math.min(b.length, 8 + n)) : int(b.length);
        b[p]! ^= 1 << int(8);
        at.push(p);
      }
      return [b, `bit flips at ${at}`];
    }
    case 1: {
      // header byte overwrites with JSON-significant characters
      const p = 8 + int(n);
      b[p] = r() < 0.7 ? JSON_CHARS.charCodeAt(int(JSON_CHARS.length)) : int(256);
      return [b, `byte ${p} := ${b[p]}`];
    }
    case 2: {
      // truncation
      const len = int(b.length);
      return [b.subarray(0, len), `truncated to ${len}`];
    }
    case 3: {
      // extension
      const extra = 1 + int(16);
      const e = new Uint8Array(b.length + extra);
      e.set(b);
      for (let i = b.length; i < e.length; i++) e[i] = int(256);
      return [e, `extended by ${extra}`];
    }
    case 4: {
      // header length field
      const choices = [
        0n,
        1n,
        BigInt(n - 1),
        BigInt(n + 1),
        BigInt(n + 8),
        BigInt(b.length - 8),
        BigInt(b.length),
        100_000_001n,
        2n ** 32n + BigInt(n),
        2n ** 63n,
        2n ** 64n - 1n,
        BigInt(int(b.length * 2)),
      ];
      const v = pick(choices) & (2n ** 64n - 1n);
      new DataView(b.buffer).setBigUint64(0, v < 0n ? 0n : v, true);
      return [b, `header length := ${v}`];
    }
    default: {
      // semantic JSON edits, re-serialised with a correct header length
      const header = JSON.parse(new TextDecoder().decode(b.subarray(8, 8 + n))) as Record<string, any>;
      const names = Object.keys(header).filter((k) => k !== '__metadata__');
      const data = b.subarray(8 + n);
      let what = '';
      const name = names.length ? pick(names) : undefined;
      const t = name ? header[name] : undefined;
      const op = int(14);
      if (!t || op === 0) {
        header.__metadata__ = pick([{ x: 1 }, 'pt', ['a'], null, { ok: 'yes' }]);
        what = 'metadata';
      } else if (op === 1) {
        t.data_offsets = [-t.data_offsets[0] - 1, t.data_offsets[1]];
        what = 'negative offset';
      } else if (op === 2) {
        t.data_offsets = [t.data_offsets[1], t.data_offsets[0]];
        what = 'swapped offsets';
      } else if (op === 3) {
        t.data_offsets = t.data_offsets.map((o: number) => o + pick([1, 2, 8, -8, 1e15]));
        what = 'shifted offsets';
      } else if (op === 4) {
        t.dtype = pick(DTYPES);
        what = `dtype ${JSON.stringify(t.dtype)}`;
      } else if (op === 5) {
        t.shape = [...t.shape, pick(DIMS)];
        what = 'extra dim';
      } else if (op === 6) {
        t.shape = t.shape.slice(1);
        what = 'dropped dim';
      } else if (op === 7 && t.shape.length) {
        t.shape[int(t.shape.length)] = pick(DIMS);
        what = 'changed dim';
      } else if (op === 8) {
        t.data_offsets = pick([[], [0], null, '0,4', [0, 4, 8], [0.5, 4]]);
        what = 'bad data_offsets';
      } else if (op === 9) {
        delete t[pick(['dtype', 'shape', 'data_offsets'])];
        what = 'missing field';
      } else if (op === 10) {
        delete header[name!];
        what = `deleted ${name}`;
      } else if (op === 11) {
        header[`${name}_copy`] = { ...t };
        what = `duplicated ${name}`;
      } else if (op === 12) {
        header[name!] = pick([5, 'x', [], null]);
        what = 'entry not an object';
      } else {
        t.dtype = pick(['F32', 'F16', 'I64', 'U8']);
        t.shape = [Math.max(0, (t.data_offsets[1] - t.data_offsets[0]) / DTYPE_BYTES[t.dtype as SafetensorsDType])];
        what = 'retyped consistently';
      }
      let json = JSON.stringify(header);
      if (r() < 0.5) json = json.padEnd(Math.ceil(json.length / 8) * 8, ' ');
      const enc = new TextEncoder().encode(json);
      const out = new Uint8Array(8 + enc.length + data.length);
      new DataView(out.buffer).setBigUint64(0, BigInt(enc.length), true);
      out.set(enc, 8);
      out.set(data, 8 + enc.length);
      b = out;
      return [b, `json edit: ${what}`];
    }
  }
}

function product(shape: number[]): number {
  return shape.reduce((a, d) => a * d, 1);
}

function checkTensor(
  info: TensorInfo,
  raw: Uint8Array,
  decoded: { length: number },
  fileSize: number,
  dataStart: number,
): void {
  assert.equal(raw.length, info.byteLength);
  assert.ok(info.dataOffset >= dataStart && info.dataOffset + info.byteLength <= fileSize, 'in bounds');
  assert.equal(info.byteLength, product(info.shape) * DTYPE_BYTES[info.dtype]);
  assert.equal(decoded.length, product(info.shape));
}

function isExpectedError(e: unknown): boolean {
  return e instanceof LorakitError && (e.code === 'LK_FILE_INVALID' || e.code === 'LK_UNSUPPORTED');
}

test(`${CASES} mutated files parse or fail with LK_FILE_INVALID / LK_UNSUPPORTED`, async (t) => {
  const bases = [
    ...seeds(),
    new Uint8Array(await readFile(new URL('../fixtures/safetensors/python.safetensors', import.meta.url))),
  ];
  const r = rng(20240611);
  const outcomes = { ok: 0, LK_FILE_INVALID: 0, LK_UNSUPPORTED: 0 };
  const dir = await mkdtemp(join(tmpdir(), 'lorakit-fuzz-'));
  const t0 = performance.now();
  try {
    for (let c = 0; c < CASES; c++) {
      let bytes = bases[c % bases.length]!;
      const steps: string[] = [];
      const k = r() < 0.8 ? 1 : 2 + Math.floor(r() * 2);
      for (let i = 0; i < k; i++) {
        // A JSON edit needs a parseable header; after an earlier byte-level mutation, fall back to the original.
        let m: [Uint8Array, string];
        try {
          m = mutate(bytes, r);
        } catch {
          m = mutate(bases[c % bases.length]!, r);
        }
        bytes = m[0];
        steps.push(m[1]);
      }
      const what = `case ${c} (${steps.join('; ')})`;
      try {
        const buf = SafetensorsBuffer.from(bytes, 'fuzz.safetensors');
        let covered = 0;
        for (const name of buf.names()) {
          const info = buf.info(name);
          checkTensor(info, buf.read(name), buf.readAs(name, NATURAL[info.dtype]), bytes.length, buf.dataStart);
          covered += info.byteLength;
        }
        assert.equal(buf.dataStart + covered, bytes.length, 'tensors tile the data buffer');
        outcomes.ok++;
      } catch (e) {
        if (!isExpectedError(e)) assert.fail(`${what}: unexpected ${e instanceof Error ? e.stack : String(e)}`);
        outcomes[(e as LorakitError).code as 'LK_FILE_INVALID' | 'LK_UNSUPPORTED']++;
      }
      if (c % FILE_EVERY === 0) {
        const path = join(dir, `f${c}.safetensors`);
        await writeFile(path, bytes);
        let f: SafetensorsFile | undefined;
        try {
          f = await SafetensorsFile.open(path);
          for (const name of f.names()) {
            const info = f.info(name);
            checkTensor(info, await f.read(name), await f.readAs(name, NATURAL[info.dtype]), bytes.length, f.dataStart);
          }
        } catch (e) {
          if (!isExpectedError(e))
            assert.fail(`${what} (file): unexpected ${e instanceof Error ? e.stack : String(e)}`);
        } finally {
          await f?.close();
        }
      }
      assert.ok(performance.now() - t0 < 20_000, `fuzzing ran past 20 s at ${what}`);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  t.diagnostic(`outcomes: ${JSON.stringify(outcomes)} in ${(performance.now() - t0).toFixed(0)} ms`);
  // The mutations must exercise both outcomes, or the fuzzer tests nothing.
  assert.ok(
    outcomes.ok > 100 && outcomes.LK_FILE_INVALID > 1000 && outcomes.LK_UNSUPPORTED > 10,
    JSON.stringify(outcomes),
  );
});
