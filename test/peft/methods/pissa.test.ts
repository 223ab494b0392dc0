// PiSSA (init_lora_weights "pissa" / "pissa_niter_K"): s·B·A is W0's best rank-r approximation (checked against a
// matrix built from a known spectrum, so no decomposition is trusted) and W_res + s·B·A = W0; the randomized variant
// is close on a matrix with a spectral gap; the factors, residuals and DoRA magnitudes equal PEFT's on the fixture
// models (interop/make_init_fixtures.py), a PEFT PiSSA folder loads with PEFT's logits, lorakit's conversion to a
// rank-2r LoRA of the untouched base agrees with PEFT's, and PEFT loads lorakit's converted folders
// (test/fixtures/lorakit/*_converted, interop/check_lorakit_adapters.py) with the logits of the PiSSA adapter on its
// residual base. The contract row is in test/peft/contract.test.ts.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { CASES, perturb } from '../../../scripts/make-lorakit-adapters.ts';
import { LorakitError } from '../../../src/errors.ts';
import { Rng } from '../../../src/linalg/index.ts';
import { adaptable, loadAdapter, PeftModel } from '../../../src/peft/index.ts';
import { adapterTraining } from '../../../src/train/index.ts';
import { assertAllclose } from '../../helpers.ts';
import { withSpectrum } from '../../linalg/helpers.ts';
import { toyBase } from '../toy.ts';
import {
  adaptedLogits,
  asMatrix,
  assertFactors,
  folderLogits,
  oneLayerBase,
  readInitFixture,
  readTensors,
  ROOT,
  scaledProduct,
  withConverted,
  withModel,
} from './init-fixtures.ts';

const code = (c: string, re?: RegExp) => (e: unknown) =>
  e instanceof LorakitError && e.code === c && (!re || re.test(e.message));

/** PiSSA on a one-layer base of [out, in] matrix `w`: the adapter's factors, residual (as a matrix) and scaling. */
async function initOne(w: Float64Array, o: number, i: number, config: Record<string, unknown>, kind = 'linear') {
  const k = kind as 'linear' | 'conv1d';
  const peft = new PeftModel(oneLayerBase(w, o, i, { kind: k }));
  const a = await peft.addAdapter('default', { target_modules: ['proj'], ...config }, { seed: 5 });
  const l = a.layers.get('proj')!;
  const residual = asMatrix(a.bases.get('proj.weight')!, o, i, k);
  return { A: l.values['lora_A.weight'], B: l.values['lora_B.weight'], residual, s: l.settings.scaling as number };
}

/** The best rank-r approximation of U0·diag(σ)·V0ᵀ: its first r components (Eckart–Young), [m, n]. */
function truncation(u0: Float64Array, sigma: number[], v0: Float64Array, m: number, n: number, r: number) {
  const k = sigma.length;
  const out = new Float64Array(m * n);
  for (let p = 0; p < m; p++)
    for (let c = 0; c < n; c++) {
      let t = 0;
      for (let j = 0; j < r; j++) t += u0[p * k + j] * sigma[j] * v0[c * k + j];
      out[p * n + c] = t;
    }
  return out;
}

const addInPlace = (x: Float64Array, y: ArrayLike<number>) => x.map((v, k) => v + y[k]);

for (const [kind, m, n] of [
  ['linear', 24, 40],
  ['conv1d', 40, 24],
] as const) {
  test(`pissa on a ${kind} [${m}, ${n}]: s·B·A is the rank-r truncation of W0, A and B share √(σ/s), W_res + s·B·A = W0`, async () => {
    const k = Math.min(m, n);
    const sigma = Array.from({ length: k }, (_, j) => 3 * 0.85 ** j); // distinct, no gap needed for the exact SVD
    const { a: w, u0, v0 } = withSpectrum(new Rng(7), m, n, sigma);
    const r = 5;
    const { A, B, residual, s } = await initOne(w, m, n, { r, lora_alpha: 7, init_lora_weights: 'pissa' }, kind);
    const sba = scaledProduct(B, A, m, r, n, s);
    assertAllclose(sba, truncation(u0, sigma, v0, m, n, r), { atol: 2e-6, rtol: 0, what: 's·B·A' });
    for (let j = 0; j < r; j++) {
      const norm = (x: number[]) => Math.hypot(...x);
      const want = Math.sqrt(sigma[j] / s);
      assertAllclose([norm([...A.subarray(j * n, (j + 1) * n)])], [want], { rtol: 1e-6, what: `‖A[${j}]‖` });
      assertAllclose([norm(Array.from({ length: m }, (_, p) => B[p * r + j]))], [want], { rtol: 1e-6, what: 'B' });
    }
    // float32 rounding of W_res (|W| ≤ ~1) is the only error
    assertAllclose(addInPlace(sba, residual), w, { atol: 5e-7, rtol: 0, what: 'W_res + s·B·A' });
  });
}

