// f16 / bf16 conversions against known bit patterns, exhaustive round trips, and a brute-force nearest-value oracle.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  bf16BitsToNumber,
  bf16ToF32,
  f16BitsToNumber,
  f16ToF32,
  f32ToBf16,
  f32ToF16,
  numberToBf16Bits,
  numberToF16Bits,
} from '../../src/io/half.ts';
import { rng } from '../helpers.ts';

const f32Bits = (x: number): number => new Uint32Array(new Float32Array([x]).buffer)[0]!;
const f32FromBits = (b: number): number => new Float32Array(new Uint32Array([b]).buffer)[0]!;

test('f16 encodes known values to their exact bit patterns', () => {
  const cases: Array<[number, number]> = [
    [0, 0x0000],
    [-0, 0x8000],
    [1, 0x3c00],
    [-2, 0xc000],
    [0.5, 0x3800],
    [65504, 0x7bff],
    [-65504, 0xfbff],
    [2 ** -14, 0x0400], // smallest normal
    [2 ** -24, 0x0001], // smallest subnormal
    [1023 * 2 ** -24, 0x03ff], // largest subnormal
    [Infinity, 0x7c00],
    [-Infinity, 0xfc00],
    [1 / 3, 0x3555],
    [65519, 0x7bff], // just under the midpoint to 65536 stays finite
    [1e6, 0x7c00], // overflow
    [1e-10, 0x0000],
    [-1e-10, 0x8000], // underflow keeps the sign
  ];
  for (const [x, bits] of cases) assert.equal(numberToF16Bits(x), bits, `f16(${x})`);
});

test('f16 rounding ties go to the even neighbour', () => {
  const cases: Array<[number, number]> = [
    [1 + 2 ** -11, 0x3c00], // halfway 1 .. 1+2^-10: even is 0x3c00
    [1 + 3 * 2 ** -11, 0x3c02], // halfway 0x3c01 .. 0x3c02: even is 0x3c02
    [1 + 2 ** -11 + 2 ** -20, 0x3c01], // just above halfway rounds up
    [65520, 0x7c00], // halfway 65504 (odd 0x7bff) .. 65536 rounds to inf
    [2 ** -25, 0x0000], // half the smallest subnormal: even is zero
    [2 ** -25 * (1 + 2 ** -20), 0x0001],
    [3 * 2 ** -25, 0x0002], // halfway subnormals 1 .. 2
    [1023.5 * 2 ** -24, 0x0400], // halfway largest subnormal .. smallest normal
  ];
  for (const [x, bits] of cases) assert.equal(numberToF16Bits(x), bits, `f16(${x})`);
});

test('f16 NaN stays NaN, including signalling NaNs whose payload would truncate to zero', () => {
  const nans = new Float32Array(new Uint32Array([0x7fc00000, 0x7f800001, 0xff800001, 0x7fffffff]).buffer);
  const h = f32ToF16(nans);
  for (const b of h) assert.ok((b & 0x7c00) === 0x7c00 && (b & 0x3ff) !== 0, `0x${b.toString(16)} is a NaN`);
  assert.equal(h[2]! & 0x8000, 0x8000, 'sign kept');
  assert.equal(f32ToF16(new Float32Array([NaN]))[0], 0x7e00);
});

test('f16 decodes known bit patterns exactly', () => {
  const cases: Array<[number, number]> = [
    [0x3c00, 1],
    [0xc000, -2],
    [0x7bff, 65504],
    [0x0001, 2 ** -24],
    [0x03ff, 1023 * 2 ** -24],
    [0x0400, 2 ** -14],
    [0x7c00, Infinity],
    [0xfc00, -Infinity],
    [0x8000, -0],
    [0x3555, 0.333251953125],
  ];
  for (const [bits, x] of cases)
    assert.ok(
      Object.is(f16BitsToNumber(bits), x),
      `f16 0x${bits.toString(16)} -> ${f16BitsToNumber(bits)}, expected ${x}`,
    );
  assert.ok(Number.isNaN(f16BitsToNumber(0x7e00)));
  // The payload survives decoding: 0x7c01 is f32 0x7f802000.
  const out = f16ToF32(new Uint16Array([0x7c01]));
  assert.equal(new Uint32Array(out.buffer)[0], 0x7f802000);
});

test('every f16 bit pattern survives decode then encode (NaNs only gain the quiet bit)', () => {
  const all = new Uint16Array(65536).map((_, i) => i);
  const back = f32ToF16(f16ToF32(all));
  for (let i = 0; i < 65536; i++) {
    const nan = (i & 0x7c00) === 0x7c00 && (i & 0x3ff) !== 0;
    assert.equal(back[i], nan ? i | 0x200 : i, `0x${i.toString(16)}`);
  }
});

