// The compiled step: gradient accumulation equals one step on the concatenated batch; LoRA+ scales B's lr.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { adamw, sgd, type Optimizer } from '../../src/optim/index.ts';
import { shutdownRuntime } from '../../src/runtime/index.ts';
import { Rng } from '../../src/linalg/index.ts';
import { StepEngine, type MicroBatch } from '../../src/train/index.ts';
import { assertAllclose } from '../helpers.ts';
import { D, regressionTask } from './fixtures/tasks.ts';

after(() => shutdownRuntime());

// Rows [from, to) of one fixed set of 8 examples, as a micro-batch weighted by its row count.
const x = new Rng(3).uniformArray(8 * D, -1, 1),
  y = new Rng(4).uniformArray(8, -1, 1);
const rows = (from: number, to: number): MicroBatch => ({
  feeds: {
    x: { data: x.slice(from * D, to * D), shape: [to - from, D] },
    y: { data: y.slice(from, to), shape: [to - from] },
  },
  weight: to - from,
});

async function engine(
  optimizer: Optimizer,
  accumulation: number,
  extra: { clipNorm?: number; loraplusLrRatio?: number } = {},
) {
  const task = regressionTask({ dropout: 0, withEval: false });
  const init = task.initialParams(new Rng(42)) as Record<string, Float32Array>;
  return StepEngine.create(task, { optimizer, accumulation, weightDecay: 0, ...extra }, init);
}

for (const [name, optimizer, clipNorm] of [
  ['SGD', sgd(), undefined],
  ['AdamW with clipping', adamw(), 0.5],
] as const) {
  test(`${name}: micro-batches of 3 and 5 rows (weighted) give the same steps as the batch of 8`, async () => {
    const whole = await engine(optimizer, 1, { clipNorm });
    const split = await engine(optimizer, 2, { clipNorm });
    for (let step = 0; step < 3; step++) {
      const a = await whole.run([rows(0, 8)], 0.05);
      const b = await split.run([rows(0, 3), rows(3, 8)], 0.05);
      assertAllclose([b.loss], [a.loss], { rtol: 1e-6, what: `loss at step ${step + 1}` });
      assertAllclose([b.grad_norm], [a.grad_norm], { rtol: 1e-5, what: `grad_norm at step ${step + 1}` });
      assert.equal(b.micro.length, 2);
      if (clipNorm !== undefined && step === 0)
        assert.ok(a.grad_norm > clipNorm, `clipping must be active: norm ${a.grad_norm}`);
    }
    for (const [k, v] of whole.params())
      assertAllclose(split.params().get(k)!, v, { rtol: 1e-5, atol: 1e-7, what: `param ${k}` });
    for (const [k, v] of whole.optimizerState())
      assertAllclose(split.optimizerState().get(k)!, v, { rtol: 1e-5, atol: 1e-7, what: `state ${k}` });
    assert.equal(split.step, 3);
  });
}

test('equal weights would be wrong for unequal micro-batches: the weighting is what makes them match', async () => {
  const whole = await engine(sgd(), 1);
  const unweighted = await engine(sgd(), 2);
  const a = await whole.run([rows(0, 8)], 0.05);
  const b = await unweighted.run(
    [
      { ...rows(0, 2), weight: 1 },
      { ...rows(2, 8), weight: 1 },
    ],
    0.05,
  );
  assert.ok(Math.abs(a.loss - b.loss) > 1e-4, `losses ${a.loss} and ${b.loss} should differ`);
});

test('LoRA+: the B group moves loraplusLrRatio times as far under SGD, A is unchanged', async () => {
  const plain = await engine(sgd(), 1);
  const plus = await engine(sgd(), 1, { loraplusLrRatio: 4 });
  const before = plain.params();
  await plain.run([rows(0, 8)], 0.05);
  await plus.run([rows(0, 8)], 0.05);
  for (const k of ['w1', 'b1']) assertAllclose(plus.params().get(k)!, plain.params().get(k)!, { what: k });
  for (const k of ['w2', 'b2']) {
    const d1 = plain
      .params()
      .get(k)!
      .map((v, i) => v - before.get(k)![i]);
    const d4 = plus
      .params()
      .get(k)!
      .map((v, i) => v - before.get(k)![i]);
    assertAllclose(
      d4,
      d1.map((v) => 4 * v),
      { rtol: 1e-4, atol: 1e-7, what: `Δ${k}` },
    );
  }
});

