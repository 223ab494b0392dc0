// SALT against independent references: the stored U, S, Vt are W0's full thin SVD (U·diag(S)·Vt = W0, orthonormal
// factors, S descending); with the SAM2 init ΔW = 0 exactly; with trained a, b, X, Y (some of ReLU's inputs negative,
// on and off the diagonal) a layer's output equals the float64 dense x·(U·ReLU(S)·Vt)ᵀ + b, S built as the official
// code builds it (diag(σ), top-left block replaced, bottom-right block += X·Y, ReLU on every entry), unmerged and
// merged, for a Linear and a GPT-2 Conv1D; the SAM-v1 gaussian init; r from ratio_salt; the count; loading skips the
// SVD; the refusals. (Gradients, save/load, resume: test/peft/contract.test.ts.)
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { LorakitError } from '../../../src/errors.ts';
import { Rng } from '../../../src/linalg/index.ts';
import { loadAdapter, PeftModel, saveAdapter } from '../../../src/peft/index.ts';
import { assertAllclose } from '../../helpers.ts';
import { denseBase, graphOutput, referenceOutput, w0Matrix } from './dense-layer.ts';

const LAYERS = [
  { name: 'q_proj', kind: 'linear', inFeatures: 12, outFeatures: 8, bias: true },
  { name: 'c_fc', kind: 'conv1d', inFeatures: 10, outFeatures: 6 },
] as const;
const CONFIG = { peft_type: 'SALT', r: 3, r_lora: 2, target_modules: ['q_proj', 'c_fc'] };

/** The official new_s [k, k] before its ReLU, from the stored tensors; and W' = U·ReLU(new_s)·Vt [out, in]. */
function officialWeight(p: Record<string, Float32Array>, o: number, i: number, r: number, rLora: number) {
  const k = p.S.length;
  const rem = k - r;
  const s = new Float64Array(k * k);
  for (let j = 0; j < k; j++) s[j * k + j] = p.S[j]; // S_diag
  for (let j = 0; j < r; j++) s[j * k + j] = p.trainable_scale_A[j] * p.S[j] + p.trainable_shift_B[j];
  for (let a = 0; a < rem; a++)
    for (let b = 0; b < rem; b++)
      for (let t = 0; t < rLora; t++)
        s[(r + a) * k + r + b] += p.trainable_X[a * rLora + t] * p.trainable_Y[t * rem + b];
  const w = new Float64Array(o * i);
  for (let row = 0; row < o; row++)
    for (let col = 0; col < i; col++) {
      let t = 0;
      for (let a = 0; a < k; a++)
        for (let b = 0; b < k; b++) t += p.U[row * k + a] * Math.max(0, s[a * k + b]) * p.Vt[b * i + col];
      w[row * i + col] = t;
    }
  return { s, w };
}

test('SALT stores W0’s full thin SVD (U·diag(S)·Vt = W0, orthonormal U and V) and starts at ΔW = 0 (SAM2 init)', async () => {
  const { base, weights, modules } = denseBase(LAYERS);
  const peft = new PeftModel(base);
  await peft.addAdapter('default', CONFIG, { seed: 1 });
  const n = 3;
  const x = new Rng(5).normalArray(n * 12);
  for (const m of modules) {
    const v = peft.get('default').layers.get(m.path)!.values;
    const [o, i, k] = [m.outFeatures, m.inFeatures, Math.min(m.outFeatures, m.inFeatures)];
    const usv = new Float64Array(o * i);
    for (let row = 0; row < o; row++)
      for (let col = 0; col < i; col++)
        for (let j = 0; j < k; j++) usv[row * i + col] += v.U[row * k + j] * v.S[j] * v.Vt[j * i + col];
    assertAllclose(usv, w0Matrix(weights, m), { atol: 2e-6, rtol: 0, what: `${m.path}: U·diag(S)·Vt` });
    for (let j = 1; j < k; j++) assert.ok(v.S[j] <= v.S[j - 1] && v.S[j] >= 0);
    for (const [f, rows, cols, what] of [
      [v.U, o, k, 'UᵀU'],
      [v.Vt, k, i, 'Vt·V'],
    ] as const)
      for (let a = 0; a < k; a++)
        for (let b = 0; b < k; b++) {
          let d = 0;
          for (let t = 0; t < (what === 'UᵀU' ? rows : cols); t++)
            d += what === 'UᵀU' ? f[t * cols + a] * f[t * cols + b] : f[a * cols + t] * f[b * cols + t];
          assert.ok(Math.abs(d - (a === b ? 1 : 0)) < 1e-5, `${m.path} ${what}[${a}, ${b}] = ${d}`);
        }
    const bound = Math.sqrt(6 / 2); // Kaiming-uniform with gain √2, fan_in r_lora = 2
    assert.ok(v.trainable_X.every((t) => Math.abs(t) <= bound) && v.trainable_X.some((t) => Math.abs(t) > 0.3));
    assert.ok(v.trainable_Y.every((t) => t === 0));
    const xs = x.subarray(0, n * i);
    const base0 = await graphOutput(new PeftModel(base), weights, modules, m.path, xs, n);
    assert.deepEqual(await graphOutput(peft, weights, modules, m.path, xs, n), base0, `${m.path}: ΔW = 0 exactly`);
  }
});