test('pissa_niter_K: on a matrix with a spectral gap the randomized factors give the exact truncation (host and ONNX Runtime products)', async () => {
  for (const [m, n] of [
    [48, 40],
    [320, 256], // m·n > 65,536: svdLowrank's products run as ORT graphs
  ]) {
    const k = Math.min(m, n);
    const r = 4;
    const sigma = Array.from({ length: k }, (_, j) => (j < r ? 4 - 0.5 * j : 0.05 * 0.97 ** j)); // gap σ_5/σ_4 = 0.02
    const { a: w, u0, v0 } = withSpectrum(new Rng(11), m, n, sigma);
    const { A, B, residual, s } = await initOne(w, m, n, { r, lora_alpha: 8, init_lora_weights: 'pissa_niter_2' });
    const sba = scaledProduct(B, A, m, r, n, s);
    assertAllclose(sba, truncation(u0, sigma, v0, m, n, r), { atol: 1e-5, rtol: 0, what: `[${m}, ${n}] s·B·A` });
    assertAllclose(addInPlace(sba, residual), w, { atol: 5e-7, rtol: 0, what: `[${m}, ${n}] W_res + s·B·A` });
    // the sketch is drawn from the adapter's seeded generator: the same seed gives the same factors
    const again = await initOne(w, m, n, { r, lora_alpha: 8, init_lora_weights: 'pissa_niter_2' });
    assert.deepEqual(again.A, A);
  }
});

test('pissa_niter_K absorbs the randomized error into W_res: without a gap (niter 0) s·B·A is off the truncation, W_res + s·B·A = W0 still', async () => {
  const [m, n, r] = [30, 20, 3];
  const sigma = Array.from({ length: 20 }, (_, j) => 1 - 0.02 * j); // flat spectrum: one pass of a sketch is poor
  const { a: w, u0, v0 } = withSpectrum(new Rng(3), m, n, sigma);
  const { A, B, residual, s } = await initOne(w, m, n, { r, lora_alpha: 3, init_lora_weights: 'pissa_niter_0' });
  const sba = scaledProduct(B, A, m, r, n, s);
  const best = truncation(u0, sigma, v0, m, n, r);
  assert.ok(
    sba.some((v, i) => Math.abs(v - best[i]) > 0.05),
    'a single sketch misses the top subspace',
  );
  assertAllclose(addInPlace(sba, residual), w, { atol: 5e-7, rtol: 0, what: 'W_res + s·B·A' });
});

test('pissa refuses unknown spellings, weights PEFT does not decompose, and r above min(out, in)', async () => {
  const w = Float64Array.from({ length: 12 }, (_, k) => Math.sin(k));
  const peft = new PeftModel(oneLayerBase(w, 3, 4));
  await assert.rejects(
    peft.addAdapter('a', { target_modules: ['proj'], r: 2, init_lora_weights: 'pissa_niter_x' }),
    code('LK_CONFIG_INVALID', /init_lora_weights = "pissa_niter_x" is not supported; expected .*"pissa_niter_<K>"/),
  );
  await assert.rejects(
    peft.addAdapter('b', { target_modules: ['proj'], r: 4, init_lora_weights: 'pissa' }),
    code('LK_CONFIG_INVALID', /proj, whose weight is \[3, 4\].*r = 4/),
  );
  const f64 = new PeftModel(oneLayerBase(w, 3, 4, { dtype: 'F64' }));
  await assert.rejects(
    f64.addAdapter('c', { target_modules: ['proj'], r: 2, init_lora_weights: 'pissa' }),
    code('LK_UNSUPPORTED', /cannot initialise proj: its weight is stored as F64/),
  );
  const bf16 = new PeftModel(oneLayerBase(w, 3, 4, { dtype: 'BF16' }));
  await bf16.addAdapter('d', { target_modules: ['proj'], r: 2, init_lora_weights: 'pissa' });
});

