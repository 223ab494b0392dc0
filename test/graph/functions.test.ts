// Composite functions: forward values against plain-JS references, gradients against finite differences.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Graph,
  crossEntropy,
  logSoftmax,
  rmsNorm,
  gelu,
  silu,
  layerNorm,
  sweepInverse,
} from '../../src/graph/index.ts';
import { Rng } from '../../src/linalg/index.ts';
import { compile } from '../../src/runtime/index.ts';
import { gradcheck } from './gradcheck.ts';
import { assertAllclose, randArray } from '../helpers.ts';

test('crossEntropy equals the mean NLL over counted labels and ignores -100', async () => {
  const [N, C] = [4, 5];
  const z = randArray(N * C, 3, -3, 3);
  const labels = [2, -100, 0, 4];
  const g = new Graph();
  const loss = crossEntropy(g.input('z', 'f64', [N, C]), g.input('y', 'i64', [N]));
  g.output('loss', loss);
  const s = await compile(g, { worker: false });
  const out = await s.run({ z, y: BigInt64Array.from(labels.map(BigInt)) });
  let sum = 0,
    cnt = 0;
  for (let i = 0; i < N; i++) {
    if (labels[i] === -100) continue;
    const row = Array.from(z.slice(i * C, (i + 1) * C));
    const m = Math.max(...row);
    const lse = m + Math.log(row.reduce((a, v) => a + Math.exp(v - m), 0));
    sum += lse - row[labels[i]];
    cnt++;
  }
  assertAllclose(out.loss.data as Float64Array, [sum / cnt], { rtol: 1e-12, what: 'loss' });
});

test('crossEntropy with every label ignored is 0, not NaN', async () => {
  const g = new Graph();
  g.output('loss', crossEntropy(g.input('z', 'f32', [2, 3]), g.input('y', 'i64', [2])));
  const s = await compile(g, { worker: false });
  const out = await s.run({ z: new Float32Array(6).fill(1), y: BigInt64Array.from([-100n, -100n]) });
  assertAllclose(out.loss.data as Float32Array, [0]);
});

test('rmsNorm and gelu match plain-JS formulas', async () => {
  const x = randArray(8, 5);
  const w = randArray(4, 6);
  const g = new Graph();
  const xi = g.input('x', 'f64', [2, 4]),
    wi = g.input('w', 'f64', [4]);
  g.output('rms', rmsNorm(xi, wi, 1e-6));
  g.output('rms_f32', rmsNorm(xi.cast('f32'), wi.cast('f32'), 1e-6).cast('f64')); // the SimplifiedLayerNormalization kernel
  g.output('gelu', gelu(xi.cast('f32')).cast('f64'));
  g.output('gelu_tanh', gelu(xi, 'tanh'));
  g.output('gelu_tanh_f32', gelu(xi.cast('f32'), 'tanh').cast('f64')); // the FastGelu kernel
  g.output('silu_f32', silu(xi.cast('f32')).cast('f64')); // the QuickGelu kernel
  const s = await compile(g, { worker: false });
  const out = await s.run({ x, w });
  const rms = new Float64Array(8),
    ge = new Float64Array(8),
    gt = new Float64Array(8);
  for (let r = 0; r < 2; r++) {
    const row = x.slice(r * 4, r * 4 + 4);
    const inv = 1 / Math.sqrt(row.reduce((a, v) => a + v * v, 0) / 4 + 1e-6);
    for (let c = 0; c < 4; c++) rms[r * 4 + c] = row[c] * inv * w[c];
  }
  const erf = (v: number) => {
    // Abramowitz-Stegun 7.1.26 is too coarse; use a series for |v| < 3
    let s = 0,
      t = v,
      n = 0;
    while (Math.abs(t) > 1e-17 && n < 200) {
      s += t / (2 * n + 1);
      n++;
      t *= (-v * v) / n;
    }
    return (2 / Math.sqrt(Math.PI)) * s;
  };
  x.forEach((v, i) => {
    ge[i] = 0.5 * v * (1 + erf(v / Math.SQRT2));
    gt[i] = 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
  });
  assertAllclose(out.rms.data as Float64Array, rms, { rtol: 1e-12, what: 'rmsNorm' });
  assertAllclose(out.rms_f32.data as Float64Array, rms, {
    rtol: 1e-6,
    atol: 1e-6,
    what: 'rmsNorm (SimplifiedLayerNormalization, f32)',
  });
  assertAllclose(out.gelu.data as Float64Array, ge, { rtol: 1e-6, atol: 1e-6, what: 'gelu' });
  assertAllclose(out.gelu_tanh.data as Float64Array, gt, { rtol: 1e-12, what: 'gelu tanh' });
  assertAllclose(out.gelu_tanh_f32.data as Float64Array, gt, {
    rtol: 1e-6,
    atol: 1e-6,
    what: 'gelu tanh (FastGelu, f32)',
  });
  assertAllclose(
    out.silu_f32.data as Float64Array,
    Array.from(x, (v) => v / (1 + Math.exp(-v))),
    { rtol: 1e-6, atol: 1e-6, what: 'silu (QuickGelu, f32)' },
  );
});

