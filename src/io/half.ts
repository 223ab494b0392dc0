/**
 * 16-bit float conversions (IEEE binary16 "f16" and bfloat16 "bf16") over Uint16Array bit patterns, because Node 20
 * has no Float16Array. Bulk functions are plain loops over integer views (tens of millions of values per second);
 * the scalar helpers exist for tests and one-off values. This file knows nothing about files or tensors.
 */

// A scratch cell to move between a float32 and its bits without allocating.
const cellF32 = new Float32Array(1);
const cellU32 = new Uint32Array(cellF32.buffer);

let f16Lut: Uint32Array | undefined;

/** f32 bit pattern of one f16 bit pattern (exact: every f16 value, NaN payload included, is an f32 value). */
function f16BitsToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  const man = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (man << 13)) >>> 0;
  if (exp !== 0) return (sign | ((exp + 112) << 23) | (man << 13)) >>> 0; // rebias 15 -> 127
  if (man === 0) return sign >>> 0;
  cellF32[0] = man * 2 ** -24; // subnormal f16 is exactly a normal f32
  return (sign | cellU32[0]!) >>> 0;
}

// The decode table costs 256 KiB and ~1 ms to build, so it is built on first use.
function lut(): Uint32Array {
  if (!f16Lut) {
    f16Lut = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) f16Lut[h] = f16BitsToF32Bits(h);
  }
  return f16Lut;
}

/** f16 bit pattern nearest to the f32 with bits `x` (round to nearest, ties to even; overflow to ±inf; NaN stays NaN).
 * */
function f32BitsToF16Bits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const man = x & 0x7fffff;
  if (exp === 0xff) return man === 0 ? sign | 0x7c00 : sign | 0x7e00 | (man >>> 13); // quiet bit keeps NaN a NaN
  const hexp = exp - 112; // rebias 127 -> 15
  if (hexp >= 31) return sign | 0x7c00;
  if (hexp <= 0) {
    // Subnormal f16: value = full24 · 2^(exp-150), unit 2^-24, so shift right by 126 - exp.
    const shift = 126 - exp;
    if (shift > 24) return sign; // below half the smallest subnormal (f32 subnormals included)
    const full = man | 0x800000;
    let r = full >>> shift;
    const rem = full & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (r & 1) === 1)) r++; // may carry into the smallest normal: correct
    return sign | r;
  }
  let r = (hexp << 10) | (man >>> 13);
  const rem = man & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (r & 1) === 1)) r++; // a carry into the exponent (even to inf) is correct
  return sign | r;
}

/** bf16 bit pattern nearest to the f32 with bits `x` (round to nearest, ties to even; NaN stays NaN). */
function f32BitsToBf16Bits(x: number): number {
  if ((x & 0x7fffffff) >>> 0 > 0x7f800000) return ((x >>> 16) | 0x40) & 0xffff; // truncating a NaN could yield inf
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

function u32View(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

function checkOut<T extends { length: number }>(out: T, n: number, fn: string): T {
  if (out.length !== n) throw new RangeError(`${fn}: out has length ${out.length}, expected ${n}`);
  return out;
}

/** Decodes f16 bit patterns to float32 (exact), into `out` if given. */
export function f16ToF32(src: Uint16Array, out: Float32Array = new Float32Array(src.length)): Float32Array {
  const o = u32View(checkOut(out, src.length, 'f16ToF32'));
  const t = lut();
  for (let i = 0; i < src.length; i++) o[i] = t[src[i]!]!;
  return out;
}

/** Encodes float32 values as f16 bit patterns (round to nearest even), into `out` if given. */
export function f32ToF16(src: Float32Array, out: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  checkOut(out, src.length, 'f32ToF16');
  const s = u32View(src);
  for (let i = 0; i < s.length; i++) out[i] = f32BitsToF16Bits(s[i]!);
  return out;
}

/** Decodes bf16 bit patterns to float32 (exact: bf16 is the top half of an f32), into `out` if given. */
export function bf16ToF32(src: Uint16Array, out: Float32Array = new Float32Array(src.length)): Float32Array {
  const o = u32View(checkOut(out, src.length, 'bf16ToF32'));
  for (let i = 0; i < src.length; i++) o[i] = src[i]! << 16;
  return out;
}

/** Encodes float32 values as bf16 bit patterns (round to nearest even, NaN kept), into `out` if given. */
export function f32ToBf16(src: Float32Array, out: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  checkOut(out, src.length, 'f32ToBf16');
  const s = u32View(src);
  for (let i = 0; i < s.length; i++) out[i] = f32BitsToBf16Bits(s[i]!);
  return out;
}

/** The number an f16 bit pattern stands for. */
export function f16BitsToNumber(bits: number): number {
  cellU32[0] = lut()[bits & 0xffff]!;
  return cellF32[0]!;
}

/** The f16 bit pattern of `x` rounded to f32 first, as storing it in a Float32Array and calling f32ToF16 would. */
export function numberToF16Bits(x: number): number {
  cellF32[0] = x;
  return f32BitsToF16Bits(cellU32[0]!);
}

/** The number a bf16 bit pattern stands for. */
export function bf16BitsToNumber(bits: number): number {
  cellU32[0] = (bits & 0xffff) << 16;
  return cellF32[0]!;
}

/** The bf16 bit pattern of `x` rounded to f32 first, as storing it in a Float32Array and calling f32ToBf16 would. */
export function numberToBf16Bits(x: number): number {
  cellF32[0] = x;
  return f32BitsToBf16Bits(cellU32[0]!);
}
