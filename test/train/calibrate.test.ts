// Calibration gradients (for LoRA-GA-style initialisers): the mean full-weight gradient over the first training
// batches equals float64 finite differences of the token-weighted mean loss of those batches.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Graph } from '../../src/graph/index.ts';
import { loadModel } from '../../src/models/index.ts';
import { adaptable, layerInfo } from '../../src/peft/index.ts';
import { compile } from '../../src/runtime/index.ts';
import { TokenDataset } from '../../src/train/data/index.ts';
import { causalLmCalibrator, causalLmLoss } from '../../src/train/index.ts';
import { assertAllclose } from '../helpers.ts';

const root = new URL('../../', import.meta.url).pathname;

test('the calibrator returns the token-weighted mean gradient of the full weight (against float64 finite differences)', async () => {
  const model = await loadModel(`${root}test/fixtures/models/llama`);
  const [B, T, rows] = [2, 8, 6];
  const ids = Int32Array.from({ length: rows * T }, (_, i) => (i * 37 + 11) % 384);
  const labels = Int32Array.from(ids, (v, i) => (i % T === 0 || i % 5 === 3 ? -100 : v)); // uneven counted tokens
  const data = new TokenDataset({ seqLen: T, ids, labels, lengths: new Uint32Array(rows).fill(T) }, 0);
  const base = adaptable(model);
  const q = base.modules.find((m) => m.path === 'model.layers.1.self_attn.q_proj')!;
  const info = layerInfo(q, null, { read: base.readWeight, dtype: () => 'F32' });
  const grads = await causalLmCalibrator({ model, train: data, batchSize: B, seed: 3 })([info], 2);
  const got = grads.get(info.path)!;
  assert.equal(got.length, 64 * 64);

  // the same two batches, the mean loss weighted by counted tokens, in float64 with the weight as a graph input
  const batches = [...data.batches({ batchSize: B, seed: 3, epochs: 1 })].slice(0, 2);
  const g = new Graph('calib-ref');
  const inputIds = g.input('input_ids', 'i64', [B, T]);
  const lab = g.input('labels', 'i64', [B, T]);
  const ctx = model.context(g, { dtype: 'f64', trainable: [q.weightName] });
  g.output('loss', causalLmLoss({ ctx, inputIds, labels: lab, labelsAre: 'aligned' }).loss);
  const w0 = Float64Array.from(await model.read(q.weightName));
  const s = await compile(g, { worker: false, optimization: 'disabled' }); // ORT would fuse the f64 SiLU into f32-only QuickGelu
  const meanLoss = async (wv: Float64Array) => {
    let sum = 0,
      n = 0;
    for (const b of batches) {
      const out = await s.run({
        [q.weightName]: wv,
        input_ids: { data: b.inputIds, shape: [B, T] },
        labels: { data: b.labels, shape: [B, T] },
      });
      sum += b.lossTokens * (out.loss.data[0] as number);
      n += b.lossTokens;
    }
    return sum / n;
  };
  const h = 1e-5;
  for (const k of [0, 17, 4095, 2048]) {
    const wp = Float64Array.from(w0);
    wp[k] += h;
    const wm = Float64Array.from(w0);
    wm[k] -= h;
    const numeric = ((await meanLoss(wp)) - (await meanLoss(wm))) / (2 * h);
    assertAllclose([got[k]], [numeric], { rtol: 2e-3, atol: 1e-6, what: `dL/dW[${k}]` });
  }
  await model.close();
});
