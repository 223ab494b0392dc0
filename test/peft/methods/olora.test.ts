// OLoRA (init_lora_weights "olora"): B = Q[:, :r] and A = R[:r, :] of W0 = Q·R, checked by what defines them
// (B orthonormal and spanning W0's first r columns, A = Bᵀ·W0 with R's zeros below the diagonal) and by PEFT's own
// factors (interop/make_init_fixtures.py), signs included; W_res + s·B·A = W0; Conv1D factors its [out, in] matrix
// (PEFT's olora_init does not, and fails or changes the output: recorded in the fixture); a rank-deficient leading
// block falls back to the pivoted QR; a PEFT OLoRA folder loads with PEFT's logits and lorakit's conversion agrees
// with PEFT's; PEFT loads lorakit's converted Conv1D OLoRA (test/fixtures/lorakit/gpt2_olora_converted).
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { CASES, perturb } from '../../../scripts/make-lorakit-adapters.ts';
import { qrPivoted, Rng } from '../../../src/linalg/index.ts';
import { adaptable, loadAdapter, PeftModel } from '../../../src/peft/index.ts';
import { assertAllclose } from '../../helpers.ts';
import {
  adaptedLogits,
  asMatrix,
  assertFactors,
  folderLogits,
  INIT_DIR,
  oneLayerBase,
  readInitFixture,
  readTensors,
  ROOT,
  scaledProduct,
  withConverted,
  withModel,
} from './init-fixtures.ts';

/** OLoRA on a one-layer base of [out, in] matrix `w`: the adapter's factors, residual (as a matrix) and scaling. */
async function initOne(w: ArrayLike<number>, o: number, i: number, r: number, kind: 'linear' | 'conv1d' = 'linear') {
  const peft = new PeftModel(oneLayerBase(w, o, i, { kind }));
  const cfg = { target_modules: ['proj'], r, lora_alpha: 3 * r, init_lora_weights: 'olora' };
  const a = await peft.addAdapter('default', cfg, { seed: 2 });
  const l = a.layers.get('proj')!;
  const residual = asMatrix(a.bases.get('proj.weight')!, o, i, kind);
  return { A: l.values['lora_A.weight'], B: l.values['lora_B.weight'], residual, s: l.settings.scaling as number };
}

/** Max |BᵀB − I| of B [o, r]. */
function orthoError(b: ArrayLike<number>, o: number, r: number): number {
  let worst = 0;
  for (let j = 0; j < r; j++)
    for (let k = 0; k < r; k++) {
      let t = 0;
      for (let p = 0; p < o; p++) t += b[p * r + j] * b[p * r + k];
      worst = Math.max(worst, Math.abs(t - (j === k ? 1 : 0)));
    }
  return worst;
}

/** Max over columns c of ‖(I − B·Bᵀ)·W[:, c]‖, for the listed columns of W [o, i]. */
function outsideSpan(b: ArrayLike<number>, w: ArrayLike<number>, o: number, r: number, i: number, cols: number[]) {
  let worst = 0;
  for (const c of cols) {
    const proj = new Float64Array(r);
    for (let j = 0; j < r; j++) for (let p = 0; p < o; p++) proj[j] += b[p * r + j] * w[p * i + c];
    let n = 0;
    for (let p = 0; p < o; p++) {
      let x = w[p * i + c];
      for (let j = 0; j < r; j++) x -= b[p * r + j] * proj[j];
      n += x * x;
    }
    worst = Math.max(worst, Math.sqrt(n));
  }
  return worst;
}

const gaussian = (seed: number, n: number) => Float64Array.from(new Rng(seed).normalArray(n, 0.5));
const addInPlace = (x: Float64Array, y: ArrayLike<number>) => x.map((v, k) => v + y[k]);

