/**
 * ggml's tensor element types as GGUF stores them: the type table (ids, block sizes, bytes per block) and pure
 * dequantization of one tensor's bytes to float32, exactly as ggml and the `gguf` Python package compute it: every
 * product and sum rounded to float32 in ggml's order (no fused multiply-add), so the values equal theirs bit for bit.
 * Also the two quantizers lorakit writes (Q8_0 and F16 through half.ts). Not here: the file format (gguf.ts), which
 * tensors a model needs, the q/k row order of llama.cpp's converter (gguf-model.ts).
 */
import { LorakitError } from '../errors.ts';
import { f16ToF32, f32ToBf16, numberToF16Bits } from './half.ts';

/** A ggml element type: its GGUF id, values per block and bytes per block (1 and the element size for plain types). */
export interface GgmlType {
  name: string;
  id: number;
  blockSize: number;
  typeSize: number;
}

const T = (name: string, id: number, blockSize: number, typeSize: number): GgmlType => ({
  name,
  id,
  blockSize,
  typeSize,
});

/** The ggml types lorakit knows, by GGUF id (those it can dequantize are in `DEQUANTIZERS`). */
export const GGML_TYPES: ReadonlyMap<number, GgmlType> = new Map(
  [
    T('F32', 0, 1, 4),
    T('F16', 1, 1, 2),
    T('Q4_0', 2, 32, 18),
    T('Q4_1', 3, 32, 20),
    T('Q5_0', 6, 32, 22),
    T('Q5_1', 7, 32, 24),
    T('Q8_0', 8, 32, 34),
    T('Q8_1', 9, 32, 36),
    T('Q2_K', 10, 256, 84),
    T('Q3_K', 11, 256, 110),
    T('Q4_K', 12, 256, 144),
    T('Q5_K', 13, 256, 176),
    T('Q6_K', 14, 256, 210),
    T('Q8_K', 15, 256, 292),
    T('I8', 24, 1, 1),
    T('I16', 25, 1, 2),
    T('I32', 26, 1, 4),
    T('I64', 27, 1, 8),
    T('F64', 28, 1, 8),
    T('BF16', 30, 1, 2),
  ].map((t) => [t.id, t]),
);

/** The type named `name` (F32, Q4_K, ...). */
export function ggmlTypeByName(name: string): GgmlType {
  for (const t of GGML_TYPES.values()) if (t.name === name) return t;
  throw new LorakitError(
    'LK_UNSUPPORTED',
    `ggml type ${name} is unknown; known: ${[...GGML_TYPES.values()].map((t) => t.name).join(', ')}`,
  );
}

/** Bytes that `n` values of `type` take (n a multiple of the block size). */
export function ggmlByteLength(type: GgmlType, n: number): number {
  return (n / type.blockSize) * type.typeSize;
}

const f = Math.fround;

/** Reads the f16 at byte `o` of `b` as a number (exact). */
function halfAt(b: Uint8Array, o: number, lut: Float32Array): number {
  return lut[b[o]! | (b[o + 1]! << 8)]!;
}

/** Every f16 bit pattern's value, built per call so no module state is kept (65,536 values, ~0.3 ms). */
function halfTable(): Float32Array {
  const bits = new Uint16Array(65536);
  for (let i = 0; i < 65536; i++) bits[i] = i;
  return f16ToF32(bits);
}

type Dequant = (b: Uint8Array, nBlocks: number, out: Float32Array, lut: Float32Array) => void;

// Legacy 32-value blocks: y = d·q (+ m). Low nibbles are values 0..15 of a block, high nibbles 16..31.
const q4_0: Dequant = (b, nb, y, h) => {
  for (let i = 0; i < nb; i++) {
    const o = i * 18,
      d = halfAt(b, o, h),
      out = i * 32;
    for (let j = 0; j < 16; j++) {
      const q = b[o + 2 + j]!;
      y[out + j] = f(((q & 15) - 8) * d);
      y[out + j + 16] = f(((q >> 4) - 8) * d);
    }
  }
};

