// LoRA-SB against independent references: with a calibration gradient whose sign matrix has rank ≤ r (so the rank-r
// SVD is exact whatever the sketch), the model at init is W0 + s·(−η·sign(G)) — the dense float64 reference of the
// layer output, Linear and GPT-2 Conv1D (gradient in the stored [in, out] layout) — with float32 factors, and within
// bfloat16 rounding with the official bf16 factors (which are then bfloat16 values); the calibration is asked for
// lora_sb_config.batches; a saved folder loads without calibration; the refusals.
// (Gradients, save/load, resume and the count: test/peft/contract.test.ts.)
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { LorakitError } from '../../../src/errors.ts';
import { bf16ToF32, f32ToBf16 } from '../../../src/io/index.ts';
import { Rng } from '../../../src/linalg/index.ts';
import { type LayerInfo, loadAdapter, PeftModel, saveAdapter } from '../../../src/peft/index.ts';
import { assertAllclose } from '../../helpers.ts';
import { denseBase, graphOutput, referenceOutput } from './dense-layer.ts';

const LAYERS = [
  { name: 'q_proj', kind: 'linear', inFeatures: 12, outFeatures: 8, bias: true },
  { name: 'c_fc', kind: 'conv1d', inFeatures: 10, outFeatures: 14 },
] as const;
const ETA = 0.01;

/**
 * G [out, in] = |N(0, 1)| ⊙ sign pattern with two row types (rows p·q < out/2 use pattern 1, the rest pattern 2), so
 * sign(G) has rank 2; zero entries in one column (sign 0). Returned with the [out, in] sign matrix.
 */
function gradient(rng: Rng, o: number, i: number) {
  const p1 = Array.from({ length: i }, () => (rng.next() < 0.5 ? -1 : 1));
  const p2 = Array.from({ length: i }, () => (rng.next() < 0.5 ? -1 : 1));
  const sign = new Float64Array(o * i);
  const g = new Float64Array(o * i);
  for (let p = 0; p < o; p++)
    for (let q = 0; q < i; q++) {
      const sg = q === 1 ? 0 : p < o / 2 ? p1[q] : p2[q];
      sign[p * i + q] = sg;
      g[p * i + q] = sg * (0.1 + Math.abs(rng.normal()));
    }
  return { g, sign };
}

/** A calibrate function with fixed gradients (stored layout) per layer, recording the batch counts asked for. */
function calibrator(signs: Map<string, Float64Array>, asked: number[]) {
  return async (layers: readonly LayerInfo[], batches: number) => {
    asked.push(batches);
    const rng = new Rng(21);
    const out = new Map<string, Float32Array>();
    for (const l of layers) {
      const [o, i] = [l.outFeatures, l.inFeatures];
      const { g, sign } = gradient(rng, o, i);
      signs.set(l.path, sign);
      // stored layout: Conv1D [in, out]
      out.set(
        l.path,
        Float32Array.from({ length: o * i }, (_, k) =>
          l.kind === 'conv1d' ? g[(k % o) * i + Math.floor(k / o)] : g[k],
        ),
      );
    }
    return out;
  };
}

const CONFIG = {
  peft_type: 'LORA_XS',
  r: 2,
  lora_alpha: 4,
  init_lora_weights: 'lora_sb',
  target_modules: ['q_proj', 'c_fc'],
};

async function initialOutputs(bf16: boolean) {
  const { base, weights, modules } = denseBase(LAYERS);
  const peft = new PeftModel(base);
  const signs = new Map<string, Float64Array>();
  const asked: number[] = [];
  const config = { ...CONFIG, lora_sb_config: { step_size: ETA, batches: 3, bf16_factors: bf16 } };
  await peft.addAdapter('default', config, { seed: 4, calibrate: calibrator(signs, asked) });
  assert.deepEqual(asked, [3]);
  const n = 4;
  const x = new Rng(6).normalArray(n * 12);
  const results = [];
  for (const m of modules) {
    const xs = x.subarray(0, n * m.inFeatures);
    const delta = signs.get(m.path)!.map((sg) => 2 * -ETA * sg); // s·(−η·sign G), s = 4/2
    results.push({
      m,
      got: await graphOutput(peft, weights, modules, m.path, xs, n),
      want: referenceOutput(weights, m, xs, n, delta),
      base: referenceOutput(weights, m, xs, n, null),
    });
  }
  return { peft, results };
}

test('LoRA-SB starts at W0 + s·(−η·sign(G)) when sign(G) has rank ≤ r (float32 factors): dense float64 reference', async () => {
  const { results } = await initialOutputs(false);
  for (const { m, got, want, base } of results) {
    assert.ok(
      want.some((v, k) => Math.abs(v - base[k]) > 0.02),
      `${m.path}: ΔW ≠ 0 at init, by design`,
    );
    assertAllclose(got, want, { atol: 2e-5, what: m.path });
  }
});

test('LoRA-SB with the official bf16_factors: A, B and R hold bfloat16 values, and the start is within their rounding', async () => {
  const { peft, results } = await initialOutputs(true);
  for (const l of peft.get('default').layers.values())
    for (const [k, v] of Object.entries(l.values))
      assert.deepEqual(v, bf16ToF32(f32ToBf16(v)), `${l.info.path}.${k} is bfloat16-representable`);
  for (const { m, got, want } of results) assertAllclose(got, want, { atol: 2e-3, rtol: 0, what: m.path });
});

test('a saved LoRA-SB folder loads without calibration (A, B and R are in the file)', async () => {
  const { peft } = await initialOutputs(false);
  const dir = mkdtempSync(join(tmpdir(), 'lk-lorasb-'));
  await saveAdapter(peft, 'default', dir);
  const loaded = new PeftModel(denseBase(LAYERS).base);
  await loadAdapter(loaded, dir); // no calibrate given
  for (const [path, l] of peft.get('default').layers)
    for (const [k, v] of Object.entries(l.values))
      assert.deepEqual(loaded.get('default').layers.get(path)!.values[k], v);
});

test('LoRA-SB refuses a config without lora_sb_config and an init without calibration', async () => {
  const peft = new PeftModel(denseBase(LAYERS).base);
  await assert.rejects(
    peft.addAdapter('x', CONFIG),
    (e: unknown) => e instanceof LorakitError && e.code === 'LK_CONFIG_INVALID' && e.message.includes('step_size'),
  );
  await assert.rejects(
    peft.addAdapter('x', { ...CONFIG, lora_sb_config: { step_size: ETA } }),
    (e: unknown) => e instanceof LorakitError && e.code === 'LK_INVALID_ARGUMENT' && e.message.includes('calibrate'),
  );
});
