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
import {
  backwardProduct,
  backwardRows,
  type BackwardWeight,
  type Graph,
  type InitData,
  type Int8Backward,
  int8RowsInputGrad,
  int8RowsMatMul,
  INT8_BACKWARD,
  type Tensor,
  vocabBackward,
} from '../graph/index.ts';
import {
  type FileSpan,
  INT8_ZERO,
  type Int8Weight,
  type QuantizedWeight,
  Q4_BLOCK,
  blockBits,
  dequantize,
} from './quantize.ts';

/** The graph tensors of one quantized weight, made once per graph and name. */
export interface QuantizedTensors {
  /** x [N, in] → x·W̃ᵀ [N, out] through the integer kernel (float32 only). */
  product(rows: Tensor): Tensor;
  /**
   * dY [N, out] → dY·W̃ [N, in]: the product's input gradient, as its rules give it (float32 only). `input`, the
   * rows the forward multiplied, lets an int8-rows product give its outlier columns in float, as its rules do.
   */
  inputGrad(rows: Tensor, input?: Tensor): Tensor;
  /** Rows `ids` [n] of the matrix inputGrad multiplies by, [n, in]: inputGrad of one-hot rows, without them. */
  inputRows(ids: Tensor): Tensor;
  /** W̃ in the stored layout ([out, in], or [in, out] for a Conv1D), as a float initializer made on first call. */
  dequantized(dtype: 'f32' | 'f64'): Tensor;
}

/** A file-backed initializer's data. */
const file = (f: FileSpan): InitData => ({ kind: 'file', ...f });

/**
 * How int8's forward product takes its input x:
 * - `float`: float x times the 8-bit weight blocks unpacked (MatMulNBits accuracy_level 0: no input rounding);
 * - `int8`: each 32-block of x quantized to int8, times the 8-bit blocks in integers (MatMulNBits level 4);
 * - `int8-rows`: each row of x quantized to int8, times the weight's per-output-channel int8 copy (the one the
 *   input gradient uses) through DynamicQuantizeMatMul, with the OUTLIER_COLUMNS largest input columns in float
 *   (graph/ops/quant.ts int8RowsMatMul).
 * Which is fastest depends on the CPU (bench/precision.ts and scratch timings at the step's shapes): on AVX2 alone
 * level 0 beat level 4 (108 against 142 ms per 2048³); with AVX-512 VNNI level 4 took 63 against level 0's 117, and
 * int8 codes through DynamicQuantizeMatMul ran at ~780 GOP/s against level 4's ~285 at [1024, 768]·[768, 3072].
 * q4 always takes `int8`.
 */
export type QuantInputs = 'float' | 'int8' | 'int8-rows';

/**
 * How the per-channel int8 codes that DynamicQuantizeMatMul multiplies by are stored: `u8` (code + 128, zero point
 * 128: ORT's U8U8 kernels) or `s8` (the code, zero point 0: its U8S8 kernels). The integer sums, so the products,
 * are the same; s8 runs ~2.5× faster where the CPU multiplies u8·s8 in int32 directly (x86 VNNI, AMX) and is wrong
 * elsewhere: AVX2's u8·s8 instruction saturates pair sums at 32767, which full ±127 codes reach (nn/quantize.ts).
 */
export type Int8Codes = 'u8' | 's8';

/**
 * How an output head's input gradient over the vocabulary runs with int8-rows kernels: `blocks` (graph/ops/quant.ts
 * VocabBackward: MatMulNBits, fast with VNNI), `residual` (VocabResidual: the rows rounded twice through
 * MatMulInteger, fast with AMX, where the blocks run 2–3× slower than float32) or `float` (a tied head's float
 * embedding, exact; an untied head has none and takes `residual`).
 */
export type VocabGrad = 'blocks' | 'residual' | 'float';

/** The integer kernels a quantized model's graphs use (chosen per CPU by kernelsFor, or by the caller). */
export interface QuantKernels {
  inputs: QuantInputs;
  codes: Int8Codes;
  /** Default `blocks`. */
  vocab?: VocabGrad;
}

/** The number of input columns int8-rows multiplies in float: 32 measured −0.01 % of SmolLM2's held-out loss. */
export const OUTLIER_COLUMNS = 32;

/** The x86 flags of integer dot products that accumulate u8·s8 in int32 (no AVX2 pair saturation). */
const X86_DOT = ['avx512_vnni', 'avx_vnni', 'amx_int8'];