const q4_1: Dequant = (b, nb, y, h) => {
  for (let i = 0; i < nb; i++) {
    const o = i * 20,
      d = halfAt(b, o, h),
      m = halfAt(b, o + 2, h),
      out = i * 32;
    for (let j = 0; j < 16; j++) {
      const q = b[o + 4 + j]!;
      y[out + j] = f(f((q & 15) * d) + m);
      y[out + j + 16] = f(f((q >> 4) * d) + m);
    }
  }
};

/** Q5: the fifth bit of value j is bit j of the 32-bit qh word. */
function q5(b: Uint8Array, nb: number, y: Float32Array, h: Float32Array, withMin: boolean): void {
  const size = withMin ? 24 : 22;
  for (let i = 0; i < nb; i++) {
    const o = i * size,
      d = halfAt(b, o, h),
      m = withMin ? halfAt(b, o + 2, h) : 0,
      qo = withMin ? o + 4 : o + 2,
      out = i * 32;
    const qh = (b[qo]! | (b[qo + 1]! << 8) | (b[qo + 2]! << 16) | (b[qo + 3]! << 24)) >>> 0;
    for (let j = 0; j < 16; j++) {
      const q = b[qo + 4 + j]!;
      const lo = (q & 15) | (((qh >>> j) & 1) << 4);
      const hi = (q >> 4) | (((qh >>> (j + 16)) & 1) << 4);
      if (withMin) {
        y[out + j] = f(f(lo * d) + m);
        y[out + j + 16] = f(f(hi * d) + m);
      } else {
        y[out + j] = f((lo - 16) * d);
        y[out + j + 16] = f((hi - 16) * d);
      }
    }
  }
}

const q8_0: Dequant = (b, nb, y, h) => {
  for (let i = 0; i < nb; i++) {
    const o = i * 34,
      d = halfAt(b, o, h);
    for (let j = 0; j < 32; j++) y[i * 32 + j] = f(((b[o + 2 + j]! << 24) >> 24) * d);
  }
};

// K-quants: 256-value super-blocks with 6-bit (Q4_K, Q5_K), 4-bit (Q2_K), 6-bit packed (Q3_K) or 8-bit (Q6_K)
// sub-block scales. Layouts (byte offsets within a block) follow ggml's block_qN_K structs.

const q2_K: Dequant = (b, nb, y, h) => {
  for (let i = 0; i < nb; i++) {
    const o = i * 84,
      d = halfAt(b, o + 80, h),
      dmin = halfAt(b, o + 82, h);
    let out = i * 256,
      is = 0;
    for (let n = 0; n < 2; n++) {
      const q = o + 16 + n * 32; // qs
      for (let shift = 0; shift < 8; shift += 2) {
        for (let half = 0; half < 2; half++) {
          const sc = b[o + is++]!;
          const dl = f(d * (sc & 15)),
            ml = f(dmin * (sc >> 4));
          for (let l = 0; l < 16; l++) y[out++] = f(f(dl * ((b[q + half * 16 + l]! >> shift) & 3)) - ml);
        }
      }
    }
  }
};

const q3_K: Dequant = (b, nb, y, h) => {
  const scales = new Int8Array(16);
  for (let i = 0; i < nb; i++) {
    const o = i * 110,
      d = halfAt(b, o + 108, h),
      s = o + 96; // 12 bytes of packed 6-bit scales
    for (let j = 0; j < 16; j++) {
      // low 4 bits: nibble of byte j % 8 (low nibble for j < 8); high 2 bits: 2-bit field j / 4 ... of bytes 8..11
      const lo = j < 8 ? b[s + j]! & 15 : b[s + j - 8]! >> 4;
      const hi = (b[s + 8 + (j & 3)]! >> (2 * (j >> 2))) & 3;
      scales[j] = (lo | (hi << 4)) - 32;
    }
    let out = i * 256,
      is = 0,
      m = 1;
    for (let n = 0; n < 2; n++) {
      const q = o + 32 + n * 32; // qs after the 32-byte hmask
      for (let shift = 0; shift < 8; shift += 2) {
        for (let half = 0; half < 2; half++) {
          const dl = f(d * scales[is++]!);
          for (let l = 0; l < 16; l++) {
            const k = half * 16 + l;
            const v = ((b[q + k]! >> shift) & 3) - (b[o + k]! & m ? 0 : 4);
            y[out++] = f(dl * v);
          }
        }
        m <<= 1;
      }
    }
  }
};

