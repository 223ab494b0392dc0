// LoRA-GA against independent references: a float64 host reference of PEFT's algorithm on one layer whose gradient
// has a known SVD (every direction and scale, Linear and Conv1D, rsLoRA), the invariant W_res + s·B·A = W0;
// PEFT's own lora_ga on the fixture models (interop/make_loraga_fixtures.py: PEFT 0.21.2's estimated gradients,
// initial factors and residuals, calibration batches whose gradients have rank below q, so the factors are compared
// up to one sign per singular component); a causal-LM run from a lora_ga config that trains, saves, reloads and is
// converted to a plain LoRA of the untouched base; the refusals.
// (Gradients, merge, save/load, resume and the trainable count on the toy: test/peft/contract.test.ts.)
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { LorakitError } from '../../../src/errors.ts';
import { HfTokenizer, SafetensorsFile } from '../../../src/io/index.ts';
import { Rng } from '../../../src/linalg/index.ts';
import { type LoadedModel, loadModel } from '../../../src/models/index.ts';
import {
  type AdaptableBase,
  adaptable,
  type LayerInfo,
  loadAdapter,
  PeftModel,
  readAdapterConfig,
  saveAdapter,
  toMatrix,
} from '../../../src/peft/index.ts';
import { TokenDataset, loadDataset } from '../../../src/train/data/index.ts';
import { causalLmCalibrator, causalLmTask, train } from '../../../src/train/index.ts';
import { assertAllclose, needsShared } from '../../helpers.ts';
import { logitsOf } from '../logits.ts';

const ROOT = new URL('../../../', import.meta.url).pathname;
const SHARED = new URL('../../../../shared/data/', import.meta.url).pathname;
const FIXTURES = join(ROOT, 'test/fixtures/lora_ga');
const isLorakitError =
  (code: string, ...parts: string[]) =>
  (e: unknown) =>
    e instanceof LorakitError && e.code === code && parts.every((p) => e.message.includes(p));

// ---- float64 reference on one layer with a known gradient ----

/** [rows, cols] with orthonormal columns (Gram–Schmidt in float64 of a seeded Gaussian matrix). */
function orthonormal(rows: number, cols: number, seed: number): Float64Array {
  const r = new Rng(seed);
  const q = Float64Array.from(r.normalArray(rows * cols));
  for (let c = 0; c < cols; c++) {
    for (let p = 0; p < c; p++) {
      let d = 0;
      for (let k = 0; k < rows; k++) d += q[k * cols + c] * q[k * cols + p];
      for (let k = 0; k < rows; k++) q[k * cols + c] -= d * q[k * cols + p];
    }
    let n = 0;
    for (let k = 0; k < rows; k++) n += q[k * cols + c] ** 2;
    for (let k = 0; k < rows; k++) q[k * cols + c] /= Math.sqrt(n);
  }
  return q;
}

/** U [o, k]·diag(S)·V [i, k]ᵀ, [o, i] in float64. */
function compose(u: Float64Array, s: number[], v: Float64Array, o: number, i: number): Float64Array {
  const k = s.length;
  const m = new Float64Array(o * i);
  for (let p = 0; p < o; p++)
    for (let c = 0; c < i; c++) for (let j = 0; j < k; j++) m[p * i + c] += u[p * k + j] * s[j] * v[c * k + j];
  return m;
}

/** An [o, i] matrix in the stored layout of `kind` (Conv1D stores [in, out]), as float32. */
function stored(m: ArrayLike<number>, o: number, i: number, kind: 'linear' | 'conv1d'): Float32Array {
  const out = new Float32Array(o * i);
  for (let p = 0; p < o; p++) for (let c = 0; c < i; c++) out[kind === 'linear' ? p * i + c : c * o + p] = m[p * i + c];
  return out;
}

/** A base with one layer `proj` whose [out, in] weight is `w`. */
function oneLayer(w: ArrayLike<number>, o: number, i: number, kind: 'linear' | 'conv1d'): AdaptableBase {
  const weight = stored(w, o, i, kind);
  return {
    modules: [{ kind, path: 'proj', inFeatures: i, outFeatures: o, weightName: 'proj.weight', biasName: null }],
    outputHead: null,
    readWeight: async () => Float32Array.from(weight),
  };
}