for (const name of ['llama_pissa', 'gpt2_pissa', 'llama_pissa_dora']) {
  test(`PEFT fixture ${name}: initial A, B equal PEFT's up to a sign per component, residuals and magnitudes equal PEFT's, logits unchanged`, async () => {
    const f = await readInitFixture(name);
    await withModel(f.expected.base_model, async (model) => {
      const inputs = { input_ids: f.expected.input_ids };
      const base = await adaptedLogits(model, inputs, null);
      const peft = new PeftModel(adaptable(model));
      const a = await peft.addAdapter('default', f.expected.lora_config, { seed: 1 });
      assert.deepEqual([...a.layers.keys()].sort(), Object.keys(f.expected.lora_layers).sort());
      for (const [path, l] of a.layers) {
        const [o, i, r] = [l.info.outFeatures, l.info.inFeatures, l.settings.r];
        const t = (k: string) => f.tensors[`init.${path}.${k}`];
        const want = { a: t('lora_A.weight'), b: t('lora_B.weight') };
        const got = { a: l.values['lora_A.weight'], b: l.values['lora_B.weight'] };
        // PEFT's SVD runs in float32: on GPT-2's c_attn, whose σ_4 − σ_5 = 0.002, its residual is 4.6e-6 off the
        // float64 truncation (torch float64 SVD) and its factors 1.2e-5 off lorakit's; elsewhere 1e-6 and 4e-6
        assertFactors(got, want, { o, r, i }, { atol: 3e-5, what: path });
        const residual = a.bases.get(l.module.weightName)!;
        assertAllclose(residual, f.tensors[`residual.${path}.weight`], { atol: 1e-5, rtol: 0, what: `${path} W_res` });
        if (t('lora_magnitude_vector')) {
          assertAllclose(l.values.lora_magnitude_vector, t('lora_magnitude_vector'), {
            rtol: 1e-6,
            atol: 0,
            what: `${path} DoRA magnitude`,
          });
          // ‖W_res + s·B·A‖ per row is ‖W0‖'s
          const w0 = asMatrix(await l.info.readWeight(), o, i, l.info.kind as 'linear' | 'conv1d');
          const rows = Array.from({ length: o }, (_, p) => Math.hypot(...w0.subarray(p * i, (p + 1) * i)));
          assertAllclose(l.values.lora_magnitude_vector, rows, { rtol: 1e-6, atol: 0, what: `${path} ‖W0‖` });
        }
      }
      assertAllclose(await adaptedLogits(model, inputs, peft), base, { atol: 1e-5, rtol: 0, what: 'logits at init' });
    });
  });

  test(`PEFT fixture ${name}: PEFT's PiSSA folder on the original base gives PEFT's adapted logits (the init re-runs at load)`, async () => {
    const f = await readInitFixture(name);
    const got = await folderLogits(f.expected.base_model, f.expected, join(f.dir, 'adapter'));
    assertAllclose(got, f.tensors.logits, { atol: 1e-4, rtol: 0, what: `${name} logits` });
  });
}