for (const [o, i, r] of [
  [20, 12, 4],
  [8, 30, 8], // r = out: Q is square
]) {
  test(`olora on [${o}, ${i}], r ${r}: B orthonormal spanning W0[:, :r], A = Bᵀ·W0 upper trapezoidal, W_res + s·B·A = W0`, async () => {
    const w = gaussian(o * 100 + i, o * i);
    const { A, B, residual, s } = await initOne(w, o, i, r);
    assert.ok(orthoError(B, o, r) < 1e-6, 'BᵀB = I');
    const lead = Array.from({ length: r }, (_, c) => c);
    assert.ok(outsideSpan(B, w, o, r, i, lead) < 1e-5, 'W0[:, :r] lies in span(B)');
    const btw = scaledProduct(
      Array.from({ length: r * o }, (_, k) => B[(k % o) * r + Math.floor(k / o)]), // Bᵀ [r, o]
      w,
      r,
      o,
      i,
      1,
    );
    assertAllclose(A, btw, { atol: 2e-6, rtol: 0, what: 'A = Bᵀ·W0' });
    for (let j = 0; j < r; j++) for (let c = 0; c < j; c++) assert.ok(Math.abs(A[j * i + c]) < 1e-6, `R[${j}, ${c}]`);
    assertAllclose(addInPlace(scaledProduct(B, A, o, r, i, s), residual), w, {
      atol: 1e-6,
      rtol: 0,
      what: 'W_res + s·B·A',
    });
  });
}

test('olora on a Conv1D factors the [out, in] matrix: the same A and B as a Linear with that matrix, W_res stored [in, out]', async () => {
  const [o, i, r] = [10, 16, 3];
  const w = gaussian(5, o * i);
  const lin = await initOne(w, o, i, r, 'linear');
  const conv = await initOne(w, o, i, r, 'conv1d');
  assert.deepEqual(conv.A, lin.A);
  assert.deepEqual(conv.B, lin.B);
  assert.deepEqual(conv.residual, lin.residual);
});

test("PEFT's olora_init on GPT-2's Conv1D fails or changes the output (fixture); lorakit's leaves the fixture GPT-2 unchanged", async () => {
  const peftReport = JSON.parse(await readFile(join(INIT_DIR, 'olora_conv1d.json'), 'utf8'));
  assert.match(peftReport['attn.c_attn'].forward_error, /cannot be multiplied/);
  assert.ok(peftReport['attn.c_proj'].max_abs_diff_init_vs_base > 0.1);
  const inputs = JSON.parse(await readFile(join(ROOT, 'test/fixtures/models/gpt2/expected.json'), 'utf8'));
  await withModel('test/fixtures/models/gpt2', async (model) => {
    const base = await adaptedLogits(model, inputs, null);
    const peft = new PeftModel(adaptable(model));
    const cfg = { target_modules: ['c_attn', 'c_proj'], r: 4, lora_alpha: 8, fan_in_fan_out: true };
    await peft.addAdapter('default', { ...cfg, init_lora_weights: 'olora' });
    assertAllclose(await adaptedLogits(model, inputs, peft), base, { atol: 1e-5, rtol: 0, what: 'logits at init' });
  });
});

test("a rank-deficient W0[:, :r] falls back to the pivoted QR's columns; a zero weight gives A = 0 and W_res = 0", async () => {
  const [o, i, r] = [12, 9, 3];
  const w = gaussian(9, o * i);
  for (let p = 0; p < o; p++) w[p * i + 1] = 2 * w[p * i]; // column 1 = 2·column 0: W0[:, :3] has rank 2
  const { A, B, residual, s } = await initOne(w, o, i, r);
  const pivoted = qrPivoted(w, o, i, { steps: r });
  assertAllclose(B, pivoted.q, { atol: 1e-7, rtol: 0, what: 'B = the pivoted QR’s Q' });
  assert.ok(orthoError(B, o, r) < 1e-6, 'BᵀB = I');
  const picked = Array.from(pivoted.perm.subarray(0, r));
  assert.ok(outsideSpan(B, w, o, r, i, picked) < 1e-5, 'span(B) holds the r most independent columns');
  assertAllclose(addInPlace(scaledProduct(B, A, o, r, i, s), residual), w, { atol: 1e-6, rtol: 0, what: 'W0' });
  const zero = await initOne(new Float64Array(o * i), o, i, r);
  assert.ok(zero.A.every((x) => x === 0) && zero.residual.every((x) => x === 0));
  assert.ok(orthoError(zero.B, o, r) < 1e-12, 'B is still orthonormal');
});