const [O, I] = [7, 9];
const S = [0.9, 0.7, 0.55, 0.4, 0.3, 0.2, 0.1]; // distinct: each singular vector is defined up to its sign
const U = orthonormal(O, S.length, 21);
const V = orthonormal(I, S.length, 22);
const G = compose(U, S, V, O, I); // the gradient, rank 7 = q: svd_lowrank is exact here
const W0 = Float64Array.from(new Rng(23).normalArray(O * I, 0.5));

/** Adds a lora_ga adapter to a one-layer base whose calibration gradient is G; returns its matrices [out, in]. */
async function gaOn(base: AdaptableBase, kind: 'linear' | 'conv1d', config: Record<string, unknown>, seed = 5) {
  const peft = new PeftModel(base);
  const calibrate = async (layers: readonly LayerInfo[]) => new Map(layers.map((l) => [l.path, stored(G, O, I, kind)]));
  const a = await peft.addAdapter(
    'default',
    { target_modules: ['proj'], init_lora_weights: 'lora_ga', lora_ga_config: {}, ...config },
    { seed, calibrate },
  );
  const l = a.layers.get('proj')!;
  return {
    peft,
    info: l.info,
    s: l.settings.scaling as number,
    r: l.settings.r as number,
    A: l.values['lora_A.weight'],
    B: l.values['lora_B.weight'],
    res: Float64Array.from(toMatrix(l.info, a.bases.get('proj.weight')!)),
  };
}

/** Per row j of A [r, n] (dim 'row') or column j of B [m, r] (dim 'col'): got's sign that matches want (±1). */
function signs(got: ArrayLike<number>, want: ArrayLike<number>, r: number, dim: 'row' | 'col'): number[] {
  const n = got.length / r;
  return Array.from({ length: r }, (_, j) => {
    let d = 0;
    for (let t = 0; t < n; t++) {
      const k = dim === 'row' ? j * n + t : t * r + j;
      d += got[k] * want[k];
    }
    return d < 0 ? -1 : 1;
  });
}

/** got with each row (A) or column (B) flipped by `sign`. */
function flip(got: ArrayLike<number>, sign: number[], dim: 'row' | 'col'): Float64Array {
  const r = sign.length;
  const n = got.length / r;
  return Float64Array.from(got, (v, k) => v * sign[dim === 'row' ? Math.floor(k / n) : k % r]);
}

/** Asserts got equals want up to one sign per component; returns the signs. */
function assertUpToSign(got: ArrayLike<number>, want: ArrayLike<number>, r: number, dim: 'row' | 'col', o: object) {
  const sign = signs(got, want, r, dim);
  assertAllclose(flip(got, sign, dim), want, o);
  return sign;
}

/** W + s·B·A [o, i] in float64 from B [o, r], A [r, i]. */
function plusProduct(w: ArrayLike<number>, b: ArrayLike<number>, a: ArrayLike<number>, r: number, s: number) {
  const i = a.length / r;
  return Float64Array.from(w, (x, k) => {
    const [p, c] = [Math.floor(k / i), k % i];
    let t = 0;
    for (let j = 0; j < r; j++) t += b[p * r + j] * a[j * i + c];
    return x + s * t;
  });
}

/** PEFT's A and B (before scaling) from the known SVD: A[j] = V[:, a_j]ᵀ, B[:, j] = U[:, b_j]·S[b_j]. */
function referenceFactors(r: number, direction: string): { a: Float64Array; b: Float64Array; b0: number } {
  const idx: Record<string, [number[], number[]]> = {
    ArB2r: [Array.from({ length: r }, (_, j) => j), Array.from({ length: r }, (_, j) => r + j)],
    A2rBr: [Array.from({ length: r }, (_, j) => r + j), Array.from({ length: r }, (_, j) => j)],
    ArBr: [Array.from({ length: r }, (_, j) => 2 * j + 1), Array.from({ length: r }, (_, j) => 2 * j)],
  };
  const [ai, bi] = idx[direction];
  const k = S.length;
  const a = new Float64Array(r * I);
  const b = new Float64Array(O * r);
  for (let j = 0; j < r; j++) {
    for (let c = 0; c < I; c++) a[j * I + c] = V[c * k + ai[j]];
    for (let p = 0; p < O; p++) b[p * r + j] = U[p * k + bi[j]] * S[bi[j]];
  }
  return { a, b, b0: S[bi[0]] };
}

