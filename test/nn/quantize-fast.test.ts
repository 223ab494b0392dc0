// The quantizers' fast paths (src/nn/quantize.ts, nn/quant-linear.ts int8Bytes, models/gguf-blocks.ts fromGguf's
// byte reorder) against the straightforward code they replaced, kept here as the reference: ⌊x + ½⌋ for Math.round,
// the backward's int8 copy requantized row by row from the codes instead of from the whole dequantized matrix, the
// stored bytes code + 128 made by XOR 0x80. Each must equal the reference bit for bit, on random weights and on the
// edges: all-zero rows and blocks, a padded last block, exact rounding ties, negatives, ±0, NaN and ±Infinity,
// subnormals.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  INT8_LEVELS,
  INT8_ZERO,
  Q4_BLOCK,
  blockWeight,
  dequantize,
  int8Bytes,
  quantizeInt8,
  quantizeQ4,
  quantizeQ8,
} from '../../src/nn/index.ts';
import { roundHalfUp } from '../../src/nn/quantize.ts';
import { fromGguf } from '../../src/models/gguf-blocks.ts';
import { f16BitsToNumber, numberToF16Bits } from '../../src/io/index.ts';
import { rng } from '../helpers.ts';

// ---- the reference: the straightforward quantizers as they were before the fast paths ----

function refInt8(w: Float32Array, out: number, inF: number) {
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
  return { q, scale };
}

function refDequantizeBlocks(
  kind: 'q4' | 'q8',
  blocks: Uint8Array,
  scales: Float32Array,
  out: number,
  inF: number,
  offsets?: Float32Array,
) {
  const w = new Float32Array(out * inF);
  const nb = Math.ceil(inF / Q4_BLOCK);
  const per = kind === 'q8' ? Q4_BLOCK : Q4_BLOCK / 2;
  for (let o = 0; o < out; o++)
    for (let i = 0; i < inF; i++) {
      const b = Math.floor(i / Q4_BLOCK);
      const j = i % Q4_BLOCK;
      const at = (o * nb + b) * per;
      const code =
        kind === 'q8'
          ? blocks[at + j] - INT8_ZERO
          : (j & 1 ? blocks[at + (j >> 1)] >> 4 : blocks[at + (j >> 1)] & 15) - 8;
      w[o * inF + i] = code * scales[o * nb + b] + (offsets ? offsets[o * nb + b] : 0);
    }
  return w;
}

function refQ8(w: Float32Array, out: number, inF: number) {
  const nb = Math.ceil(inF / Q4_BLOCK);
  const blocks = new Uint8Array(out * nb * Q4_BLOCK).fill(INT8_ZERO);
  const scales = new Float32Array(out * nb);
  for (let o = 0; o < out; o++)
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
      for (let j = 0; j < len; j++)
        blocks[at + j] = Math.max(-L, Math.min(L, Math.round(w[start + j] / d))) + INT8_ZERO;
    }
  return { blocks, scales, back: refInt8(refDequantizeBlocks('q8', blocks, scales, out, inF), out, inF) };
}

function refQ4(w: Float32Array, out: number, inF: number) {
  const nb = Math.ceil(inF / Q4_BLOCK);
  const blocks = new Uint8Array(out * nb * (Q4_BLOCK / 2));
  const scales = new Float32Array(out * nb);
  const codes = new Uint8Array(Q4_BLOCK);
  for (let o = 0; o < out; o++)
    for (let b = 0; b < nb; b++) {
      const start = o * inF + b * Q4_BLOCK;
      const len = Math.min(Q4_BLOCK, inF - b * Q4_BLOCK);
      let m = 0;
      for (let j = 0; j < len; j++) if (Math.abs(w[start + j]) > Math.abs(m)) m = w[start + j];
      const d = f16BitsToNumber(numberToF16Bits(m / -8));
      const id = d === 0 ? 0 : 1 / d;
      codes.fill(8);
      for (let j = 0; j < len; j++) codes[j] = Math.min(15, Math.max(0, Math.floor(w[start + j] * id + 8.5)));
      scales[o * nb + b] = d;
      const at = (o * nb + b) * (Q4_BLOCK / 2);
      for (let j = 0; j < Q4_BLOCK / 2; j++) blocks[at + j] = codes[2 * j] | (codes[2 * j + 1] << 4);
    }
  return { blocks, scales, back: refInt8(refDequantizeBlocks('q4', blocks, scales, out, inF), out, inF) };
}

// ---- inputs ----

