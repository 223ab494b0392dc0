/**
 * Quantizing frozen Linear weights on the host, for training adapters on a quantized base (QLoRA-style): 8-bit or
 * 4-bit blocks of 32 along the input (the Q8_0 / Q4_0 layouts of ggml/GGUF: one scale per block), and int8 with one
 * scale per output channel (the blocks' backward copies). Each result says exactly which matrix W̃ the graph
 * multiplies by (`dequantize`), so tests and the float64 reference use the same W̃ the integer kernels use.
 * Not here: the graph side (quant-linear.ts, graph/ops/quant.ts), which layers are quantized (models/quantize.ts).
 */
import { LorakitError } from '../errors.ts';
import { f16BitsToNumber, numberToF16Bits } from '../io/index.ts';

/** The quantization of a frozen base: none, int8 (8-bit blocks, Q8_0-like) or q4 (4-bit blocks, Q4_0-like). */
export type QuantMode = 'none' | 'int8' | 'q4';

/** Weights per 4-bit block, as in GGUF's Q4_0/Q4_1 and ORT's MatMulNBits block_size. */
export const Q4_BLOCK = 32;

/**
 * Largest int8 code: the full symmetric range. The graph stores code + 128 as uint8 with zero point 128, so that
 * ORT multiplies uint8 activations by uint8 weights (MLAS's U8U8 kernels, which widen to 16 bits and add in 32): the
 * uint8 × int8 kernel of x86 CPUs without VNNI (AVX2, AVX-512F) adds products in pairs with vpmaddubsw, which
 * saturates at 32767, and 255·127·2 overflows it. The earlier remedy, codes in [−64, 64], doubled the weights' step
 * and cost real models (SmolLM2) more than the activations' rounding; docs/quantization.md has the measurements.
 */
export const INT8_LEVELS = 127;

/** The uint8 zero point of stored int8 codes: byte = code + INT8_ZERO (nn/quant-linear.ts, the cache). */
export const INT8_ZERO = 128;

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
  /** [in, out]: the codes transposed, as a forward product through DynamicQuantizeMatMul reads them. */
  codesInOut?: FileSpan;
  /** [out, in]: the codes in `q`'s order, as an input gradient reads them. */
  codesOutIn?: FileSpan;
  /** The spans hold the codes' own bytes (int8); else code + INT8_ZERO (uint8). */
  signed?: boolean;
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
 * Weights in blocks of 32 along `in` (the last block zero-padded), one float scale per block, laid out as ORT's
 * MatMulNBits reads them, with `back`, W̃ requantized to int8 per output channel: the input gradient multiplies by it
 * (MatMulNBits has no transposed form).
 * - q4: W̃[o, i] = (code − 8)·d[o, ⌊i/32⌋], 4-bit codes, 16 bytes a block: byte j holds element 2j (low nibble) and
 *   2j+1 (high nibble). GGUF's Q4_0 holds the same codes and the same f16 scale per block, but puts element j and
 *   j+16 in byte j: feeding a GGUF block means reordering nibbles, not requantizing.
 * - q8: W̃[o, i] = (byte − 128)·d[o, ⌊i/32⌋], codes in [−127, 127], 32 bytes a block (GGUF's Q8_0 with the codes
 *   offset by 128). The int8 mode's forward: MatMulNBits quantizes the input per 32-block too, so an outlier
 *   activation coarsens its own block only, where a per-row grid lets it coarsen the whole row.
 */
export interface BlockWeight<K extends 'q4' | 'q8' = 'q4' | 'q8'> {
  kind: K;
  out: number;
  in: number;
  /** u8 [out, blocks, 32·bits/8]. */
  blocks: Uint8Array;
  /** f32 [out·blocks]: each block's d (for q4 rounded to float16, as GGUF stores it). */
  scales: Float32Array;
  /**
   * f32 [out·blocks], when set: a constant added to each block's entries, W̃ = (code − 8)·d + offset (a GGUF Q4_1
   * block's m + 8d, models/gguf-blocks.ts); the graph adds it as (block sums of x)·offsetᵀ.
   */
  offsets?: Float32Array;
  back: Int8Weight;
  /** Set when the arrays come from a file, as for Int8Weight. */
  stored?: { blocks: FileSpan; scales: FileSpan; offsets?: FileSpan };
}

/** 4-bit blocks (Q4_0-like); see BlockWeight. */
export type Q4Weight = BlockWeight<'q4'>;