for (const kind of ['linear', 'conv1d'] as const) {
  for (const direction of ['ArB2r', 'A2rBr', 'ArBr']) {
    test(`lora_ga on a ${kind} with a known gradient: direction ${direction}, every fixed scale, as a float64 reference`, async () => {
      const r = 3;
      const ref = referenceFactors(r, direction);
      const scales = { stable: 4, gd_scale: 0, unit: 0 } as const;
      for (const [scale, gamma] of Object.entries(scales)) {
        const ga = { direction, scale, ...(gamma ? { stable_gamma: gamma } : {}) };
        const got = await gaOn(oneLayer(W0, O, I, kind), kind, { r, lora_alpha: 5, lora_ga_config: ga });
        // PEFT's stable m is the stored weight's first dimension: out for a Linear, in for GPT-2's Conv1D [in, out]
        let [fa, fb] = [1, 1];
        if (scale === 'stable') fb = (kind === 'linear' ? O : I) ** 0.25 / Math.sqrt(gamma);
        if (scale === 'gd_scale') [fa, fb] = [1 / got.s, 1 / got.s];
        const what = `${kind} ${direction} ${scale}`;
        const tol = { atol: 5e-7, rtol: 0 };
        assertUpToSign(
          got.A,
          ref.a.map((x) => x * fa),
          r,
          'row',
          { ...tol, what: `${what} A` },
        );
        assertUpToSign(
          got.B,
          ref.b.map((x) => x * fb),
          r,
          'col',
          { ...tol, what: `${what} B` },
        );
        assertAllclose(plusProduct(got.res, got.B, got.A, r, got.s), W0, {
          atol: 2e-6,
          rtol: 0,
          what: `${what} W_res`,
        });
      }
    });
  }
}

test('lora_ga weight_svd scales B to the largest singular value of W0', async () => {
  // W0 = 3·u·vᵀ + small noise: a gap so wide that svd_lowrank(W0, q=r, niter=4) finds σ₁ to rounding
  const [u1, v1] = [orthonormal(O, 1, 31), orthonormal(I, 1, 32)];
  const noise = new Rng(33).normalArray(O * I, 0.01);
  const w = Float64Array.from(compose(u1, [3], v1, O, I), (x, k) => x + noise[k]);
  let x: Float64Array = Float64Array.from({ length: I }, () => 1); // σ₁ by power iteration on WᵀW, float64
  let sigma = 0;
  for (let it = 0; it < 200; it++) {
    const wx = Array.from({ length: O }, (_, p) => x.reduce((t, xc, c) => t + w[p * I + c] * xc, 0));
    const y = Float64Array.from({ length: I }, (_, c) => wx.reduce((t, z, p) => t + w[p * I + c] * z, 0));
    const n = Math.hypot(...y);
    sigma = Math.sqrt(n / Math.hypot(...x));
    x = y.map((t) => t / n);
  }
  const r = 2;
  const ref = referenceFactors(r, 'A2rBr');
  const got = await gaOn(oneLayer(w, O, I, 'linear'), 'linear', {
    r,
    lora_alpha: 2,
    lora_ga_config: { direction: 'A2rBr', scale: 'weight_svd' },
  });
  assertUpToSign(got.A, ref.a, r, 'row', { atol: 2e-6, rtol: 0, what: 'A' });
  const b = ref.b.map((t) => (t * sigma) / ref.b0); // B[:, 0] has norm σ₁
  assertUpToSign(got.B, b, r, 'col', { atol: 1e-5, rtol: 0, what: 'B' });
  assertAllclose(plusProduct(got.res, got.B, got.A, r, got.s), w, { atol: 2e-6, rtol: 0, what: 'W_res' });
});