/** Scale and min of sub-block j from Q4_K/Q5_K's 12 packed bytes at `s` (ggml's get_scale_min_k4). */
function scaleMin(b: Uint8Array, s: number, j: number): [number, number] {
  if (j < 4) return [b[s + j]! & 63, b[s + j + 4]! & 63];
  return [(b[s + j + 4]! & 15) | ((b[s + j - 4]! >> 6) << 4), (b[s + j + 4]! >> 4) | ((b[s + j]! >> 6) << 4)];
}

/** Q4_K (no high bits) and Q5_K (fifth bit from qh): 8 sub-blocks of 32 values, y = d·sc·q − dmin·m. */
function qk45(b: Uint8Array, nb: number, y: Float32Array, h: Float32Array, five: boolean): void {
  const size = five ? 176 : 144;
  for (let i = 0; i < nb; i++) {
    const o = i * size,
      d = halfAt(b, o, h),
      dmin = halfAt(b, o + 2, h),
      qh = o + 16,
      ql = five ? o + 48 : o + 16;
    let out = i * 256;
    for (let j = 0; j < 4; j++) {
      const [sc1, m1] = scaleMin(b, o + 4, 2 * j);
      const [sc2, m2] = scaleMin(b, o + 4, 2 * j + 1);
      const d1 = f(d * sc1),
        mm1 = f(dmin * m1),
        d2 = f(d * sc2),
        mm2 = f(dmin * m2);
      const q = ql + 32 * j;
      for (let l = 0; l < 32; l++) {
        const v = (b[q + l]! & 15) + (five && b[qh + l]! & (1 << (2 * j)) ? 16 : 0);
        y[out++] = f(f(d1 * v) - mm1);
      }
      for (let l = 0; l < 32; l++) {
        const v = (b[q + l]! >> 4) + (five && b[qh + l]! & (2 << (2 * j)) ? 16 : 0);
        y[out++] = f(f(d2 * v) - mm2);
      }
    }
  }
}

const q6_K: Dequant = (b, nb, y, h) => {
  for (let i = 0; i < nb; i++) {
    const o = i * 210,
      d = halfAt(b, o + 208, h);
    for (let n = 0; n < 2; n++) {
      const ql = o + 64 * n,
        qh = o + 128 + 32 * n,
        sc = o + 192 + 8 * n,
        out = i * 256 + 128 * n;
      const s = (k: number) => (b[sc + k]! << 24) >> 24; // int8 scale
      for (let l = 0; l < 32; l++) {
        const is = l >> 4,
          hb = b[qh + l]!;
        const q1 = ((b[ql + l]! & 15) | ((hb & 3) << 4)) - 32;
        const q2 = ((b[ql + l + 32]! & 15) | (((hb >> 2) & 3) << 4)) - 32;
        const q3 = ((b[ql + l]! >> 4) | (((hb >> 4) & 3) << 4)) - 32;
        const q4 = ((b[ql + l + 32]! >> 4) | (((hb >> 6) & 3) << 4)) - 32;
        y[out + l] = f(f(d * s(is)) * q1);
        y[out + l + 32] = f(f(d * s(is + 2)) * q2);
        y[out + l + 64] = f(f(d * s(is + 4)) * q3);
        y[out + l + 96] = f(f(d * s(is + 6)) * q4);
      }
    }
  }
};

