// A whole training loop as one graph per step: a 2-layer MLP fits a synthetic regression.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Graph } from '../../src/graph/index.ts';
import { compile } from '../../src/runtime/index.ts';
import { adamw, addTrainStep, TrainStepRunner } from '../../src/optim/index.ts';
import { randArray } from '../helpers.ts';

test('an MLP trained with AdamW fits y = sin(x1) + x2·x3 below MSE 0.01', async () => {
  const [N, D, H] = [256, 3, 32];
  const x = Float32Array.from(randArray(N * D, 11));
  const y = new Float32Array(N).map((_, i) => Math.sin(x[i * D]) + x[i * D + 1] * x[i * D + 2]);
  const g = new Graph('mlp');
  const xi = g.input('x', 'f32', ['B', D]),
    yi = g.input('y', 'f32', ['B']);
  const [w1, b1, w2, b2] = [
    g.input('w1', 'f32', [D, H]),
    g.input('b1', 'f32', [H]),
    g.input('w2', 'f32', [H, 1]),
    g.input('b2', 'f32', [1]),
  ];
  const pred = xi.matmul(w1).add(b1).tanh().matmul(w2).add(b2).squeeze(1);
  const err = pred.sub(yi);
  const layout = addTrainStep(g, err.mul(err).mean(), { optimizer: adamw(), groups: [{ params: [w1, b1, w2, b2] }] });
  const s = await compile(g);
  const init = {
    w1: Float32Array.from(randArray(D * H, 1, -0.5, 0.5)),
    b1: new Float32Array(H),
    w2: Float32Array.from(randArray(H, 2, -0.3, 0.3)),
    b2: new Float32Array(1),
  };
  const r = new TrainStepRunner(s, layout, init);
  let first = 0,
    last = 0;
  for (let t = 0; t < 600; t++) {
    const m = await r.step({ x: { data: x, shape: [N, D] }, y: { data: y, shape: [N] } }, 0.01);
    if (t === 0) first = m.loss;
    last = m.loss;
  }
  assert.ok(last < 0.01, `final MSE ${last} (started at ${first})`);
  assert.ok(last < first / 20, `loss fell only from ${first} to ${last}`);
});