test('gradient: logSoftmax', () => gradcheck((_g, [x]) => logSoftmax(x), [{ shape: [3, 5] }]));
test('gradient: crossEntropy with an ignored label', () =>
  gradcheck((g, [z]) => crossEntropy(z, g.constant([1, -100, 3], 'i64', [3])), [{ shape: [3, 4] }]));
test('gradient: rmsNorm', () => gradcheck((_g, [x, w]) => rmsNorm(x, w), [{ shape: [2, 4] }, { shape: [4] }]));
// ORT keeps LayerNorm's mean and 1/std in float32 (stash_type) even for float64 input, hence rtol 1e-5
test('gradient: layerNorm without bias', () =>
  gradcheck((_g, [x, w]) => layerNorm(x, w, null), [{ shape: [2, 3, 4] }, { shape: [4] }], { rtol: 1e-5 }));
test('gradient: gelu (tanh form)', () => gradcheck((_g, [x]) => gelu(x, 'tanh'), [{ shape: [6] }]));
test('gradient: silu', () => gradcheck((_g, [x]) => silu(x), [{ shape: [6] }]));

test('dropout keeps about 1-p of the values, scaled by 1/(1-p), and is reproducible per seed', async () => {
  const { dropout } = await import('../../src/graph/index.ts');
  const g = new Graph();
  const x = g.input('x', 'f32', [64, 128]),
    seed = g.input('seed', 'f32', []);
  g.output('y', dropout(x, 0.25, seed));
  const s = await compile(g, { worker: false });
  const ones = new Float32Array(64 * 128).fill(1);
  const run = async (sd: number) => (await s.run({ x: ones, seed: new Float32Array([sd]) })).y.data as Float32Array;
  const [a, a2, b] = [await run(1), await run(1), await run(2)];
  const kept = a.filter((v) => v !== 0);
  assert.ok(Math.abs(kept.length / a.length - 0.75) < 0.03, `kept fraction ${kept.length / a.length}`);
  assert.ok(kept.every((v) => Math.abs(v - 4 / 3) < 1e-6));
  assert.deepEqual(a, a2);
  assert.ok(
    a.some((v, i) => v !== b[i]),
    'another seed gives another mask',
  );
});

