// RoPE: inverse frequencies for each scaling kind, rotate_half application against plain JS, and its gradient.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Graph } from '../../src/graph/index.ts';
import { applyRope, ropeAt, ropeInvFreq, ropeTables } from '../../src/nn/index.ts';
import { compile } from '../../src/runtime/index.ts';
import { gradcheck } from '../graph/gradcheck.ts';
import { assertAllclose, randArray } from '../helpers.ts';

test('ropeInvFreq: θ^(-2i/d), divided by factor for linear scaling, three regimes for llama3', () => {
  const base = ropeInvFreq(6, 100, null);
  const f = [1, 100 ** (-1 / 3), 100 ** (-2 / 3)];
  assertAllclose(base, f, { rtol: 1e-6 });
  assertAllclose(
    ropeInvFreq(6, 100, { rope_type: 'linear', factor: 4 }),
    f.map((v) => v / 4),
    { rtol: 1e-6 },
  );
  // wavelengths 2π/f = 6.3, 29.2, 135: below 32/4 kept, above 32/1 divided by 8, in between interpolated
  const smooth = (32 / ((2 * Math.PI) / f[1]) - 1) / (4 - 1);
  const llama3 = ropeInvFreq(6, 100, {
    rope_type: 'llama3',
    factor: 8,
    low_freq_factor: 1,
    high_freq_factor: 4,
    original_max_position_embeddings: 32,
  });
  assertAllclose(llama3, [f[0], ((1 - smooth) * f[1]) / 8 + smooth * f[1], f[2] / 8], { rtol: 1e-6 });
});

test('applyRope rotates the two halves of each head by position·inv_freq (rotate_half layout)', async () => {
  const inv = ropeInvFreq(4, 10000, null);
  const g = new Graph();
  const x = g.input('x', 'f32', [1, 1, 3, 4]);
  const pos = g.constant([0, 5, 2], 'i64', [1, 3]);
  g.output('y', applyRope(x, ropeAt(ropeTables(g, inv, 8, 'f32'), pos)));
  const xs = Float32Array.from(randArray(12, 4));
  const out = await (await compile(g, { worker: false })).run({ x: xs });
  const ref: number[] = [];
  [0, 5, 2].forEach((p, t) => {
    const [a0, a1, b0, b1] = xs.slice(t * 4, t * 4 + 4);
    const [c0, c1, s0, s1] = [Math.cos(p * inv[0]), Math.cos(p * inv[1]), Math.sin(p * inv[0]), Math.sin(p * inv[1])];
    ref.push(a0 * c0 - b0 * s0, a1 * c1 - b1 * s1, b0 * c0 + a0 * s0, b1 * c1 + a1 * s1);
  });
  assertAllclose(out.y.data as Float32Array, ref, { rtol: 1e-5, atol: 1e-6 });
});

test('gradient: applyRope w.r.t. its input', () =>
  gradcheck(
    (g, [x]) =>
      applyRope(x, ropeAt(ropeTables(g, ropeInvFreq(4, 100, null), 4, 'f64'), g.constant([3, 1], 'i64', [1, 2]))),
    [{ shape: [1, 2, 2, 4] }],
  ));

test(
  'applyRope in float32 (one RotaryEmbedding node) equals the float64 composite for shared and per-row ' + 'positions',
  async () => {
    const inv = ropeInvFreq(8, 10000, null);
    for (const [pos, shape] of [
      [
        [0, 5, 2],
        [1, 3],
      ],
      [
        [4, 1, 7, 0, 2, 3],
        [2, 3],
      ],
    ] as const) {
      const g = new Graph();
      const x = g.input('x', 'f32', [2, 3, 3, 8]); // batch 2 against positions shared by both rows, or one row each
      const p = g.constant(pos, 'i64', shape);
      const fused = applyRope(x, ropeAt(ropeTables(g, inv, 8, 'f32'), p));
      assert.ok(
        g.nodes.some((n) => n.op === 'RotaryEmbedding'),
        'float32 uses the fused kernel',
      );
      g.output('fused', fused);
      g.output('composite', applyRope(x.cast('f64'), ropeAt(ropeTables(g, inv, 8, 'f64'), p)).cast('f32'));
      const out = await (await compile(g, { worker: false })).run({ x: Float32Array.from(randArray(144, 9)) });
      assertAllclose(out.fused.data as Float32Array, out.composite.data as Float32Array, {
        rtol: 1e-6,
        atol: 1e-6,
        what: `positions ${shape}`,
      });
    }
  },
);
