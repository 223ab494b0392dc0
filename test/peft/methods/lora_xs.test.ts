// LoRA-XS against independent references: a layer's output (Linear with bias, GPT-2 Conv1D) against the float64
// dense y = x·(W0 + s·B·R·A)ᵀ + b formed from the stored tensors, unmerged and merged; the init on weights with a
// known spectrum (B·A is W0's best rank-r approximation, B orthonormal, A = S_r·V_rᵀ, R ~ N(0, 1e-5²)); the
// scaling rules; loading a saved folder reads no weight (no SVD: the file holds A and B); the refusals.
// (Gradients, save/load, resume and the count against the tensors: test/peft/contract.test.ts.)
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { LorakitError } from '../../../src/errors.ts';
import { Rng } from '../../../src/linalg/index.ts';
import { loadAdapter, PeftModel, saveAdapter } from '../../../src/peft/index.ts';
import { assertAllclose } from '../../helpers.ts';
import { withSpectrum } from '../../linalg/helpers.ts';
import { denseBase, graphOutput, referenceOutput } from './dense-layer.ts';

const LAYERS = [
  { name: 'q_proj', kind: 'linear', inFeatures: 12, outFeatures: 8, bias: true },
  { name: 'c_fc', kind: 'conv1d', inFeatures: 10, outFeatures: 14 },
] as const;
const [A, B, R] = ['lora_A.weight', 'lora_B.weight', 'lora_latent_mapping.weight'];

/** s·B·R·A [out, in] in float64 with plain loops over the stored tensors. */
function xsDelta(p: Record<string, Float32Array>, o: number, i: number, r: number, s: number): Float64Array {
  const d = new Float64Array(o * i);
  for (let row = 0; row < o; row++)
    for (let col = 0; col < i; col++) {
      let t = 0;
      for (let a = 0; a < r; a++)
        for (let b = 0; b < r; b++) t += p[B][row * r + a] * p[R][a * r + b] * p[A][b * i + col];
      d[row * i + col] = s * t;
    }
  return d;
}

test('LoRA-XS layer outputs equal the float64 dense x·(W0 + s·B·R·A)ᵀ + b, unmerged and merged', async () => {
  const { base, weights, modules } = denseBase(LAYERS);
  const peft = new PeftModel(base);
  await peft.addAdapter(
    'default',
    { peft_type: 'LORA_XS', r: 3, lora_alpha: 6, target_modules: ['q_proj', 'c_fc'] },
    { seed: 2 },
  );
  const rng = new Rng(9); // R moved off its 1e-5 init, so the adapter changes the outputs
  peft.setValues(
    'default',
    new Map([...peft.trainableValues('default')].map(([k, v]) => [k, v.map(() => rng.normal())])),
  );
  const n = 5;
  const x = new Rng(4).normalArray(n * 12);
  for (const m of modules) {
    const l = peft.get('default').layers.get(m.path)!;
    assert.equal(l.settings.scaling, 2);
    const inn = m.inFeatures;
    const xs = x.subarray(0, n * inn);
    const d = xsDelta(l.values, l.info.outFeatures, inn, 3, 2);
    const want = referenceOutput(weights, m, xs, n, d);
    const base0 = referenceOutput(weights, m, xs, n, null);
    assert.ok(
      want.some((v, k) => Math.abs(v - base0[k]) > 0.05),
      `${m.path}: the adapter changes the output`,
    );
    assertAllclose(await graphOutput(peft, weights, modules, m.path, xs, n), want, { atol: 2e-5, what: m.path });
  }
  await peft.merge();
  for (const m of modules) {
    const inn = m.inFeatures;
    const xs = x.subarray(0, n * inn);
    const l = peft.get('default').layers.get(m.path)!;
    const want = referenceOutput(weights, m, xs, n, xsDelta(l.values, l.info.outFeatures, inn, 3, 2));
    assertAllclose(await graphOutput(peft, weights, modules, m.path, xs, n), want, {
      atol: 2e-5,
      what: `merged ${m.path}`,
    });
  }
});