/**
 * The faster kernels for a CPU with these /proc/cpuinfo flags: on x86 with VNNI or AMX, int8-rows over s8 codes;
 * on Arm with sdot (asimddp), int8 blocks (not measured there against int8-rows); else float inputs and u8 codes. The
 * head's vocabulary gradient: residual rows with AMX, blocks elsewhere (VocabGrad).
 */
export function kernelsFor(features: ReadonlySet<string>): QuantKernels {
  if (features.has('amx_int8')) return { inputs: 'int8-rows', codes: 's8', vocab: 'residual' };
  if (X86_DOT.some((f) => features.has(f))) return { inputs: 'int8-rows', codes: 's8', vocab: 'blocks' };
  return { inputs: features.has('asimddp') ? 'int8' : 'float', codes: 'u8', vocab: 'blocks' };
}

/**
 * The stored bytes of int8 codes [rows, cols], transposed to [cols, rows] when asked: code + INT8_ZERO (u8), or the
 * codes' own two's-complement bytes (s8).
 */
export function int8Bytes(
  q: Int8Array,
  rows: number,
  cols: number,
  transpose: boolean,
  codes: Int8Codes = 'u8',
): Uint8Array {
  const t = new Uint8Array(q.length);
  const flip = codes === 'u8' ? 0x80 : 0;
  if (!transpose) {
    // code + 128 as a byte is the code's two's-complement byte with its top bit flipped: XOR 0x80, four bytes at once
    t.set(new Uint8Array(q.buffer, q.byteOffset, q.length));
    if (flip === 0) return t;
    const words = new Uint32Array(t.buffer, 0, t.length >> 2);
    for (let k = 0; k < words.length; k++) words[k] ^= 0x80808080;
    for (let k = words.length << 2; k < t.length; k++) t[k] ^= 0x80;
  } else {
    const src = new Uint8Array(q.buffer, q.byteOffset, q.length);
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[c * rows + r] = src[r * cols + c] ^ flip;
  }
  return t;
}

/** The zero point of codes stored as `codes`. */
const zeroOf = (g: Graph, codes: Int8Codes): Tensor => (codes === 'u8' ? g.scalar(INT8_ZERO, 'u8') : g.scalar(0, 'i8'));

/**
 * The codes of `w` as an initializer stored as `codes`, [out, in] or transposed [in, out]: the cache file's bytes
 * when it holds that layout in that storage (the graph references them, ORT memory-maps them), else made here.
 */
function int8Codes(g: Graph, name: string, w: Int8Weight, layout: 'outIn' | 'inOut', codes: Int8Codes): Tensor {
  const st = w.stored;
  const span = layout === 'outIn' ? st?.codesOutIn : st?.codesInOut;
  const shape = layout === 'outIn' ? [w.out, w.in] : [w.in, w.out];
  if (span && (st?.signed === true) === (codes === 's8'))
    return g.initializer(name, codes === 'u8' ? 'u8' : 'i8', shape, file(span));
  const b = int8Bytes(w.q, w.out, w.in, layout === 'inOut', codes);
  return codes === 'u8'
    ? g.initializer(name, 'u8', shape, b)
    : g.initializer(name, 'i8', shape, new Int8Array(b.buffer));
}

/** Transposes a row-major [rows, cols] float matrix into `out`'s array type. */
function transposeFloat<A extends Float32Array | Float64Array>(w: Float32Array, rows: number, cols: number, out: A): A {
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = w[r * cols + c];
  return out;
}

/**
 * Initializers of `q` in graph `g`, named `<name>.…`. `fanInFanOut` says the layer stores W as [in, out] (GPT-2
 * Conv1D); q itself is always [out, in]. An output head's input gradient runs over the vocabulary (`head.vocab`),
 * where a grid per row drops the small probabilities: with int8-rows kernels (VNNI, AMX) it multiplies by the codes
 * as blocks over the vocabulary (graph/ops/quant.ts VocabBackward); elsewhere by `head.float`, a float W [out, in]
 * the graph holds anyway (a tied head's embedding; FloatBackward), when there is one.
 */