test('lora_ga random draws r of the first 2r components, the same ones for A and B; rsLoRA keeps W_res + s·B·A = W0', async () => {
  const r = 3;
  const got = await gaOn(oneLayer(W0, O, I, 'linear'), 'linear', {
    r,
    lora_alpha: 4,
    use_rslora: true,
    lora_ga_config: { direction: 'random', scale: 'unit' },
  });
  assert.equal(got.s, 4 / Math.sqrt(3));
  const k = S.length;
  const picked: number[] = [];
  for (let j = 0; j < r; j++) {
    const row = got.A.subarray(j * I, (j + 1) * I);
    const c = [...Array(2 * r).keys()].find((t) => Math.abs(row.reduce((d, x, q) => d + x * V[q * k + t], 0)) > 0.999);
    assert.ok(c !== undefined, `A[${j}] is one of the first 2r right singular vectors`);
    const sign = Math.sign(row.reduce((d, x, q) => d + x * V[q * k + c], 0));
    const col = Array.from({ length: O }, (_, p) => got.B[p * r + j]);
    const bs = Math.sign(col.reduce((d, x, p) => d + x * U[p * k + c], 0));
    assertAllclose(
      col,
      col.map((_, p) => bs * U[p * k + c] * S[c]),
      { atol: 2e-6, rtol: 0, what: `B[:, ${j}] is component ${c} (sign ${sign})` },
    );
    picked.push(c);
  }
  assert.equal(new Set(picked).size, r, `distinct components ${picked}`);
  assertAllclose(plusProduct(got.res, got.B, got.A, r, got.s), W0, { atol: 2e-6, rtol: 0, what: 'W_res' });
});

test('lora_ga refuses a config without lora_ga_config, a rank above min(out, in)/2, and a missing calibrate', async () => {
  const base = () => oneLayer(W0, O, I, 'linear');
  await assert.rejects(
    new PeftModel(base()).addAdapter(
      'x',
      { target_modules: ['proj'], init_lora_weights: 'lora_ga' },
      { calibrate: async () => new Map() },
    ),
    isLorakitError('LK_CONFIG_INVALID', 'lora_ga_config'),
  );
  await assert.rejects(gaOn(base(), 'linear', { r: 4 }), isLorakitError('LK_CONFIG_INVALID', 'proj', '2r', 'r = 4'));
  await assert.rejects(
    gaOn(base(), 'linear', { lora_ga_config: { direction: 'BrA2r' } }),
    isLorakitError('LK_CONFIG_INVALID', 'lora_ga_config.direction'),
  );
  await assert.rejects(
    new PeftModel(base()).addAdapter('x', {
      target_modules: ['proj'],
      r: 2,
      init_lora_weights: 'lora_ga',
      lora_ga_config: {},
    }),
    isLorakitError('LK_INVALID_ARGUMENT', 'calibrat'),
  );
});

// ---- PEFT's lora_ga on the fixture models ----

interface GaFixture {
  base_model: string;
  lora_config: Record<string, unknown>;
  batches: number[][][];
  lora_layers: Record<string, { r: number; scaling: number }>;
  checks: Record<string, number | number[]>;
}

async function readTensors(file: string): Promise<Record<string, Float32Array>> {
  const st = await SafetensorsFile.open(file);
  try {
    return Object.fromEntries(await Promise.all(st.names().map(async (k) => [k, await st.readAs(k, 'f32')] as const)));
  } finally {
    await st.close();
  }
}

/** The fixture's calibration batches as a dataset of bsz-row batches: every token counted except each row's first. */
function batchesOf(batches: number[][][]): { data: TokenDataset; n: number; bsz: number } {
  const [n, bsz, T] = [batches.length, batches[0].length, batches[0][0].length];
  const ids = Int32Array.from(batches.flat(2));
  const labels = Int32Array.from(ids, (v, k) => (k % T === 0 ? -100 : v));
  return { data: new TokenDataset({ seqLen: T, ids, labels, lengths: new Uint32Array(n * bsz).fill(T) }, 0), n, bsz };
}