test('LoRA-XS init: B·A is W0’s best rank-r approximation (B = U_r orthonormal, A = S_r·V_rᵀ), R ~ N(0, 1e-5²)', async () => {
  const { base, weights, modules } = denseBase(LAYERS);
  const rng = new Rng(7);
  const spectrum = (k: number) => Array.from({ length: k }, (_, j) => 5 * 0.7 ** j); // distinct, with gaps
  const exact = new Map<string, Float64Array>();
  for (const m of modules) {
    const [o, i] = [m.outFeatures, m.inFeatures];
    const { a, u0, v0 } = withSpectrum(rng, o, i, spectrum(Math.min(o, i))); // W0 [out, in] = U0·S·V0ᵀ
    const r = 4;
    const best = new Float64Array(o * i); // U0_r·S_r·V0_rᵀ
    for (let p = 0; p < o; p++)
      for (let q = 0; q < i; q++) {
        let t = 0;
        for (let j = 0; j < r; j++) t += u0[p * Math.min(o, i) + j] * spectrum(r)[j] * v0[q * Math.min(o, i) + j];
        best[p * i + q] = t;
      }
    exact.set(m.path, best);
    // the stored layout: Conv1D keeps [in, out]
    weights.set(
      m.weightName,
      Float32Array.from({ length: o * i }, (_, k) => (m.kind === 'conv1d' ? a[(k % o) * i + Math.floor(k / o)] : a[k])),
    );
  }
  const peft = new PeftModel(base);
  await peft.addAdapter('default', { peft_type: 'LORA_XS', r: 4, target_modules: ['q_proj', 'c_fc'] }, { seed: 3 });
  for (const [path, l] of peft.get('default').layers) {
    const [o, i, r] = [l.info.outFeatures, l.info.inFeatures, 4];
    const ba = new Float64Array(o * i);
    for (let p = 0; p < o; p++)
      for (let q = 0; q < i; q++)
        for (let j = 0; j < r; j++) ba[p * i + q] += l.values[B][p * r + j] * l.values[A][j * i + q];
    assertAllclose(ba, exact.get(path)!, { rtol: 0, atol: 2e-5, what: `${path}: B·A` });
    for (let a = 0; a < r; a++)
      for (let b = 0; b < r; b++) {
        let dot = 0;
        for (let p = 0; p < o; p++) dot += l.values[B][p * r + a] * l.values[B][p * r + b];
        assert.ok(Math.abs(dot - (a === b ? 1 : 0)) < 1e-5, `${path}: BᵀB[${a}, ${b}] = ${dot}`);
      }
    const rows = Array.from({ length: r }, (_, j) => Math.hypot(...l.values[A].subarray(j * i, (j + 1) * i)));
    assertAllclose(rows, spectrum(r), { rtol: 1e-5, atol: 0, what: `${path}: row norms of A are S_r` });
    const rv = l.values[R];
    assert.ok(rv.every((v) => Math.abs(v) < 6e-5) && rv.some((v) => v !== 0), `${path}: R ~ N(0, 1e-5²): ${rv}`);
    assert.equal(l.settings.scaling, 1, 'lora_alpha null: α = r, s = 1');
  }
});

test('LoRA-XS scaling: α/r, α/√r with use_rslora; the count is r² per layer', async () => {
  const { base } = denseBase(LAYERS);
  const peft = new PeftModel(base);
  const a = await peft.addAdapter('x', {
    peft_type: 'LORA_XS',
    r: 4,
    lora_alpha: 8,
    use_rslora: true,
    target_modules: ['q_proj'],
  });
  assert.equal([...a.layers.values()][0].settings.scaling, 4);
  const b = await peft.addAdapter('y', { peft_type: 'LORA_XS', r: 2, target_modules: ['q_proj', 'c_fc'] });
  const layers = [...b.layers.values()].map((l) => ({ layer: l.info, settings: l.settings }));
  assert.equal(b.method.trainableCount(b.config, layers), 8);
});

test('a saved LoRA-XS folder loads without reading any weight (A and B are in the file: no SVD at load)', async () => {
  const { base, weights, modules } = denseBase(LAYERS);
  const peft = new PeftModel(base);
  await peft.addAdapter('default', { peft_type: 'LORA_XS', r: 3, target_modules: ['q_proj', 'c_fc'] }, { seed: 5 });
  const dir = mkdtempSync(join(tmpdir(), 'lk-loraxs-'));
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
    for (const k of [A, B, R])
      assert.deepEqual(loaded.get('default').layers.get(path)!.values[k], l.values[k], `${path}.${k}`);
  const x = new Rng(1).normalArray(2 * 12);
  assertAllclose(
    await graphOutput(loaded, weights, modules, modules[0].path, x, 2),
    await graphOutput(peft, weights, modules, modules[0].path, x, 2),
    { atol: 0, rtol: 0 },
  );
});

test('LoRA-XS refuses r > min(out, in) and an unknown init_lora_weights, naming the layer and the field', async () => {
  const { base } = denseBase(LAYERS);
  const peft = new PeftModel(base);
  await assert.rejects(
    peft.addAdapter('x', { peft_type: 'LORA_XS', r: 9, target_modules: ['q_proj'] }),
    (e: unknown) => e instanceof LorakitError && e.code === 'LK_CONFIG_INVALID' && e.message.includes('q_proj'),
  );
  await assert.rejects(
    peft.addAdapter('x', { peft_type: 'LORA_XS', init_lora_weights: 'pissa', target_modules: ['q_proj'] }),
    (e: unknown) =>
      e instanceof LorakitError && e.code === 'LK_CONFIG_INVALID' && e.message.includes('init_lora_weights'),
  );
});
