/**
 * A frozen Linear whose weight is quantized (quantize.ts): its forward x·W̃ᵀ is one integer product
 * (MatMulNBits for 8-bit and 4-bit blocks, DynamicQuantizeMatMul for per-row int8), and the autodiff gives dY·W̃
 * through the ops' own rules, also as integer products (graph/ops/quant.ts). No float copy of W̃ is in the graph,
 * unless an adapter method reads the base weight itself (DoRA's column norms): `weight` then makes one, lazily.
 * Float64 graphs (gradient checks) multiply by W̃ in float64 instead: the integer kernels are float32 only, and the
 * reference a check compares with is the function of W̃.
 * A weight read from the quantized-weight cache (`stored` spans) becomes file-backed initializers: the graph names
 * the cache file's bytes, which ORT memory-maps, instead of carrying a copy of the codes.
 * Not here: host quantization (quantize.ts), the choice of layers (models/quantize.ts), the cache
 * (models/quant-cache.ts).
 */
import { type Graph, type InitData, NBITS_BACKWARD, type Tensor, rowQuantizedMatMul } from '../graph/index.ts';
import { type FileSpan, INT8_ZERO, type QuantizedWeight, Q4_BLOCK, blockBits, dequantize } from './quantize.ts';

/** The graph tensors of one quantized weight, made once per graph and name. */
export interface QuantizedTensors {
  /** x [N, in] → x·W̃ᵀ [N, out] through the integer kernel (float32 only). */
  product(rows: Tensor): Tensor;
  /** W̃ in the stored layout ([out, in], or [in, out] for a Conv1D), as a float initializer made on first call. */
  dequantized(dtype: 'f32' | 'f64'): Tensor;
}

/** A file-backed initializer's data. */
const file = (f: FileSpan): InitData => ({ kind: 'file', ...f });

/**
 * How an 8-bit block product takes its input x: `float` multiplies float x by the unpacked blocks (MatMulNBits
 * accuracy_level 0: no input rounding), `int8` quantizes each 32-block of x to int8 and multiplies in integers
 * (level 4). Which is faster depends on the CPU: bench/precision.ts measured level 4 at 142 against level 0's
 * 108 ms per 2048³ product on AVX2 alone, and 63 against 117 ms with AVX-512 VNNI. q4 always takes `int8`.
 */
export type QuantInputs = 'float' | 'int8';

/**
 * The faster QuantInputs for a CPU with these /proc/cpuinfo flags: `int8` where it has integer dot-product
 * instructions that ORT's block kernels use (x86 VNNI or AMX, Arm's sdot), else `float`.
 */
export function quantInputsFor(features: ReadonlySet<string>): QuantInputs {
  const dot = ['avx512_vnni', 'avx_vnni', 'amx_int8', 'asimddp'];
  return dot.some((f) => features.has(f)) ? 'int8' : 'float';
}

/** The stored bytes of int8 codes [rows, cols] (code + INT8_ZERO), transposed to [cols, rows] when asked. */
export function int8Bytes(q: Int8Array, rows: number, cols: number, transpose: boolean): Uint8Array {
  const t = new Uint8Array(q.length);
  if (!transpose) {
    // code + 128 as a byte is the code's two's-complement byte with its top bit flipped: XOR 0x80, four bytes at once
    t.set(new Uint8Array(q.buffer, q.byteOffset, q.length));
    const words = new Uint32Array(t.buffer, 0, t.length >> 2);
    for (let k = 0; k < words.length; k++) words[k] ^= 0x80808080;
    for (let k = words.length << 2; k < t.length; k++) t[k] ^= 0x80;
  } else for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[c * rows + r] = q[r * cols + c] + INT8_ZERO;
  return t;
}

/** Transposes a row-major [rows, cols] float matrix into `out`'s array type. */
function transposeFloat<A extends Float32Array | Float64Array>(w: Float32Array, rows: number, cols: number, out: A): A {
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = w[r * cols + c];
  return out;
}

/**
 * Initializers of `q` in graph `g`, named `<name>.…`. `fanInFanOut` says the layer stores W as [in, out] (GPT-2
 * Conv1D); q itself is always [out, in].
 */