test('f32ToF16 equals a brute-force nearest-f16 search on random floats', () => {
  // Oracle: all finite non-negative f16 values in increasing order; pick the nearest, ties to the even pattern.
  const values = Array.from({ length: 0x7c00 }, (_, i) => f16BitsToNumber(i));
  const nearest = (x: number): number => {
    const a = Math.abs(x);
    const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
    if (a >= 65520) return sign | 0x7c00;
    let lo = 0,
      hi = values.length - 1;
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (values[mid]! <= a) lo = mid;
      else hi = mid;
    }
    const dl = a - values[lo]!,
      dh = values[hi]! - a;
    return sign | (dl < dh ? lo : dh < dl ? hi : (lo & 1) === 0 ? lo : hi);
  };
  const r = rng(7);
  const xs = new Float32Array(20000);
  for (let i = 0; i < xs.length; i++) {
    // Mix scales so that subnormals, normals and overflow all occur; exact ties come from few-bit mantissas.
    const scale = 2 ** Math.floor(r() * 44 - 28);
    xs[i] = (r() < 0.5 ? -1 : 1) * (i % 4 === 0 ? Math.floor(r() * 4096) / 2048 : r() * 2) * scale;
  }
  const got = f32ToF16(xs);
  for (let i = 0; i < xs.length; i++) assert.equal(got[i], nearest(xs[i]!), `f16(${xs[i]})`);
});

test('bf16 encodes known values to their exact bit patterns, ties to even', () => {
  const cases: Array<[number, number]> = [
    [1, 0x3f80],
    [-2, 0xc000],
    [0, 0x0000],
    [-0, 0x8000],
    [Infinity, 0x7f80],
    [-Infinity, 0xff80],
    [3.3895313892515355e38, 0x7f7f], // largest finite bf16
    [3.4028234663852886e38, 0x7f80], // largest f32 rounds up to inf
    [2 ** -133, 0x0001], // smallest subnormal bf16
    [1 + 2 ** -8, 0x3f80], // halfway 0x3f80 .. 0x3f81: even is 0x3f80
    [1 + 3 * 2 ** -8, 0x3f82], // halfway 0x3f81 .. 0x3f82: even is 0x3f82
    [1 + 2 ** -8 + 2 ** -20, 0x3f81],
    [0.1, 0x3dcd],
  ];
  for (const [x, bits] of cases) assert.equal(numberToBf16Bits(x), bits, `bf16(${x})`);
});

test('bf16 NaN stays NaN, including payloads that truncation would turn into inf', () => {
  const nans = new Float32Array(new Uint32Array([0x7fc00000, 0x7f800001, 0xff800001, 0x7fffffff]).buffer);
  const b = f32ToBf16(nans);
  assert.deepEqual([...b], [0x7fc0, 0x7fc0, 0xffc0, 0x7fff]);
  for (const v of b) assert.ok(Number.isNaN(bf16BitsToNumber(v)));
});

test('bf16 decodes to the top half of an f32 and every pattern round-trips', () => {
  assert.equal(bf16BitsToNumber(0x3f80), 1);
  assert.equal(bf16BitsToNumber(0xc000), -2);
  assert.equal(bf16BitsToNumber(0x7f80), Infinity);
  const all = new Uint16Array(65536).map((_, i) => i);
  const f = bf16ToF32(all);
  const fb = new Uint32Array(f.buffer);
  for (let i = 0; i < 65536; i++) assert.equal(fb[i], (i << 16) >>> 0);
  const back = f32ToBf16(f);
  for (let i = 0; i < 65536; i++) {
    const nan = (i & 0x7f80) === 0x7f80 && (i & 0x7f) !== 0;
    assert.equal(back[i], nan ? i | 0x40 : i, `0x${i.toString(16)}`);
  }
});

test('f32ToBf16 equals rounding the f32 bits by hand on random floats', () => {
  const r = rng(11);
  const xs = new Float32Array(20000).map(() => (r() - 0.5) * 2 ** Math.floor(r() * 60 - 30));
  const got = f32ToBf16(xs);
  for (let i = 0; i < xs.length; i++) {
    const bits = f32Bits(xs[i]!);
    const lo = bits >>> 16,
      hi = lo + 1,
      rest = bits & 0xffff;
    const want = rest < 0x8000 ? lo : rest > 0x8000 ? hi : (lo & 1) === 0 ? lo : hi;
    assert.equal(got[i], want & 0xffff, `bf16(${xs[i]})`);
    assert.ok(Math.abs(f32FromBits((want << 16) >>> 0) - xs[i]!) <= Math.abs(xs[i]!) * 2 ** -8);
  }
});

test('bulk conversions write into a given output and reject a wrong-length one', () => {
  const out = new Float32Array(2);
  assert.equal(f16ToF32(new Uint16Array([0x3c00, 0xc000]), out), out);
  assert.deepEqual([...out], [1, -2]);
  assert.throws(() => f32ToBf16(new Float32Array(3), new Uint16Array(2)), RangeError);
});

test('conversions handle millions of values quickly', () => {
  const n = 4_000_000;
  const x = new Float32Array(n).map((_, i) => (i % 1000) / 7 - 70);
  const t0 = performance.now();
  const h = f32ToF16(x);
  const y = f16ToF32(h);
  const b = f32ToBf16(x);
  const z = bf16ToF32(b);
  const ms = performance.now() - t0;
  assert.equal(y.length, n);
  assert.equal(z.length, n);
  // Generous bound (four passes over 4M values take ~100 ms here); catches an accidental per-element allocation.
  assert.ok(ms < 3000, `4 conversions of ${n} values took ${ms.toFixed(0)} ms`);
});
