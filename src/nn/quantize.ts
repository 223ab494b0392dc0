/**
 * Quantizing frozen Linear weights on the host, for training adapters on a quantized base (QLoRA-style): int8 with
 * one scale per output channel, or 4-bit blocks of 32 along the input (the Q4_0 layout of ggml/GGUF: one scale per
 * block, codes 0..15 standing for (q − 8)·d). Each result says exactly which matrix W̃ the graph multiplies by
 * (`dequantize`), so tests and the float64 reference use the same W̃ the integer kernels use.
 * Not here: the graph side (quant-linear.ts, graph/ops/quant.ts), which layers are quantized (models/quantize.ts).
 */
import { LorakitError } from '../errors.ts';
import { f16BitsToNumber, numberToF16Bits } from '../io/index.ts';

/** The quantization of a frozen base: none, int8 per output channel, or 4-bit blocks (Q4_0-like). */
export type QuantMode = 'none' | 'int8' | 'q4';

/** Weights per 4-bit block, as in GGUF's Q4_0/Q4_1 and ORT's MatMulNBits block_size. */
export const Q4_BLOCK = 32;

/**
 * Largest int8 code. 64, not 127: on x86 CPUs without VNNI (AVX2, AVX-512F) MLAS multiplies uint8 activations by
 * int8 weights with vpmaddubsw, which saturates each pair sum a₀b₀ + a₁b₁ at 32767; 255·127·2 overflows it,
 * 255·64·2 = 32640 does not. test/graph/ops/quant.test.ts failed its error bound with 127 on such a CPU. ORT's own
 * quantizer offers the same remedy (reduce_range). The cost: the weights' step doubles (error ≤ max|W_o|/128).
 */
export const INT8_LEVELS = 64;

/** A byte range of a file: where a graph initializer reads its bytes (ORT memory-maps them). */
export interface FileSpan {
  path: string;
  offset: number;
  length: number;
}

/**
 * Where the arrays of a weight already lie in a file (the quantized-weight cache, models/quant-cache.ts), in the
 * layouts the graph multiplies by: a graph then references these bytes instead of copying the arrays into the model.
 */
export interface StoredInt8 {
  /** i8 [in, out]: the codes transposed, as a layer's forward product reads them (its own int8 weight). */
  codesInOut?: FileSpan;
  /** i8 [out, in]: the codes as stored in `q`, as a 4-bit layer's backward copy is read. */
  codesOutIn?: FileSpan;
  /** f32 [out]. */
  scale: FileSpan;
}

/** W̃[o, i] = scale[o]·q[o, i]: symmetric int8 per output channel, codes in [−INT8_LEVELS, INT8_LEVELS]. */
export interface Int8Weight {
  kind: 'int8';
  out: number;
  in: number;
  /** i8 [out, in], in [−INT8_LEVELS, INT8_LEVELS]. */
  q: Int8Array;
  /** f32 [out]: max_i |W[o, i]| / INT8_LEVELS (0 for an all-zero row). */
  scale: Float32Array;
  /** Set when the arrays come from a file (then read from it only when a caller touches them). */
  stored?: StoredInt8;
}

/**
 * W̃[o, i] = (code − 8)·d[o, ⌊i/32⌋]: 4-bit codes in blocks of 32 along `in` (the last block zero-padded), laid out
 * as ORT's MatMulNBits reads them — byte j of a block holds element 2j (low nibble) and 2j+1 (high nibble). GGUF's
 * Q4_0 holds the same codes and the same f16 scale per block, but puts element j and j+16 in byte j: feeding a GGUF
 * block means reordering nibbles, not requantizing. `back` is W̃ requantized to int8 per output channel: the input
 * gradient multiplies by it (MatMulNBits has no transposed form).
 */
export interface Q4Weight {
  kind: 'q4';
  out: number;
  in: number;
  /** u8 [out, blocks, 16]. */
  blocks: Uint8Array;
  /** f32 [out·blocks]: each block's d, rounded to float16 as GGUF stores it. */
  scales: Float32Array;
  back: Int8Weight;
  /** Set when the arrays come from a file, as for Int8Weight. */
  stored?: { blocks: FileSpan; scales: FileSpan };
}

/** A quantized Linear weight. */
export type QuantizedWeight = Int8Weight | Q4Weight;

/** Symmetric int8 per output channel of W [out, in] (row-major): |W − W̃| ≤ scale[o]/2 elementwise. */
export function quantizeInt8(w: Float32Array, out: number, inF: number): Int8Weight {
  checkSize(w, out, inF);
  const q = new Int8Array(out * inF);
  const scale = new Float32Array(out);
  for (let o = 0; o < out; o++) {
    let m = 0;
    for (let i = 0; i < inF; i++) m = Math.max(m, Math.abs(w[o * inF + i]));
    const s = Math.fround(m / INT8_LEVELS);
    scale[o] = s;
    if (s === 0) continue;
    const L = INT8_LEVELS;
    for (let i = 0; i < inF; i++) q[o * inF + i] = Math.max(-L, Math.min(L, Math.round(w[o * inF + i] / s)));
  }
  return { kind: 'int8', out, in: inF, q, scale };
}