test("PEFT fixture llama_olora: A and B equal PEFT's with the same signs, residuals equal PEFT's, logits unchanged; PEFT's folder gives PEFT's logits", async () => {
  const f = await readInitFixture('llama_olora');
  const inputs = { input_ids: f.expected.input_ids };
  await withModel(f.expected.base_model, async (model) => {
    const base = await adaptedLogits(model, inputs, null);
    const peft = new PeftModel(adaptable(model));
    const a = await peft.addAdapter('default', f.expected.lora_config);
    for (const [path, l] of a.layers) {
      const [o, i, r] = [l.info.outFeatures, l.info.inFeatures, l.settings.r];
      const want = { a: f.tensors[`init.${path}.lora_A.weight`], b: f.tensors[`init.${path}.lora_B.weight`] };
      const got = { a: l.values['lora_A.weight'], b: l.values['lora_B.weight'] };
      assertFactors(got, want, { o, r, i }, { exactSigns: true, atol: 1e-6, what: path });
      assertAllclose(a.bases.get(l.module.weightName)!, f.tensors[`residual.${path}.weight`], {
        atol: 1e-6,
        rtol: 0,
        what: `${path} W_res`,
      });
    }
    assertAllclose(await adaptedLogits(model, inputs, peft), base, { atol: 1e-5, rtol: 0, what: 'logits at init' });
  });
  const loaded = await folderLogits(f.expected.base_model, f.expected, join(f.dir, 'adapter'));
  assertAllclose(loaded, f.tensors.logits, { atol: 1e-4, rtol: 0, what: 'PEFT folder logits' });
});

test("PEFT fixture llama_olora: lorakit's conversion of PEFT's folder equals PEFT's conversion", async () => {
  const f = await readInitFixture('llama_olora');
  await withModel(f.expected.base_model, async (model) => {
    const peft = new PeftModel(adaptable(model));
    await loadAdapter(peft, join(f.dir, 'adapter'));
    await withConverted(peft, async (dir) => {
      const config = JSON.parse(await readFile(join(dir, 'adapter_config.json'), 'utf8'));
      for (const k of ['r', 'lora_alpha', 'init_lora_weights'])
        assert.deepEqual(config[k], f.expected.converted_config[k], k);
      // OLoRA's factors carry LAPACK's signs in both, so the rank-2r tensors agree one by one
      const ours = await readTensors(join(dir, 'adapter_model.safetensors'));
      const theirs = await readTensors(join(f.dir, 'converted', 'adapter_model.safetensors'));
      assert.deepEqual(Object.keys(ours).sort(), Object.keys(theirs).sort());
      for (const k of Object.keys(theirs)) assertAllclose(ours[k], theirs[k], { atol: 1e-6, rtol: 0, what: k });
      const logits = await folderLogits(f.expected.base_model, f.expected, dir);
      assertAllclose(logits, f.tensors.logits, { atol: 1e-4, rtol: 0, what: 'converted folder logits' });
    });
  });
});

test("gpt2_olora_converted: PEFT's logits of lorakit's converted Conv1D OLoRA on the untouched base are the adapter's on its residual base", async () => {
  const name = 'gpt2_olora_converted';
  const c = CASES[name];
  const dir = join(ROOT, 'test/fixtures/lorakit', name);
  const inputs = JSON.parse(await readFile(join(dir, 'inputs.json'), 'utf8'));
  const peftLogits = await readTensors(join(dir, 'peft_logits.safetensors'));
  await withModel(`test/fixtures/models/${c.base}`, async (model) => {
    const peft = new PeftModel(adaptable(model));
    await peft.addAdapter('default', c.config, { seed: c.seed });
    perturb(peft, 'default', c.seed);
    assertAllclose(await adaptedLogits(model, inputs, peft), peftLogits.logits, { atol: 1e-4, rtol: 0, what: name });
  });
});