for (const name of ['llama_pissa', 'gpt2_pissa', 'llama_pissa_dora']) {
  test(`PEFT fixture ${name}: lorakit's conversion to a rank-2r LoRA of the untouched base agrees with PEFT's`, async () => {
    const f = await readInitFixture(name);
    const dora = f.expected.lora_config.use_dora === true;
    await withModel(f.expected.base_model, async (model) => {
      const peft = new PeftModel(adaptable(model));
      await loadAdapter(peft, join(f.dir, 'adapter'));
      await withConverted(peft, async (dir) => {
        const config = JSON.parse(await readFile(join(dir, 'adapter_config.json'), 'utf8'));
        const want = f.expected.converted_config;
        for (const k of ['r', 'lora_alpha', 'init_lora_weights', 'use_dora', 'use_rslora', 'target_modules'])
          assert.deepEqual(k === 'target_modules' ? [...config[k]].sort() : config[k], want[k], `config ${k}`);
        // lorakit keeps DoRA's trained magnitudes (exact); PEFT's conversion drops them (recorded by the fixture)
        const logits = await folderLogits(f.expected.base_model, f.expected, dir);
        assertAllclose(logits, f.tensors.logits, { atol: 1e-4, rtol: 0, what: 'converted folder logits' });
        if (dora) {
          assert.ok(f.expected.max_abs_diff_converted_vs_adapted > 0.01, "PEFT's converted DoRA folder is off");
          return;
        }
        const ours = await readTensors(join(dir, 'adapter_model.safetensors'));
        const theirs = await readTensors(join(f.dir, 'converted', 'adapter_model.safetensors'));
        assert.deepEqual(Object.keys(ours).sort(), Object.keys(theirs).sort());
        for (const [path, l] of peft.get('default').layers) {
          const [o, i, r] = [l.info.outFeatures, l.info.inFeatures, l.settings.r];
          const key = (p: string) => `base_model.model.${path}.${p}.weight`;
          const [aO, bO, aT, bT] = [
            ours[key('lora_A')],
            ours[key('lora_B')],
            theirs[key('lora_A')],
            theirs[key('lora_B')],
          ];
          // the trained halves are the file's values; B0·A0 is the same whatever the signs of the components
          assert.deepEqual(aO.subarray(0, r * i), aT.subarray(0, r * i), `${path} trained A`);
          assertAllclose(scaledProduct(bO, aO, o, 2 * r, i, 1), scaledProduct(bT, aT, o, 2 * r, i, 1), {
            atol: 1e-5, // PEFT's float32 SVD, as above
            rtol: 0,
            what: `${path} B'·A'`,
          });
        }
        const peftConverted = await folderLogits(f.expected.base_model, f.expected, join(f.dir, 'converted'));
        assertAllclose(peftConverted, f.tensors.logits, { atol: 1e-4, rtol: 0, what: "PEFT's converted folder" });
      });
    });
  });
}

for (const name of ['llama_pissa_converted', 'llama_pissa_dora_converted']) {
  test(`${name}: PEFT's logits of lorakit's converted folder on the untouched base are the PiSSA adapter's on its residual base`, async () => {
    const c = CASES[name];
    const dir = join(ROOT, 'test/fixtures/lorakit', name);
    const inputs = JSON.parse(await readFile(join(dir, 'inputs.json'), 'utf8'));
    const peftLogits = await readTensors(join(dir, 'peft_logits.safetensors'));
    await withModel(`test/fixtures/models/${c.base}`, async (model) => {
      const peft = new PeftModel(adaptable(model));
      await peft.addAdapter('default', c.config, { seed: c.seed });
      perturb(peft, 'default', c.seed);
      assert.ok(peft.get('default').bases.size > 0);
      const residual = await adaptedLogits(model, inputs, peft);
      assertAllclose(residual, peftLogits.logits, { atol: 1e-4, rtol: 0, what: `${name}` });
    });
  });
}

test("the Trainer's adapter folder of a PiSSA adapter is the converted rank-2r LoRA; convertToBase: false keeps the trained form", async () => {
  const peft = new PeftModel(toyBase());
  await peft.addAdapter('default', { r: 2, lora_alpha: 3, init_lora_weights: 'pissa', target_modules: ['q_proj'] });
  const params = peft.trainableValues('default');
  for (const [settings, r, alpha, init] of [
    [{}, 4, 6, true],
    [{ convertToBase: false }, 2, 3, 'pissa'],
  ] as const) {
    const dir = await mkdtemp(join(tmpdir(), 'lk-pissa-save-'));
    try {
      await adapterTraining(peft, 'default', settings).save(dir, params);
      const config = JSON.parse(await readFile(join(dir, 'adapter_config.json'), 'utf8'));
      assert.deepEqual([config.r, config.lora_alpha, config.init_lora_weights], [r, alpha, init]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
});