/** Random weights with the edges mixed in: zero rows and blocks, ties, ±0, NaN, ±Infinity, subnormals, outliers. */
function weights(out: number, inF: number, seed: number, edges: boolean): Float32Array {
  const r = rng(seed);
  const w = new Float32Array(out * inF);
  for (let k = 0; k < w.length; k++) w[k] = (r() - 0.5) * 0.08 * (r() < 0.01 ? 50 : 1);
  if (!edges) return w;
  w.fill(0, 0, inF); // an all-zero row
  if (inF > Q4_BLOCK) w.fill(0, inF + Q4_BLOCK, inF + 2 * Q4_BLOCK); // an all-zero block (when there is one)
  // a row whose max is 127 and every other entry an exact tie k + ½ of the code grid (d = 1), either sign
  const tie = 2 * inF;
  w[tie] = 127;
  for (let i = 1; i < inF; i++) w[tie + i] = ((i % 254) - 127 + 0.5) * (i & 1 ? 1 : -1);
  const odd = [-0, 0, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 1e-45, -1e-45, 1e-40, 3e38];
  const row = Math.min(3, out - 1) * inF;
  for (let k = 0; k < odd.length && k < inF; k++) w[row + 1 + k * 2] = odd[k];
  // a row of subnormals only: scale and codes from the float32 underflow range
  if (out > 4) for (let i = 0; i < inF; i++) w[4 * inF + i] = (i - inF / 2) * 1e-44;
  return w;
}

const bytesOf = (a: ArrayBufferView) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
const sameBits = (a: ArrayBufferView, b: ArrayBufferView, what: string) =>
  assert.ok(bytesOf(a).equals(bytesOf(b)), `${what}: not bit for bit equal`);

const SHAPES: [number, number][] = [
  [6, 96],
  [7, 33],
  [5, 7],
  [64, 768],
];

// ---- the checks ----

test('roundHalfUp equals Math.round on ties, negatives, ±0 and random float32 quotients (w / d)', () => {
  for (let k = -300; k <= 300; k++) {
    for (const x of [k, k + 0.5, k - 0.5, k + 0.25, k + 0.49999999999999, k + 0.5000000000001])
      assert.equal(roundHalfUp(x) + 0, Math.round(x) + 0, `x = ${x}`); // + 0: −0 and 0 store the same code
  }
  assert.ok(roundHalfUp(-0.3) === 0 && roundHalfUp(-0.5) === 0 && roundHalfUp(-1.5) === -1);
  assert.ok(Number.isNaN(roundHalfUp(Number.NaN)));
  // the one double where they part: 0.5 − 2⁻⁵⁴ (documented); no quotient of float32 values lands there
  assert.equal(Math.round(0.49999999999999994), 0);
  assert.equal(roundHalfUp(0.49999999999999994), 1);
  const r = rng(11);
  const f32 = new Float32Array(2);
  for (let n = 0; n < 200_000; n++) {
    // d as the quantizers make it (fround(m / 127)) and w within ±m, w / d across the whole code range
    f32[0] = (r() - 0.5) * 2 ** Math.floor(r() * 40 - 20);
    f32[1] = Math.fround(Math.abs(f32[0]) / INT8_LEVELS) * (0.5 + r());
    const x = f32[0] / f32[1];
    assert.equal(roundHalfUp(x) + 0, Math.round(x) + 0, `w ${f32[0]}, d ${f32[1]}`);
  }
  // float32 quotients just around ½: w = d/2 ± one ulp
  for (let n = 0; n < 20_000; n++) {
    const d = Math.fround(1 + r());
    for (const w of [Math.fround(d / 2), Math.fround(d / 2) + 2 ** -24, Math.fround(d / 2) - 2 ** -24]) {
      const x = Math.fround(w) / d;
      assert.equal(roundHalfUp(x) + 0, Math.round(x) + 0, `w ${w}, d ${d}`);
    }
  }
});

test('quantizeInt8 equals the straightforward per-row quantizer bit for bit', () => {
  for (const [out, inF] of SHAPES)
    for (const edges of [false, true]) {
      const w = weights(out, inF, out * 31 + inF, edges);
      const got = quantizeInt8(w, out, inF);
      const want = refInt8(w, out, inF);
      sameBits(got.q, want.q, `codes [${out}, ${inF}]`);
      sameBits(got.scale, want.scale, `scales [${out}, ${inF}]`);
    }
});