for (const name of readdirSync(FIXTURES).sort()) {
  test(`lora_ga equals PEFT's on ${name}: the calibration gradient, A and B up to sign, the residual`, async () => {
    const fx: GaFixture = JSON.parse(readFileSync(join(FIXTURES, name, 'expected.json'), 'utf8'));
    const want = await readTensors(join(FIXTURES, name, 'expected.safetensors'));
    const model = await loadModel(join(ROOT, fx.base_model));
    try {
      const { data, n, bsz } = batchesOf(fx.batches);
      const calibrator = causalLmCalibrator({ model, train: data, batchSize: bsz });
      const grads = new Map<string, Float32Array>();
      const calibrate = async (layers: readonly LayerInfo[], batches: number) => {
        for (const [k, g] of await calibrator(layers, batches)) grads.set(k, g);
        return grads;
      };
      const peft = new PeftModel(adaptable(model));
      const a = await peft.addAdapter('default', { ...fx.lora_config, lora_ga_batches: n }, { seed: 9, calibrate });
      assert.deepEqual([...a.layers.keys()].sort(), Object.keys(fx.lora_layers).sort());
      const ga = fx.lora_config.lora_ga_config as { scale?: string };
      for (const [path, l] of a.layers) {
        const { r, scaling: s } = l.settings;
        assertAllclose([s], [fx.lora_layers[path].scaling], { rtol: 1e-7, atol: 0, what: `${path}: s` });
        const g = want[`grad.${path}.weight`];
        const gmax = g.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
        assertAllclose(grads.get(path)!, g, { atol: 1e-5 * gmax, rtol: 0, what: `${path}: gradient` });
        const [pa, pb] = [want[`init.${path}.lora_A.weight`], want[`init.${path}.lora_B.weight`]];
        const [A, B] = [l.values['lora_A.weight'], l.values['lora_B.weight']];
        const dA = assertUpToSign(A, pa, r, 'row', { atol: 2e-5, rtol: 0, what: `${path}: A` });
        const bmax = pb.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
        let dB: number[];
        if (ga.scale === 'weight_svd') {
          // σ̂₁ comes from svd_lowrank(W0, q=r, niter=4) with its own sketch: B's direction is PEFT's, its scale
          // a Rayleigh–Ritz estimate, never above σ₁ (PEFT's own was 8% below on this matrix)
          const norm0 = (b: Float32Array) => Math.hypot(...Array.from({ length: b.length / r }, (_, p) => b[p * r]));
          const sigma = fx.checks[`${path}.weight_svd_sigma1_exact`] as number;
          const [mine, peftB] = [norm0(B), norm0(pb)];
          assert.ok(mine <= sigma * (1 + 1e-5) && mine > 0.75 * sigma, `${path}: σ̂₁ ${mine}, σ₁ ${sigma}`);
          const unit = (b: Float32Array, z: number) => Float32Array.from(b, (x) => x / z);
          dB = assertUpToSign(unit(B, mine), unit(pb, peftB), r, 'col', { atol: 2e-5, rtol: 0, what: `${path}: B` });
        } else {
          dB = assertUpToSign(B, pb, r, 'col', { atol: 5e-5 * bmax, rtol: 0, what: `${path}: B` });
        }
        // PEFT's residual is W0 − s·B·A with its signs: lorakit's, re-signed to PEFT's factors, equals it
        const mine = Float64Array.from(toMatrix(l.info, a.bases.get(l.module.weightName)!));
        const w0 = plusProduct(mine, B, A, r, s);
        const resigned = plusProduct(w0, flip(B, dB, 'col'), flip(A, dA, 'row'), r, -s);
        const peftRes = toMatrix(l.info, want[`residual.${path}.weight`]);
        assertAllclose(w0, toMatrix(l.info, await model.read(l.module.weightName)), {
          atol: 1e-6,
          rtol: 0,
          what: `${path}: W_res + s·B·A = W0`,
        });
        if (ga.scale !== 'weight_svd')
          assertAllclose(resigned, peftRes, { atol: 2e-6, rtol: 0, what: `${path}: residual vs PEFT's` });
      }
      // the model's output is unchanged at init
      const inputs = JSON.parse(readFileSync(join(ROOT, fx.base_model, 'expected.json'), 'utf8'));
      const adapted = { hooks: peft.hooks(), overrides: peft.weightOverrides() };
      assertAllclose(await logitsOf(model, inputs, adapted), await logitsOf(model, inputs), {
        atol: 2e-5,
        rtol: 0,
        what: 'logits at init',
      });
    } finally {
      await model.close();
    }
  });
}

// ---- a causal-LM run ----

async function heldOutLoss(model: LoadedModel, peft: PeftModel, data: Awaited<ReturnType<typeof loadDataset>>) {
  const task = causalLmTask({ model, peft, adapter: 'default', train: data.train, eval: data.eval, batchSize: 4 });
  return (await task.evaluate!(peft.trainableValues('default'))).loss;
}