test('SALT layer outputs equal the float64 dense x·(U·ReLU(S)·Vt)ᵀ + b with ReLU clipping on and off the diagonal', async () => {
  const { base, weights, modules } = denseBase(LAYERS);
  const peft = new PeftModel(base);
  await peft.addAdapter('default', CONFIG, { seed: 2 });
  const rng = new Rng(12);
  const moved = new Map(
    [...peft.trainableValues('default')].map(([k, v]) => {
      // a shift of −4 drives some top singular values below 0, and X·Y ~ N(0, 1) makes off-diagonal entries negative
      if (k.includes('shift')) return [k, v.map(() => -4 + rng.normal())];
      return [k, v.map((t) => t + rng.normal())];
    }),
  );
  peft.setValues('default', moved);
  const n = 4;
  const x = new Rng(7).normalArray(n * 12);
  const deltas = new Map<string, Float64Array>();
  for (const m of modules) {
    const v = peft.get('default').layers.get(m.path)!.values;
    const { s, w } = officialWeight(v, m.outFeatures, m.inFeatures, 3, 2);
    const k = v.S.length;
    assert.ok(
      [0, 1, 2].some((j) => s[j * k + j] < 0),
      `${m.path}: a clipped top singular value`,
    );
    assert.ok(
      s.some((t, e) => Math.floor(e / k) !== e % k && t < 0),
      `${m.path}: a clipped off-diagonal entry`,
    );
    const w0 = w0Matrix(weights, m);
    deltas.set(
      m.path,
      w.map((t, e) => t - w0[e]),
    ); // the official W' as W0 + ΔW
  }
  for (const merged of [false, true]) {
    if (merged) await peft.merge();
    for (const m of modules) {
      const xs = x.subarray(0, n * m.inFeatures);
      const want = referenceOutput(weights, m, xs, n, deltas.get(m.path)!);
      assertAllclose(await graphOutput(peft, weights, modules, m.path, xs, n), want, {
        atol: 5e-5,
        what: `${merged ? 'merged ' : ''}${m.path}`,
      });
    }
  }
});

test('SALT: the SAM-v1 gaussian init moves the weight; r from ratio_salt; the count 2r + 2(k − r)·r_lora', async () => {
  const { base, weights, modules } = denseBase(LAYERS);
  const peft = new PeftModel(base);
  const g = await peft.addAdapter('g', { ...CONFIG, init_weights: 'gaussian' }, { seed: 3 });
  const v = g.layers.get(modules[0].path)!.values;
  const std = Math.sqrt(v.trainable_Y.reduce((s, t) => s + t * t, 0) / v.trainable_Y.length);
  assert.ok(std > 0.004 && std < 0.02, `Y std ${std}`);
  const x = new Rng(1).normalArray(2 * 12);
  const out = await graphOutput(peft, weights, modules, modules[0].path, x, 2);
  const base0 = referenceOutput(weights, modules[0], x, 2, null);
  assert.ok(
    out.some((t, e) => Math.abs(t - base0[e]) > 1e-5),
    'ΔW ≠ 0 at init',
  );
  const ratio = await new PeftModel(base).addAdapter('x', {
    peft_type: 'SALT',
    ratio_salt: 0.5,
    target_modules: ['q_proj', 'c_fc'],
  });
  const sizes = [...ratio.layers.values()].map((l) => [l.settings.k, l.settings.r]);
  assert.deepEqual(sizes, [
    [8, 4],
    [6, 3],
  ]);
  const layers = [...ratio.layers.values()].map((l) => ({ layer: l.info, settings: l.settings }));
  assert.equal(ratio.method.trainableCount(ratio.config, layers), 2 * 4 + 2 * 4 * 4 + (2 * 3 + 2 * 3 * 4));
});

test('a saved SALT folder loads without reading any weight (U, S and Vt are in the file: no SVD at load)', async () => {
  const { base, weights } = denseBase(LAYERS);
  const peft = new PeftModel(base);
  await peft.addAdapter('default', CONFIG, { seed: 4 });
  const dir = mkdtempSync(join(tmpdir(), 'lk-salt-'));
  await saveAdapter(peft, 'default', dir);
  let reads = 0;
  const counting = {
    ...base,
    readWeight: async (name: string) => {
      reads++;
      return Float32Array.from(weights.get(name)!);
    },
  };
  const loaded = new PeftModel(counting);
  await loadAdapter(loaded, dir);
  assert.equal(reads, 0);
  for (const [path, l] of peft.get('default').layers)
    for (const [k, t] of Object.entries(l.values))
      assert.deepEqual(loaded.get('default').layers.get(path)!.values[k], t);
  await assert.rejects(
    new PeftModel(base).addAdapter('x', { ...CONFIG, r: 6 }),
    (e: unknown) => e instanceof LorakitError && e.code === 'LK_CONFIG_INVALID' && e.message.includes('c_fc'),
  );
});