/**
 * Q4_0 of W [out, in] as ggml's quantize_row_q4_0 computes it: per block, m is the entry of largest magnitude
 * (sign kept), d = m / −8, code = min(15, ⌊w/d + 8.5⌋). So |W − W̃| ≤ |d|/2, except entries of the sign opposite
 * to m, which clamp at code 15 (+7·d) and err by up to |d|; d is rounded to float16 first (GGUF's storage).
 */
export function quantizeQ4(w: Float32Array, out: number, inF: number): Q4Weight {
  checkSize(w, out, inF);
  const nb = Math.ceil(inF / Q4_BLOCK);
  const blocks = new Uint8Array(out * nb * (Q4_BLOCK / 2));
  const scales = new Float32Array(out * nb);
  const codes = new Uint8Array(Q4_BLOCK);
  for (let o = 0; o < out; o++) {
    for (let b = 0; b < nb; b++) {
      const start = o * inF + b * Q4_BLOCK;
      const len = Math.min(Q4_BLOCK, inF - b * Q4_BLOCK);
      let m = 0;
      for (let j = 0; j < len; j++) if (Math.abs(w[start + j]) > Math.abs(m)) m = w[start + j];
      const d = f16BitsToNumber(numberToF16Bits(m / -8));
      const id = d === 0 ? 0 : 1 / d;
      codes.fill(8); // padding and all-zero blocks: code 8 is exactly 0
      for (let j = 0; j < len; j++) codes[j] = Math.min(15, Math.max(0, Math.floor(w[start + j] * id + 8.5)));
      scales[o * nb + b] = d;
      const at = (o * nb + b) * (Q4_BLOCK / 2);
      for (let j = 0; j < Q4_BLOCK / 2; j++) blocks[at + j] = codes[2 * j] | (codes[2 * j + 1] << 4);
    }
  }
  const back = quantizeInt8(dequantizeQ4(blocks, scales, out, inF), out, inF);
  return { kind: 'q4', out, in: inF, blocks, scales, back };
}

/** W̃ [out, in], the matrix the quantized product multiplies by (for q4: the forward's; its backward uses `back`). */
export function dequantize(q: QuantizedWeight): Float32Array {
  if (q.kind === 'int8') {
    const w = new Float32Array(q.out * q.in);
    for (let o = 0; o < q.out; o++) for (let i = 0; i < q.in; i++) w[o * q.in + i] = q.scale[o] * q.q[o * q.in + i];
    return w;
  }
  return dequantizeQ4(q.blocks, q.scales, q.out, q.in);
}

/** W̃ [out, in] of 4-bit blocks laid out as Q4Weight says. */
function dequantizeQ4(blocks: Uint8Array, scales: Float32Array, out: number, inF: number): Float32Array {
  const w = new Float32Array(out * inF);
  const nb = Math.ceil(inF / Q4_BLOCK);
  for (let o = 0; o < out; o++) {
    for (let i = 0; i < inF; i++) {
      const b = Math.floor(i / Q4_BLOCK);
      const j = i % Q4_BLOCK;
      const byte = blocks[(o * nb + b) * (Q4_BLOCK / 2) + (j >> 1)];
      const code = j & 1 ? byte >> 4 : byte & 15;
      w[o * inF + i] = (code - 8) * scales[o * nb + b];
    }
  }
  return w;
}

/** Quantizes W [out, in] in `mode` ('none' is not a quantization). */
export function quantizeWeight(w: Float32Array, out: number, inF: number, mode: Exclude<QuantMode, 'none'>) {
  return mode === 'int8' ? quantizeInt8(w, out, inF) : quantizeQ4(w, out, inF);
}

/** Bytes the quantized weight occupies (codes and scales; for q4 with its int8 backward copy). From the sizes alone,
 * so a weight read lazily from a file stays unread. */
export function quantizedBytes(q: QuantizedWeight): number {
  if (q.kind === 'int8') return q.out * q.in + 4 * q.out;
  const nb = Math.ceil(q.in / Q4_BLOCK);
  return q.out * nb * (Q4_BLOCK / 2) + 4 * q.out * nb + quantizedBytes(q.back);
}

function checkSize(w: Float32Array, out: number, inF: number): void {
  if (w.length !== out * inF || out <= 0 || inF <= 0)
    throw new LorakitError(
      'LK_SHAPE_MISMATCH',
      `quantize: a [${out}, ${inF}] weight needs ${out * inF} values, got ${w.length}`,
    );
}