export function quantizedTensors(
  g: Graph,
  name: string,
  q: QuantizedWeight,
  fanInFanOut: boolean,
  inputs: QuantInputs = 'float',
): QuantizedTensors {
  const { out, in: inF } = q;
  let product: (rows: Tensor) => Tensor;
  const zero = g.initializer(`${name}.zero`, 'u8', [], new Uint8Array([INT8_ZERO]));
  if (q.kind === 'int8') {
    // DynamicQuantizeMatMul multiplies by B [K, N] = [in, out]: the codes transposed once here, on the host, or
    // already transposed in the cache file, which the graph then references (no bytes pass through JavaScript)
    const st = q.stored;
    const b = g.initializer(
      `${name}.int8`,
      'u8',
      [inF, out],
      st?.codesInOut ? file(st.codesInOut) : int8Bytes(q.q, out, inF, true),
    );
    const s = g.initializer(`${name}.scale`, 'f32', [out], st ? file(st.scale) : q.scale);
    product = (rows) => rowQuantizedMatMul(rows, b, s, zero); // [N, out]
  } else {
    const nb = Math.ceil(inF / Q4_BLOCK);
    const bits = blockBits(q.kind);
    const [st, bst] = [q.stored, q.back.stored];
    const k = q.kind;
    const b = g.initializer(`${name}.${k}`, 'u8', [out, nb, (Q4_BLOCK * bits) / 8], st ? file(st.blocks) : q.blocks);
    const s = g.initializer(`${name}.${k}_scale`, 'f32', [out * nb], st ? file(st.scales) : q.scales);
    const backCodes = bst?.codesOutIn ? file(bst.codesOutIn) : int8Bytes(q.back.q, out, inF, false);
    const back = {
      // [K, N] of dY·W̃: as stored
      weight: g.initializer(`${name}.${k}_back`, 'u8', [out, inF], backCodes),
      scale: g.initializer(`${name}.${k}_back_scale`, 'f32', [out], bst ? file(bst.scale) : q.back.scale),
      zero,
    };
    g.memo(NBITS_BACKWARD, b, () => back);
    // accuracy_level 4 (q4, and q8 with int8 inputs): the kernel quantizes each 32-block of the input to int8 and
    // multiplies in integers; level 0 (q8 with float inputs): weight blocks unpacked to float (QuantInputs says
    // which is faster where). With no zero point given, MatMulNBits' codes are offset by 2^(bits−1): 8 for q4, 128
    // for q8.
    const level = bits === 8 && inputs === 'float' ? 0 : 4;
    const attrs = { K: inF, N: out, bits, block_size: Q4_BLOCK, accuracy_level: level };
    const codes = (rows: Tensor) => g.op('MatMulNBits', [rows, b, s], attrs); // [N, out]
    const offsets = st?.offsets ? file(st.offsets) : q.offsets;
    if (!offsets) product = codes;
    else {
      // W̃ = (code − 8)·d + offset per block: x·W̃ᵀ = MatMulNBits(x) + (block sums of x)·offsetᵀ, a float product
      // 1/32 the size of the main one. Detached: the input gradient dY·W̃ comes whole from the backward copy.
      const off = g.initializer(`${name}.${k}_offset`, 'f32', [out, nb], offsets).transpose([1, 0]); // [nb, out]
      product = (rows) => codes(rows).add(rows.detach().reshape([-1, nb, Q4_BLOCK]).sum(2).matmul(off)); // [N, out]
    }
  }
  const made = new Map<string, Tensor>();
  const dequantized = (dtype: 'f32' | 'f64'): Tensor => {
    let t = made.get(dtype);
    if (!t) {
      const w = dequantize(q); // [out, in]
      const arr = dtype === 'f64' ? new Float64Array(w.length) : new Float32Array(w.length);
      if (fanInFanOut) transposeFloat(w, out, inF, arr);
      else arr.set(w);
      t = g.initializer(`${name}.dequantized_${dtype}`, dtype, fanInFanOut ? [inF, out] : [out, inF], arr);
      made.set(dtype, t);
    }
    return t;
  };
  return { product, dequantized };
}
