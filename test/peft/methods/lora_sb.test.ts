// LoRA-SB against independent references: with a calibration gradient whose sign matrix has rank ≤ r (so the rank-r
// SVD is exact whatever the sketch), the model at init is W0 + s·(−η·sign(G)) — the dense float64 reference of the
// layer output, Linear and GPT-2 Conv1D (gradient in the stored [in, out] layout) — with float32 factors, and within
// bfloat16 rounding with the official bf16 factors (which are then bfloat16 values); the calibration is asked for
// lora_sb_config.batches; a causal-LM run: the platform's calibration gradients make an init that already lowers
// the loss on the calibration batches (it is a first descent step), training goes on, and the Trainer's folder reloads
// without calibration; a saved folder loads without calibration; the refusals.
// (Gradients, save/load, resume and the count: test/peft/contract.test.ts.)
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { LorakitError } from '../../../src/errors.ts';
import { bf16ToF32, f32ToBf16, HfTokenizer } from '../../../src/io/index.ts';
import { Rng } from '../../../src/linalg/index.ts';
import { loadModel } from '../../../src/models/index.ts';
import { adaptable, type LayerInfo, loadAdapter, PeftModel, saveAdapter } from '../../../src/peft/index.ts';
import { loadDataset } from '../../../src/train/data/index.ts';
import { causalLmCalibrator, causalLmTask, train } from '../../../src/train/index.ts';
import { assertAllclose, needsShared } from '../../helpers.ts';
import { logitsOf } from '../logits.ts';
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

test('a causal-LM run: the init from the calibration batches already lowers their loss, trains on, reloads alone', {
  skip: needsShared('tinyshakespeare/input.txt'),
}, async () => {
  const ROOT = new URL('../../../', import.meta.url).pathname;
  const SHARED = new URL('../../../../shared/data/', import.meta.url).pathname;
  const dir = mkdtempSync(join(tmpdir(), 'lk-lorasb-run-'));
  writeFileSync(join(dir, 'text.txt'), readFileSync(join(SHARED, 'tinyshakespeare/input.txt'), 'utf8').slice(0, 6000));
  const modelDir = join(ROOT, 'test/fixtures/models/llama');
  const model = await loadModel(modelDir);
  try {
    const tokenizer = await HfTokenizer.fromDir(modelDir);
    const data = await loadDataset(join(dir, 'text.txt'), { tokenizer, seqLen: 32, heldOut: 0.2, cacheDir: false });
    const config = {
      peft_type: 'LORA_XS',
      target_modules: ['q_proj', 'v_proj', 'down_proj'],
      r: 4,
      init_lora_weights: 'lora_sb',
      lora_sb_config: { step_size: 2e-3, batches: 2 },
    };
    const calibrate = causalLmCalibrator({ model, train: data.train, batchSize: 4, seed: 7 });
    const peft = new PeftModel(adaptable(model));
    await peft.addAdapter('default', config, { seed: 7, calibrate });
    const task = causalLmTask({
      model,
      peft,
      adapter: 'default',
      train: data.train,
      eval: data.eval,
      batchSize: 4,
      dataSeed: 7,
    });
    // the calibration batches are the run's first two: the init must already lower their loss (a descent step)
    const calibrationLoss = async (p: PeftModel) => {
      let [sum, count] = [0, 0];
      for (const b of data.train.batches({ batchSize: 4, seed: 7, epochs: 1 })) {
        if (b.position.index === 2) break;
        const [rows, T] = b.shape;
        const ids = Array.from({ length: rows }, (_, i) => [...b.inputIds.subarray(i * T, (i + 1) * T)].map(Number));
        const logits = await logitsOf(model, { input_ids: ids }, { hooks: p.hooks(), overrides: p.weightOverrides() });
        // aligned labels: position t predicts labels[t + 1] (-100: not counted); mean cross-entropy in float64
        for (let i = 0; i < rows; i++)
          for (let t = 0; t + 1 < T; t++) {
            const label = Number(b.labels[i * T + t + 1]);
            if (label < 0) continue;
            const row = logits.subarray((i * T + t) * 384, (i * T + t + 1) * 384);
            const max = Math.max(...row);
            sum += Math.log(row.reduce((acc, v) => acc + Math.exp(v - max), 0)) + max - row[label];
            count++;
          }
      }
      return sum / count;
    };
    const [base, init] = [await calibrationLoss(new PeftModel(adaptable(model))), await calibrationLoss(peft)];
    assert.ok(init < base - 1e-3, `loss on the calibration batches: base ${base}, LoRA-SB init ${init}`);
    const before = (await task.evaluate!(peft.trainableValues('default'))).loss;
    const result = await train(task, {
      outputDir: join(dir, 'run'),
      steps: 10,
      lr: 2e-2,
      evalEvery: 10,
      progress: 'none',
      plot: false,
    });
    assert.ok(result.bestEvalLoss! < before - 0.01, `held-out loss ${before} -> ${result.bestEvalLoss}`);
    peft.setValues('default', result.params);
    const again = new PeftModel(adaptable(model));
    await loadAdapter(again, join(dir, 'run', 'final')); // no calibrate: A, B and R are in the folder
    const inputs = JSON.parse(readFileSync(join(modelDir, 'expected.json'), 'utf8'));
    assertAllclose(
      await logitsOf(model, inputs, { hooks: again.hooks(), overrides: again.weightOverrides() }),
      await logitsOf(model, inputs, { hooks: peft.hooks(), overrides: peft.weightOverrides() }),
      { atol: 0, rtol: 0, what: 'the reloaded final folder' },
    );
  } finally {
    await model.close();
  }
});