test('a causal-LM run from a lora_ga config calibrates on its first batches, trains, saves, reloads, and converts to a ' +
  'plain LoRA of the untouched base', { skip: needsShared('tinyshakespeare/input.txt') }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lk-loraga-'));
  writeFileSync(join(dir, 'text.txt'), readFileSync(join(SHARED, 'tinyshakespeare/input.txt'), 'utf8').slice(0, 6000));
  const modelDir = join(ROOT, 'test/fixtures/models/llama');
  const model = await loadModel(modelDir);
  try {
    const tokenizer = await HfTokenizer.fromDir(modelDir);
    const data = await loadDataset(join(dir, 'text.txt'), { tokenizer, seqLen: 32, heldOut: 0.2, cacheDir: false });
    const config = {
      target_modules: ['q_proj', 'v_proj', 'down_proj'],
      r: 4,
      lora_alpha: 8,
      init_lora_weights: 'lora_ga',
      lora_ga_config: { stable_gamma: 4 },
      lora_ga_batches: 3,
    };
    const calibrate = causalLmCalibrator({ model, train: data.train, batchSize: 4, seed: 7 });
    const peft = new PeftModel(adaptable(model));
    await peft.addAdapter('default', config, { seed: 7, calibrate });
    const before = await heldOutLoss(model, peft, data); // the base model's: the output is unchanged at init
    const task = causalLmTask({
      model,
      peft,
      adapter: 'default',
      train: data.train,
      eval: data.eval,
      batchSize: 4,
      dataSeed: 7,
      baseModelName: modelDir,
    });
    const result = await train(task, {
      outputDir: join(dir, 'run'),
      steps: 12,
      lr: 5e-3,
      evalEvery: 12,
      progress: 'none',
      plot: false,
    });
    const after = result.bestEvalLoss!;
    assert.ok(after < before - 0.02, `held-out loss ${before} -> ${after}`);
    peft.setValues('default', result.params);
    const inputs = JSON.parse(readFileSync(join(modelDir, 'expected.json'), 'utf8'));
    const trained = await logitsOf(model, inputs, { hooks: peft.hooks(), overrides: peft.weightOverrides() });

    // the trained form (saveAdapter without convertToBase), whose W_res only the run's calibration and seed
    // rebuild: the batch count is a training setting PEFT's config lacks, so the folder does not record it
    const saved = join(dir, 'trained');
    await saveAdapter(peft, 'default', saved);
    const savedConfig = await readAdapterConfig(saved);
    assert.equal(savedConfig.init_lora_weights, 'lora_ga');
    assert.deepEqual(savedConfig.lora_ga_config, { direction: 'ArB2r', scale: 'stable', stable_gamma: 4 });
    assert.ok(!('lora_ga_batches' in savedConfig), 'the calibration batch count is left out');
    const again = new PeftModel(adaptable(model));
    await loadAdapter(again, saved, 'default', { seed: 7, calibrate: (layers) => calibrate(layers, 3) });
    for (const l of peft.get('default').layers.values()) {
      const w = l.module.weightName;
      assert.deepEqual(again.get('default').bases.get(w), peft.get('default').bases.get(w), `${w}: W_res rebuilt`);
    }
    const reloaded = await logitsOf(model, inputs, { hooks: again.hooks(), overrides: again.weightOverrides() });
    assertAllclose(reloaded, trained, { atol: 0, rtol: 0, what: 'reloaded with the run calibration' });

    // converted: a rank-2r LoRA of the untouched W0 that computes the trained model (the Trainer's final folder)
    const converted = join(dir, 'run', 'final');
    const convertedConfig = await readAdapterConfig(converted);
    assert.equal(convertedConfig.init_lora_weights, true);
    assert.equal(convertedConfig.r, 8);
    assert.equal(convertedConfig.lora_alpha, 16);
    assert.ok(!('lora_ga_config' in convertedConfig), 'a plain LoRA: PEFT < 0.19 would warn about lora_ga_config');
    const onBase = new PeftModel(adaptable(model));
    await loadAdapter(onBase, converted);
    assert.equal(onBase.get('default').bases.size, 0, 'the converted adapter leaves the base weights alone');
    const fromConverted = await logitsOf(model, inputs, { hooks: onBase.hooks() });
    assertAllclose(fromConverted, trained, { atol: 1e-4, rtol: 0, what: 'converted on the untouched base' });
    const untouched = await logitsOf(model, inputs);
    assert.ok(
      trained.some((v, k) => Math.abs(v - untouched[k]) > 1e-3),
      'the trained adapter changes the output',
    );
  } finally {
    await model.close();
  }
});