const q8_K: Dequant = (b, nb, y) => {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  for (let i = 0; i < nb; i++) {
    const o = i * 292,
      d = dv.getFloat32(o, true);
    for (let j = 0; j < 256; j++) y[i * 256 + j] = f(((b[o + 4 + j]! << 24) >> 24) * d);
  }
};

/** Dequantizers by type name; F32/F16/BF16 are plain conversions. */
const DEQUANTIZERS: Record<string, Dequant> = {
  Q4_0: q4_0,
  Q4_1: q4_1,
  Q5_0: (b, nb, y, h) => q5(b, nb, y, h, false),
  Q5_1: (b, nb, y, h) => q5(b, nb, y, h, true),
  Q8_0: q8_0,
  Q2_K: q2_K,
  Q3_K: q3_K,
  Q4_K: (b, nb, y, h) => qk45(b, nb, y, h, false),
  Q5_K: (b, nb, y, h) => qk45(b, nb, y, h, true),
  Q6_K: q6_K,
  Q8_K: q8_K,
};

/** The type names `dequantize` accepts. */
export const DEQUANTIZABLE: readonly string[] = ['F32', 'F16', 'BF16', ...Object.keys(DEQUANTIZERS)];

/**
 * The `n` values stored in `bytes` as ggml type `type`, as float32, in storage order (ggml's ne[0] fastest).
 * Pure: reads only its arguments. Throws LK_UNSUPPORTED for a type it cannot read, LK_FILE_INVALID when the bytes
 * do not hold whole blocks of `n` values.
 */
export function dequantize(type: GgmlType, bytes: Uint8Array, n: number): Float32Array {
  if (!DEQUANTIZABLE.includes(type.name))
    throw new LorakitError(
      'LK_UNSUPPORTED',
      `ggml type ${type.name} cannot be dequantized; lorakit reads ${DEQUANTIZABLE.join(', ')}`,
    );
  if (n % type.blockSize !== 0 || bytes.length !== ggmlByteLength(type, n))
    throw new LorakitError(
      'LK_FILE_INVALID',
      `${n} values of ${type.name} need ` +
        `${n % type.blockSize === 0 ? ggmlByteLength(type, n) : `whole blocks of ${type.blockSize}`} bytes, ` +
        `found ${bytes.length}`,
    );
  const out = new Float32Array(n);
  if (type.name === 'F32') {
    new Uint8Array(out.buffer).set(bytes);
    return out;
  }
  if (type.name === 'F16' || type.name === 'BF16') {
    const bits = new Uint16Array(n);
    new Uint8Array(bits.buffer).set(bytes);
    if (type.name === 'F16') return f16ToF32(bits, out);
    const u = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) u[i] = bits[i]! << 16;
    return out;
  }
  DEQUANTIZERS[type.name]!(bytes, n / type.blockSize, out, halfTable());
  return out;
}

/**
 * `values` quantized to Q8_0 as ggml's reference quantizer does: per block of 32, d = max|x| / 127 (stored as f16),
 * q = round(x / d) (half away from zero), with 1/d computed in float32 from the unrounded d.
 */
export function quantizeQ8_0(values: Float32Array): Uint8Array {
  if (values.length % 32 !== 0)
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `quantizeQ8_0: expected a multiple of 32 values, found ${values.length}`,
    );
  const nb = values.length / 32;
  const out = new Uint8Array(nb * 34);
  for (let i = 0; i < nb; i++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(values[i * 32 + j]!));
    const d = f(amax / 127);
    const id = d ? f(1 / d) : 0;
    const bits = numberToF16Bits(d);
    out[i * 34] = bits & 255;
    out[i * 34 + 1] = bits >> 8;
    for (let j = 0; j < 32; j++) {
      const x = f(values[i * 32 + j]! * id);
      out[i * 34 + 2 + j] = (Math.sign(x) * Math.round(Math.abs(x))) & 255;
    }
  }
  return out;
}

/** `values` as BF16 bytes (round to nearest even), for completeness of the plain types. */
export function toBf16Bytes(values: Float32Array): Uint8Array {
  return new Uint8Array(f32ToBf16(values).buffer);
}
