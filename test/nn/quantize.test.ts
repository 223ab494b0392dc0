// Host quantizers of frozen weights (src/nn/quantize.ts): int8 per output channel within ±INT8_LEVELS and its
// rounding bound, and 4-bit blocks computed as ggml's quantize_row_q4_0 does (checked on a block worked by hand and
// against the per-entry bound on random weights, including a padded last block).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { INT8_LEVELS, Q4_BLOCK, dequantize, quantizeInt8, quantizeQ4 } from '../../src/nn/index.ts';
import { randArray } from '../helpers.ts';

test('int8: codes within ±INT8_LEVELS, scale = max|W_o|/INT8_LEVELS, every entry within scale/2', () => {
  const [out, inF] = [7, 33];
  const w = Float32Array.from(randArray(out * inF, 4, -3, 3));
  w.fill(0, 2 * inF, 3 * inF); // an all-zero row: scale 0, codes 0
  const q = quantizeInt8(w, out, inF);
  const wt = dequantize(q);
  assert.equal(q.scale[2], 0);
  for (let o = 0; o < out; o++) {
    let amax = 0;
    for (let i = 0; i < inF; i++) amax = Math.max(amax, Math.abs(w[o * inF + i]));
    assert.ok(Math.abs(q.scale[o] - amax / INT8_LEVELS) <= 1e-7 * amax, `scale of row ${o}`);
    for (let i = 0; i < inF; i++) {
      const k = o * inF + i;
      assert.ok(Math.abs(q.q[k]) <= INT8_LEVELS, `code ${q.q[k]}`);
      assert.ok(Math.abs(w[k] - wt[k]) <= q.scale[o] / 2 + 1e-7 * amax, `entry [${o}, ${i}]`);
    }
  }
});

test('q4: a block worked by hand as ggml quantize_row_q4_0 (d = m/−8, code = min(15, ⌊w/d + 8.5⌋), f16 d)', () => {
  // m = −4 (largest magnitude, sign kept) → d = 0.5; w = 4 clamps to code 15 = +3.5 (the one side that errs by d)
  const w = new Float32Array(Q4_BLOCK);
  w.set([-4, 4, 1.2, -1.3, 0.25, 0, 3.74, -0.24]);
  const q = quantizeQ4(w, 1, Q4_BLOCK);
  assert.equal(q.scales[0], 0.5);
  // id = 1/d = 2: ⌊0.5⌋ = 0, min(15, ⌊16.5⌋), ⌊10.9⌋, ⌊5.9⌋, ⌊9.0⌋ (half rounds up), ⌊8.5⌋, ⌊15.98⌋, ⌊8.02⌋
  const want = [0, 15, 10, 5, 9, 8, 15, 8];
  const codes = Array.from({ length: 8 }, (_, j) => (j & 1 ? q.blocks[j >> 1] >> 4 : q.blocks[j >> 1] & 15));
  assert.deepEqual(codes, want);
  assert.deepEqual(Array.from(dequantize(q).subarray(0, 8)), [-4, 3.5, 1, -1.5, 0.5, 0, 3.5, 0]);
});

test('q4: every entry within |d|/2 of W, or within |d| where it clamps at code 15; a padded last block reads 0', () => {
  const [out, inF] = [5, 80]; // 80 = 2 blocks + 16 entries of a third
  const w = Float32Array.from(randArray(out * inF, 9, -2, 2));
  const q = quantizeQ4(w, out, inF);
  const wt = dequantize(q);
  const nb = Math.ceil(inF / Q4_BLOCK);
  assert.equal(q.blocks.length, out * nb * (Q4_BLOCK / 2));
  for (let o = 0; o < out; o++) {
    for (let i = 0; i < inF; i++) {
      const d = Math.abs(q.scales[o * nb + Math.floor(i / Q4_BLOCK)]);
      const err = Math.abs(w[o * inF + i] - wt[o * inF + i]);
      assert.ok(err <= d * (1 + 1e-6), `entry [${o}, ${i}]: error ${err} > |d| ${d}`);
    }
    // padding codes are 8: the third block's bytes 8..15 are 0x88
    const at = (o * nb + 2) * (Q4_BLOCK / 2);
    assert.deepEqual(Array.from(q.blocks.subarray(at + 8, at + 16)), Array(8).fill(0x88));
  }
  // the int8 backward copy is W̃ within its own bound
  const back = dequantize(q.back);
  for (let k = 0; k < wt.length; k++)
    assert.ok(Math.abs(back[k] - wt[k]) <= q.back.scale[Math.floor(k / inF)] / 2 + 1e-6, `back entry ${k}`);
});