/** 8-bit blocks (Q8_0-like): the int8 mode's weights; see BlockWeight. */
export type Q8Weight = BlockWeight<'q8'>;

/** Bits per code of a block weight. */
export const blockBits = (kind: 'q4' | 'q8'): 4 | 8 => (kind === 'q4' ? 4 : 8);

/** A quantized Linear weight. */
export type QuantizedWeight = Int8Weight | BlockWeight;

/**
 * Math.round for the quotients the quantizers round (w / d of two float32 values, stored as integer codes), without
 * its sign handling: ⌊x + ½⌋ is Math.round(x) for every double but 0.5 − 2⁻⁵⁴, where x + ½ rounds up to 1 (a quotient
 * of two float32 values is never that close to ½ without being ½), and gives 0 where Math.round gives −0 (the same
 * code once stored). test/nn/quantize-fast.test.ts checks both against the quantizers' previous Math.round.
 */
export const roundHalfUp = (x: number): number => Math.floor(x + 0.5);

/** Symmetric int8 per output channel of W [out, in] (row-major): |W − W̃| ≤ scale[o]/2 elementwise. */
export function quantizeInt8(w: Float32Array, out: number, inF: number): Int8Weight {
  checkSize(w, out, inF);
  const q = new Int8Array(out * inF);
  const scale = new Float32Array(out);
  for (let o = 0; o < out; o++) scale[o] = quantizeInt8Row(w.subarray(o * inF, (o + 1) * inF), q, o * inF);
  return { kind: 'int8', out, in: inF, q, scale };
}

/** Row `w` of a weight quantized to int8 into q[at …]: returns its scale max|w| / INT8_LEVELS (0: codes left 0). */
function quantizeInt8Row(w: Float32Array, q: Int8Array, at: number): number {
  let m = 0;
  for (let i = 0; i < w.length; i++) m = Math.max(m, Math.abs(w[i])); // Math.max: a NaN weight gives a NaN scale
  const s = Math.fround(m / INT8_LEVELS);
  if (s === 0) return s;
  const L = INT8_LEVELS;
  for (let i = 0; i < w.length; i++) {
    const c = roundHalfUp(w[i] / s);
    q[at + i] = Math.max(-L, Math.min(L, c));
  }
  return s;
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
  return blockWeight('q4', out, inF, blocks, scales) as Q4Weight;
}

/**
 * Symmetric 8-bit blocks of 32 along `in` (Q8_0's rounding with a float32 scale): d = max|w|/127 per block, code =
 * round(w/d), so |W − W̃| ≤ d/2 elementwise, d being at most the row's int8 scale (a block's max is at most the row's).
 */
export function quantizeQ8(w: Float32Array, out: number, inF: number): Q8Weight {
  checkSize(w, out, inF);
  const nb = Math.ceil(inF / Q4_BLOCK);
  const blocks = new Uint8Array(out * nb * Q4_BLOCK).fill(INT8_ZERO); // padding: code 0
  const scales = new Float32Array(out * nb);
  for (let o = 0; o < out; o++) {
    for (let b = 0; b < nb; b++) {
      const start = o * inF + b * Q4_BLOCK;
      const len = Math.min(Q4_BLOCK, inF - b * Q4_BLOCK);
      let m = 0;
      for (let j = 0; j < len; j++) m = Math.max(m, Math.abs(w[start + j]));
      const d = Math.fround(m / INT8_LEVELS);
      scales[o * nb + b] = d;
      if (d === 0) continue;
      const at = (o * nb + b) * Q4_BLOCK;
      const L = INT8_LEVELS;
      for (let j = 0; j < len; j++) {
        const c = roundHalfUp(w[start + j] / d);
        blocks[at + j] = Math.max(-L, Math.min(L, c)) + INT8_ZERO;
      }
    }
  }
  return blockWeight('q8', out, inF, blocks, scales) as Q8Weight;
}

/** W̃ [out, in], the matrix the quantized product multiplies by (for q4: the forward's; its backward uses `back`). */
export function dequantize(q: QuantizedWeight): Float32Array {
  if (q.kind === 'int8') {
    const w = new Float32Array(q.out * q.in);
    for (let o = 0; o < q.out; o++) for (let i = 0; i < q.in; i++) w[o * q.in + i] = q.scale[o] * q.q[o * q.in + i];
    return w;
  }
  return dequantizeBlocks(q.kind, q.blocks, q.scales, q.out, q.in, q.offsets);
}