for (const [name, optimizer] of [
  ['SGD', sgd()],
  ['AdamW', adamw()],
] as const) {
  test(`${name}: a group with lr ratio 0 stays bit for bit (FFA-LoRA's frozen A) while the others train`, async () => {
    const task = regressionTask({ dropout: 0, withEval: false });
    const frozen = {
      ...task,
      build: () => {
        const g = task.build();
        return { ...g, groups: g.groups.map((gr, i) => (i === 0 ? { ...gr, lrRatio: 0, weightDecay: 0 } : gr)) };
      },
    };
    const names = task.build().groups[0].params.map((p) => p.name);
    const init = task.initialParams(new Rng(42)) as Record<string, Float32Array>;
    const e = await StepEngine.create(frozen, { optimizer, accumulation: 1, weightDecay: 0.1 }, init);
    const before = e.params();
    for (let step = 0; step < 3; step++) await e.run([rows(0, 8)], 0.05);
    for (const [k, v] of e.params()) {
      if (names.includes(k)) assert.deepEqual(v, before.get(k), k);
      else
        assert.ok(
          v.some((x, i) => x !== before.get(k)![i]),
          `${k} trains`,
        );
    }
  });
}

test('restore() sets params, state and the step counter that AdamW bias correction reads', async () => {
  const a = await engine(adamw(), 1);
  await a.run([rows(0, 8)], 0.05);
  await a.run([rows(0, 8)], 0.05);
  const b = await engine(adamw(), 1);
  b.restore(a.step, a.params(), a.optimizerState());
  await a.run([rows(0, 8)], 0.05);
  await b.run([rows(0, 8)], 0.05);
  for (const [k, v] of a.params()) assert.deepEqual(b.params().get(k), v, `param ${k} after one more step`);
});

test("LoRA+ groups follow PEFT's create_loraplus_optimizer: B and 1-D tensors at lr·ratio, loraplus_weight_decay for all but biases", async () => {
  const { Graph } = await import('../../src/graph/index.ts');
  const { optimizerGroups, roleGroups } = await import('../../src/train/index.ts');
  const g = new Graph('groups');
  const t = (name: string, shape: number[]) => g.input(name, 'f32', shape);
  const handles = [
    { tensor: t('A', [2, 3]), adapter: 'x', role: 'a' as const, layer: 'l' },
    { tensor: t('B', [4, 2]), adapter: 'x', role: 'b' as const, layer: 'l' },
    { tensor: t('m', [4]), adapter: 'x', role: 'magnitude' as const, layer: 'l' },
    { tensor: t('copy', [4, 3]), adapter: 'x', role: 'module' as const, layer: 'head' },
    { tensor: t('bias', [4]), adapter: 'x', role: 'bias' as const, layer: null },
  ];
  const groups = roleGroups(handles);
  assert.deepEqual(
    groups.map((gr) => [gr.name, gr.params.map((p) => p.name)]),
    [
      ['A', ['A', 'copy']],
      ['B', ['B', 'm']],
      ['B_no_decay', ['bias']],
    ],
  );
  const plus = optimizerGroups(groups, { weightDecay: 0, loraplusLrRatio: 16, loraplusWeightDecay: 0.1 });
  assert.deepEqual(
    plus.map((p) => [p.lrRatio, p.weightDecay]),
    [
      [1, 0.1],
      [16, 0.1],
      [16, 0],
    ],
  );
  const peftDefault = optimizerGroups(groups, { weightDecay: 0, loraplusLrRatio: 16 });
  assert.deepEqual(
    peftDefault.map((p) => p.weightDecay),
    [0, 0, 0],
  );
  const plain = optimizerGroups(groups, { weightDecay: 0.01 }); // transformers: no decay on biases
  assert.deepEqual(
    plain.map((p) => [p.lrRatio, p.weightDecay]),
    [
      [1, 0.01],
      [1, 0.01],
      [1, 0],
    ],
  );
});