test('the dropout hash gives 24-bit uniforms: no grid, flat histogram, uncorrelated seeds, beyond 10⁶ elements', async () => {
  const { hashUniformLike } = await import('../../src/graph/index.ts');
  const g = new Graph();
  const n = 1 << 21; // past the ~10⁶ elements where a float32 sin hash loses its precision
  const x = g.input('x', 'f32', [n]),
    seed = g.input('seed', 'f32', []);
  g.output('u', hashUniformLike(x, seed));
  const s = await compile(g, { worker: false });
  const run = async (sd: number) =>
    (await s.run({ x: new Float32Array(n), seed: new Float32Array([sd]) })).u.data as Float32Array;
  const [u, v] = [await run(123456), await run(123457)];
  assert.ok(u.every((t) => t >= 0 && t < 1));
  assert.ok(new Set(u.subarray(0, 100000)).size > 99000, 'values are not on a coarse grid');
  // χ² over 256 bins (255 degrees of freedom: 99.9 % quantile ≈ 330), at the start and at the end of the tensor
  for (const part of [u.subarray(0, 1 << 16), u.subarray(n - (1 << 16))]) {
    const bins = new Float64Array(256);
    for (const t of part) bins[Math.floor(t * 256)]++;
    const e = part.length / 256;
    const chi2 = bins.reduce((acc, b) => acc + (b - e) ** 2 / e, 0);
    assert.ok(chi2 < 330, `χ² ${chi2.toFixed(1)}`);
  }
  // neighbouring seeds and neighbouring elements are uncorrelated
  const corr = (a: ArrayLike<number>, b: ArrayLike<number>, len: number) => {
    let sab = 0,
      sa = 0,
      sb = 0,
      saa = 0,
      sbb = 0;
    for (let i = 0; i < len; i++) {
      sab += a[i] * b[i];
      sa += a[i];
      sb += b[i];
      saa += a[i] * a[i];
      sbb += b[i] * b[i];
    }
    return (
      (sab / len - (sa / len) * (sb / len)) / Math.sqrt((saa / len - (sa / len) ** 2) * (sbb / len - (sb / len) ** 2))
    );
  };
  assert.ok(Math.abs(corr(u, v, 1 << 16)) < 0.02, 'seeds s and s+1');
  assert.ok(Math.abs(corr(u, u.subarray(1), 1 << 16)) < 0.02, 'elements i and i+1');
});

test('sweepInverse: M·M⁻¹ = I in float64 for SPD matrices from well to badly conditioned, and (δI)⁻¹ = I/δ', async () => {
  const n = 5;
  const rng = new Rng(4);
  for (const ridge of [1, 1e-3, 1e-8]) {
    // M = XᵀX + δI with X [3, 5] of rank 3: two eigenvalues are δ, so the condition number is about ‖X‖²/δ
    const x = rng.normalArray(3 * n, 1);
    const m = new Float64Array(n * n);
    for (let i = 0; i < n; i++)
      for (let j = 0; j < n; j++) {
        for (let k = 0; k < 3; k++) m[i * n + j] += x[k * n + i] * x[k * n + j];
        if (i === j) m[i * n + j] += ridge;
      }
    const g = new Graph();
    g.output('inv', sweepInverse(g.input('m', 'f64', [n, n]), n));
    const inv = (await (await compile(g, { worker: false })).run({ m })).inv.data as Float64Array;
    const prod = new Float64Array(n * n);
    for (let i = 0; i < n; i++)
      for (let j = 0; j < n; j++) for (let k = 0; k < n; k++) prod[i * n + j] += m[i * n + k] * inv[k * n + j];
    const eye = Array.from({ length: n * n }, (_, k) => (k % (n + 1) === 0 ? 1 : 0));
    assertAllclose(prod, eye, { atol: 1e-6, what: `M·M⁻¹ with δ = ${ridge}` });
  }
  const g = new Graph();
  g.output('inv', sweepInverse(g.input('m', 'f32', [3, 3]), 3));
  const d = Float32Array.from([1e-5, 0, 0, 0, 1e-5, 0, 0, 0, 1e-5]);
  const inv = (await (await compile(g, { worker: false })).run({ m: d })).inv.data as Float32Array;
  assertAllclose(inv, [1e5, 0, 0, 0, 1e5, 0, 0, 0, 1e5], { rtol: 1e-6, what: 'B = 0: (δI)⁻¹' });
});