/** A BlockWeight of the given arrays, with its backward copy: W̃ requantized to int8 per output channel. */
export function blockWeight(
  kind: 'q4' | 'q8',
  out: number,
  inF: number,
  blocks: Uint8Array,
  scales: Float32Array,
  offsets?: Float32Array,
): BlockWeight {
  // W̃ requantized row by row (one decoded row at a time, never the whole float matrix)
  const q = new Int8Array(out * inF);
  const scale = new Float32Array(out);
  const row = new Float32Array(inF);
  for (let o = 0; o < out; o++) {
    decodeRow(kind, blocks, scales, offsets, o, row);
    scale[o] = quantizeInt8Row(row, q, o * inF);
  }
  const back: Int8Weight = { kind: 'int8', out, in: inF, q, scale };
  return { kind, out, in: inF, blocks, scales, ...(offsets ? { offsets } : {}), back };
}

/** W̃ [out, in] of blocks laid out as BlockWeight says. */
function dequantizeBlocks(
  kind: 'q4' | 'q8',
  blocks: Uint8Array,
  scales: Float32Array,
  out: number,
  inF: number,
  offsets?: Float32Array,
): Float32Array {
  const w = new Float32Array(out * inF);
  for (let o = 0; o < out; o++) decodeRow(kind, blocks, scales, offsets, o, w.subarray(o * inF, (o + 1) * inF));
  return w;
}

/** Row o of W̃ (its `row.length` entries) of blocks laid out as BlockWeight says: code·d (+ offset) per entry. */
function decodeRow(
  kind: 'q4' | 'q8',
  blocks: Uint8Array,
  scales: Float32Array,
  offsets: Float32Array | undefined,
  o: number,
  row: Float32Array,
): void {
  const inF = row.length;
  const nb = Math.ceil(inF / Q4_BLOCK);
  const per = (Q4_BLOCK * blockBits(kind)) / 8; // bytes per block
  for (let b = 0; b < nb; b++) {
    const d = scales[o * nb + b];
    const off = offsets ? offsets[o * nb + b] : 0;
    const at = (o * nb + b) * per;
    const i0 = b * Q4_BLOCK;
    const len = Math.min(Q4_BLOCK, inF - i0);
    if (kind === 'q8') for (let j = 0; j < len; j++) row[i0 + j] = (blocks[at + j] - INT8_ZERO) * d + off;
    else
      for (let j = 0; j < len; j++) {
        const byte = blocks[at + (j >> 1)];
        row[i0 + j] = ((j & 1 ? byte >> 4 : byte & 15) - 8) * d + off;
      }
  }
}

/**
 * Quantizes W [out, in] in `mode` ('none' is not a quantization): int8 is 8-bit blocks (q8), or with `channels` int8
 * per output channel (what the int8-rows kernels multiply by, nn/quant-linear.ts); q4 is 4-bit blocks.
 */
export function quantizeWeight(
  w: Float32Array,
  out: number,
  inF: number,
  mode: Exclude<QuantMode, 'none'>,
  channels = false,
): QuantizedWeight {
  if (mode === 'q4') return quantizeQ4(w, out, inF);
  return channels ? quantizeInt8(w, out, inF) : quantizeQ8(w, out, inF);
}

/** Bytes the quantized weight occupies in a graph (codes and scales; int8 codes in both layouts the forward and the
 * input gradient read; blocks with their int8 backward copy). From the sizes alone, so a weight read lazily from a
 * file stays unread. */
export function quantizedBytes(q: QuantizedWeight): number {
  if (q.kind === 'int8') return 2 * q.out * q.in + 4 * q.out;
  const nb = Math.ceil(q.in / Q4_BLOCK);
  const offsets = (q.stored ? q.stored.offsets : q.offsets) ? 4 * q.out * nb : 0; // without reading a stored file
  return (q.out * nb * Q4_BLOCK * blockBits(q.kind)) / 8 + 4 * q.out * nb + offsets + quantizedBytes(q.back);
}

function checkSize(w: Float32Array, out: number, inF: number): void {
  if (w.length !== out * inF || out <= 0 || inF <= 0)
    throw new LorakitError(
      'LK_SHAPE_MISMATCH',
      `quantize: a [${out}, ${inF}] weight needs ${out * inF} values, got ${w.length}`,
    );
}
