// The coefficient-merged model: its forward equals the base plus a dense float64 ΔW = Σ φ(w)ᵢ·sᵢ·BᵢAᵢ added in the
// graph (an independent path that forms ΔW), and ∂L/∂w, ∂L/∂a, ∂L/∂b from lorakit's autodiff equal float64 central
// differences of the loss, for task-wise and per-module coefficients and every φ.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import {
  CoefficientObjective,
  type CoefficientSpec,
  type CoefficientValues,
  poolFromLoras,
} from '../../src/adaptive/index.ts';
import { Graph } from '../../src/graph/index.ts';
import { loadModel } from '../../src/models/index.ts';
import { compile, shutdownRuntime } from '../../src/runtime/index.ts';
import { causalLmLoss } from '../../src/train/index.ts';
import { assertAllclose, centralDifferences } from '../helpers.ts';
import { denseDelta, LLAMA, randomBatch, randomLora, TARGETS } from './tiny.ts';

after(shutdownRuntime);
const T = 6;
const adapters = [randomLora(1, 2, 2), randomLora(2, 3, 0.5), randomLora(3, 2, 1)];
const pool = poolFromLoras(['one', 'two', 'three'], adapters);
const batch = randomBatch(9, 2, T);

test('the merged forward equals the base plus a dense float64 ΔW (linear φ, task-wise)', async () => {
  const model = await loadModel(LLAMA);
  try {
    const c = [0.7, -1.2, 0.4];
    const obj = await CoefficientObjective.create({
      model,
      pool,
      spec: { granularity: 'task', phi: 'linear' },
      batch: 2,
      seqLen: T,
      dtype: 'f64',
      withGrad: false,
    });
    const ours = await obj.loss(obj.values(c), [batch]);
    await obj.dispose();

    const g = new Graph('dense-reference');
    const deltas = new Map(TARGETS.map(([p, out, inF]) => [p, { dw: denseDelta(adapters, p, c), out, inF }]));
    const ctx = model.context(g, {
      dtype: 'f64',
      hooks: {
        linear: (m, x) => {
          const d = deltas.get(m.path);
          if (!d) return m.base(x);
          return m.base(x).add(x.matmul(g.constant(d.dw, 'f64', [d.out, d.inF]).transpose([1, 0])));
        },
      },
    });
    const ids = g.input('input_ids', 'i64', [2, T]);
    const labels = g.input('labels', 'i64', [2 * T]);
    const { nllSum, count } = causalLmLoss({ ctx, inputIds: ids, labels, labelsAre: 'next' });
    g.output('nll_sum', nllSum);
    g.output('count', count);
    const s = await compile(g, { optimization: 'disabled' });
    const out = await s.run({ input_ids: batch.inputIds, labels: batch.labels });
    await s.dispose();
    const ref = Number(out.nll_sum.data[0]) / Number(out.count.data[0]);
    assertAllclose([ours], [ref], { rtol: 1e-10, atol: 1e-12, what: 'merged loss' });
    // the adapters change the loss: the check is not comparing two base models
    const none = await CoefficientObjective.create({
      model,
      pool,
      spec: { granularity: 'task', phi: 'linear' },
      batch: 2,
      seqLen: T,
      dtype: 'f64',
      withGrad: false,
    });
    const base = await none.loss(none.values(0), [batch]);
    await none.dispose();
    assert.ok(Math.abs(base - ours) > 1e-3, `base ${base} vs merged ${ours}`);
  } finally {
    await model.close();
  }
});

const cases: { spec: CoefficientSpec; w: number[] }[] = [
  { spec: { granularity: 'task', phi: 'linear' }, w: [0.5, -0.3, 0.8] },
  { spec: { granularity: 'module', phi: 'leaky_relu' }, w: [0.5, -0.3, 0.8, -0.6, 0.2, 0.9, 0.1, -0.4, 0.3] },
  { spec: { granularity: 'task', phi: 'squared' }, w: [0.5, -0.3, 0.8] },
  { spec: { granularity: 'task', phi: 'sigmoid', affine: true }, w: [0.5, -0.3, 0.8] },
  {
    spec: { granularity: 'module', phi: 'softmax', affine: true },
    w: [0.5, -0.3, 0.8, -0.6, 0.2, 0.9, 0.1, -0.4, 0.3],
  },
];

for (const { spec, w } of cases) {
  test(`∂L/∂coefficients match float64 central differences (${spec.granularity}, ${spec.phi}${spec.affine ? ', affine' : ''})`, async () => {
    const model = await loadModel(LLAMA);
    try {
      const obj = await CoefficientObjective.create({ model, pool, spec, batch: 2, seqLen: T, dtype: 'f64' });
      const v: CoefficientValues = obj.values(w);
      if (v.a && v.b) {
        v.a.forEach((_, k) => {
          v.a![k] = 1 + 0.1 * k;
          v.b![k] = 0.05 * k - 0.1;
        });
      }
      const { loss, grad } = await obj.lossAndGrad(v, batch);
      assertAllclose([loss], [await obj.loss(v, [batch])], { rtol: 1e-12, what: 'train vs eval loss' });
      for (const key of ['w', 'a', 'b'] as const) {
        const x = v[key];
        if (!x) continue;
        const numeric = await centralDifferences(x, 1e-5, () => obj.loss(v, [batch]));
        assertAllclose(grad[key]!, numeric, { rtol: 1e-6, atol: 1e-9, what: `∂L/∂${key}` });
        assert.ok(
          numeric.some((d) => Math.abs(d) > 1e-4),
          `∂L/∂${key} is not all ~0`,
        );
      }
      await obj.dispose();
    } finally {
      await model.close();
    }
  });
}