export function quantizedTensors(
  g: Graph,
  name: string,
  q: QuantizedWeight,
  fanInFanOut: boolean,
  kernels: QuantKernels = { inputs: 'float', codes: 'u8' },
  head: { float?: Tensor; vocab?: boolean } = {},
): QuantizedTensors {
  const { out, in: inF } = q;
  const floatBackward = head.float;
  const vocab = head.vocab === true && kernels.inputs === 'int8-rows' && !(kernels.vocab === 'float' && floatBackward);
  // the vocabulary's gradient from the codes the forward multiplies by (b [K, N]) or their [N, K] copy (back)
  const vocabOf = (b: Tensor, back: Int8Backward): BackwardWeight =>
    kernels.vocab === 'blocks' || kernels.vocab === undefined
      ? vocabBackward(b, back.zero, back.scale)
      : { residual: back };
  const backOr = (int8: Int8Backward): BackwardWeight => (floatBackward ? { float: floatBackward } : int8);
  // `rows`: the codes, scales and zero point of an int8-rows product, whose input gradient takes the forward's
  // outlier columns in float (not with a float backward: that multiplies every column in float already)
  const tensorsOf = (
    product: (rows: Tensor) => Tensor,
    back: BackwardWeight,
    rows?: { b: Tensor; s: Tensor; zero: Tensor },
  ): QuantizedTensors => ({
    product,
    inputGrad: (dy, input) =>
      rows && input && 'weight' in back
        ? int8RowsInputGrad(dy, input, rows.b, rows.s, rows.zero, back, OUTLIER_COLUMNS)
        : backwardProduct(dy, back),
    inputRows: (ids) => backwardRows(back, ids),
    dequantized: dequantizedOf(g, name, q, fanInFanOut),
  });
  let product: (rows: Tensor) => Tensor;
  let backward: BackwardWeight;
  if (q.kind === 'int8') {
    // DynamicQuantizeMatMul multiplies by B [K, N] = [in, out]: the codes transposed once here, on the host, or
    // already transposed in the cache file, which the graph then references (no bytes pass through JavaScript)
    const b = int8Codes(g, `${name}.int8`, q, 'inOut', kernels.codes);
    const s = g.initializer(`${name}.scale`, 'f32', [out], q.stored ? file(q.stored.scale) : q.scale);
    const zero = zeroOf(g, kernels.codes);
    // the input gradient's [out, in] codes: from the file too, rather than a transpose ORT would fold at load
    const back = int8Codes(g, `${name}.int8_back`, q, 'outIn', kernels.codes);
    const int8 = { weight: back, scale: s, zero };
    backward = g.memo(INT8_BACKWARD, b, () => (vocab ? vocabOf(b, int8) : backOr(int8)));
    product = (rows) => int8RowsMatMul(rows, b, s, zero, OUTLIER_COLUMNS); // [N, out]
    return tensorsOf(product, backward, { b, s, zero });
  } else {
    const nb = Math.ceil(inF / Q4_BLOCK);
    const bits = blockBits(q.kind);
    const [st, bst] = [q.stored, q.back.stored];
    const k = q.kind;
    const b = g.initializer(`${name}.${k}`, 'u8', [out, nb, (Q4_BLOCK * bits) / 8], st ? file(st.blocks) : q.blocks);
    const s = g.initializer(`${name}.${k}_scale`, 'f32', [out * nb], st ? file(st.scales) : q.scales);
    const back = {
      weight: int8Codes(g, `${name}.${k}_back`, q.back, 'outIn', kernels.codes), // [K, N] of dY·W̃
      scale: g.initializer(`${name}.${k}_back_scale`, 'f32', [out], bst ? file(bst.scale) : q.back.scale),
      zero: zeroOf(g, kernels.codes),
    };
    if (bits === 8 && kernels.inputs === 'int8-rows') {
      // the forward multiplies by the same per-channel codes, [in, out]; the blocks stay unread in the cache file
      const fwd = int8Codes(g, `${name}.${k}_back_t`, q.back, 'inOut', kernels.codes);
      backward = g.memo(INT8_BACKWARD, fwd, () => (vocab ? vocabOf(fwd, back) : backOr(back)));
      product = (rows) => int8RowsMatMul(rows, fwd, back.scale, back.zero, OUTLIER_COLUMNS); // [N, out]
      return tensorsOf(product, backward, { b: fwd, s: back.scale, zero: back.zero });
    }
    backward = g.memo(INT8_BACKWARD, b, () => backOr(back));
    // accuracy_level 4 (q4, and q8 with int8 inputs): the kernel quantizes each 32-block of the input to int8 and
    // multiplies in integers; level 0 (q8 with float inputs): weight blocks unpacked to float (QuantInputs says
    // which is faster where). With no zero point given, MatMulNBits' codes are offset by 2^(bits−1): 8 for q4, 128
    // for q8.
    const level = bits === 8 && kernels.inputs === 'float' ? 0 : 4;
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
  return tensorsOf(product, backward);
}

/** W̃ as a float initializer in the stored layout, made on the first call per dtype (QuantizedTensors.dequantized). */
function dequantizedOf(
  g: Graph,
  name: string,
  q: QuantizedWeight,
  fanInFanOut: boolean,
): QuantizedTensors['dequantized'] {
  const { out, in: inF } = q;
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
  return dequantized;
}