test('quantizeQ8 and quantizeQ4: blocks, scales and the backward copy (built row by row) equal the reference', () => {
  for (const [kind, fast, ref] of [
    ['q8', quantizeQ8, refQ8],
    ['q4', quantizeQ4, refQ4],
  ] as const)
    for (const [out, inF] of SHAPES)
      for (const edges of [false, true]) {
        const w = weights(out, inF, out * 17 + inF, edges);
        const got = fast(w, out, inF);
        const want = ref(w, out, inF);
        const what = `${kind} [${out}, ${inF}]${edges ? ' with edges' : ''}`;
        sameBits(got.blocks, want.blocks, `${what} blocks`);
        sameBits(got.scales, want.scales, `${what} scales`);
        sameBits(got.back.q, want.back.q, `${what} backward codes`);
        sameBits(got.back.scale, want.back.scale, `${what} backward scales`);
        sameBits(dequantize(got), refDequantizeBlocks(kind, want.blocks, want.scales, out, inF), `${what} W̃`);
      }
});

test('blockWeight with offsets (a GGUF Q4_1 block): the backward copy and W̃ equal the reference', () => {
  const [out, inF] = [9, 70];
  const q = quantizeQ4(weights(out, inF, 5, true), out, inF);
  const r = rng(6);
  const offsets = Float32Array.from({ length: q.scales.length }, () => (r() - 0.5) * 0.1);
  offsets[0] = 0;
  const got = blockWeight('q4', out, inF, q.blocks, q.scales, offsets);
  const wt = refDequantizeBlocks('q4', q.blocks, q.scales, out, inF, offsets);
  const want = refInt8(wt, out, inF);
  sameBits(got.back.q, want.q, 'backward codes');
  sameBits(got.back.scale, want.scale, 'backward scales');
  sameBits(dequantize(got), wt, 'W̃');
});

test('int8Bytes: code + 128 by XOR 0x80 on words equals the byte-wise offset, at any length and view offset', () => {
  const all = Int8Array.from({ length: 256 + 7 }, (_, k) => (k % 256) - 128);
  for (const [start, len] of [
    [0, 256],
    [1, 255],
    [3, 7],
    [0, 0],
    [5, 258],
  ]) {
    const q = all.subarray(start, start + len);
    const want = Uint8Array.from(q, (c) => c + INT8_ZERO);
    sameBits(int8Bytes(q, 1, q.length, false), want, `bytes of [${start}, ${start + len})`);
  }
  // the transposed layout is untouched: [rows, cols] codes → [cols, rows] bytes
  const q = Int8Array.from({ length: 12 }, (_, k) => k * 21 - 120);
  const t = int8Bytes(q, 3, 4, true);
  for (let r = 0; r < 3; r++) for (let c = 0; c < 4; c++) assert.equal(t[c * 3 + r], q[r * 4 + c] + INT8_ZERO);
});

/** fromGguf's blocks as first written: a closure per block picking each element's nibble, the int8 code + 128. */
function refFromGguf(type: string, raw: Uint8Array, rows: Int32Array, out: number, inF: number) {
  const nb = inF / Q4_BLOCK;
  const size = type === 'Q4_0' ? 18 : type === 'Q4_1' ? 20 : 34;
  const q8 = type === 'Q8_0';
  const per = q8 ? Q4_BLOCK : Q4_BLOCK / 2;
  const blocks = new Uint8Array(out * nb * per);
  for (let o = 0; o < out; o++)
    for (let b = 0; b < nb; b++) {
      const src = (rows[o] * nb + b) * size;
      const dst = o * nb + b;
      const qs = src + (q8 ? 2 : type === 'Q4_1' ? 4 : 2);
      if (q8) {
        for (let j = 0; j < Q4_BLOCK; j++) blocks[dst * per + j] = ((raw[qs + j] << 24) >> 24) + INT8_ZERO;
        continue;
      }
      const code = (e: number) => (e < 16 ? raw[qs + e] & 15 : raw[qs + e - 16] >> 4);
      for (let j = 0; j < per; j++) blocks[dst * per + j] = code(2 * j) | (code(2 * j + 1) << 4);
    }
  return blocks;
}

test('fromGguf: Q4_0 / Q4_1 nibbles reordered and Q8_0 codes offset without closures equal the reference', () => {
  const [out, inF] = [5, 96];
  const rows = Int32Array.from([3, 0, 4, 1, 2]); // a row permutation, as the rotary reorder makes
  const r = rng(21);
  for (const [type, size] of [
    ['Q4_0', 18],
    ['Q4_1', 20],
    ['Q8_0', 34],
  ] as const) {
    const raw = Uint8Array.from({ length: out * (inF / Q4_BLOCK) * size }, () => Math.floor(r() * 256));
    // random code bytes; the scales kept finite (f16 exponent below 31)
    for (let k = 0; k < raw.length; k += size) {
      raw[k + 1] &= 0x3b;
      if (type === 'Q4_1') raw[k + 3] &= 0x3b;
    }
    const got = fromGguf(type, raw, rows, out, inF);
    sameBits(got.blocks, refFromGguf(type, raw, rows, out, inF), `${type} blocks`);
  }
});
