// CLoRA's contrastive loss against the official loss_fn with pytorch-metric-learning 2.9.0's NTXentLoss
// (test/fixtures/clora/loss.safetensors, interop/make_clora_fixtures.py): on three fixed maps the graph's loss and
// its gradient with respect to every map (lorakit's autodiff, float64) equal torch's; the host reference agrees;
// without a positive or a negative pair the loss is 0, as the library's.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { join } from 'node:path';
import { cloraLoss, ntXentLoss } from '../../src/diffusion/index.ts';
import { Graph, grad } from '../../src/graph/index.ts';
import { SafetensorsFile } from '../../src/io/index.ts';
import { compile } from '../../src/runtime/index.ts';
import { assertAllclose } from '../helpers.ts';
import { hostCloraLoss, hostNtXent } from './clora-reference.ts';

// the fixture's groups: official important_token_indices [[[1], [1, 2], []], [[3], [], [3]]]
const CONCEPTS = [
  [
    { prompt: 0, token: 1 },
    { prompt: 1, token: 1 },
    { prompt: 1, token: 2 },
  ],
  [
    { prompt: 0, token: 3 },
    { prompt: 2, token: 3 },
  ],
];

test('loss and ∂loss/∂maps equal pytorch-metric-learning NTXentLoss through the official loss_fn', async () => {
  const f = await SafetensorsFile.open(join(import.meta.dirname, '../fixtures/clora/loss.safetensors'));
  const fx: Record<string, Float64Array> = {};
  for (const n of f.names()) fx[n] = (await f.readAs(n, 'f64')) as Float64Array;
  await f.close();
  const g = new Graph('clora-loss');
  const maps = [0, 1, 2].map((p) => g.input(`map${p}`, 'f64', [4, 4, 5]));
  const loss = cloraLoss(maps, CONCEPTS, 0.5);
  g.output('loss', loss);
  grad(loss, maps).forEach((d, p) => g.output(`grad${p}`, d));
  const s = await compile(g, { worker: false });
  const out = await s.run({ map0: fx.map0, map1: fx.map1, map2: fx.map2 });
  assertAllclose(out.loss.data as Float64Array, fx.loss, { atol: 1e-12, rtol: 1e-10, what: 'loss' });
  for (const p of [0, 1, 2])
    assertAllclose(out[`grad${p}`].data as Float64Array, fx[`grad${p}`], { atol: 1e-12, rtol: 1e-9, what: `grad${p}` });
  assert.ok(Math.abs(hostCloraLoss([fx.map0, fx.map1, fx.map2], [4, 4, 5], CONCEPTS, 0.5) - fx.loss[0]) < 1e-12);
  await s.dispose();
});

test('ntXentLoss: equal to the host reference on random rows; 0 without positive or without negative pairs', async () => {
  const rows = [
    [0.3, -1, 2, 0.5],
    [1, 1, 0, -0.2],
    [0.1, 0.4, 0.9, 0.6],
    [-0.7, 0.2, 0.3, 1.1],
    [0.5, 0.5, -0.5, 0.25],
  ];
  const cases: [number[], number][] = [
    [[0, 0, 1, 1, 2], 0.5],
    [[0, 1, 0, 1, 1], 0.1],
    [[0, 1, 2, 3, 4], 0.5], // no positive pair
    [[3, 3, 3, 3, 3], 0.5], // no negative pair
  ];
  const g = new Graph('ntxent');
  const x = g.input('x', 'f64', [5, 4]);
  cases.forEach(([labels, tau], i) => g.output(`l${i}`, ntXentLoss(x, labels, tau)));
  const s = await compile(g, { worker: false });
  const out = await s.run({ x: Float64Array.from(rows.flat()) });
  cases.forEach(([labels, tau], i) => {
    const want = hostNtXent(rows, labels, tau);
    assert.ok(
      Math.abs((out[`l${i}`].data as Float64Array)[0] - want) < 1e-12,
      `case ${i}: ${out[`l${i}`].data[0]} vs ${want}`,
    );
  });
  assert.equal((out.l2.data as Float64Array)[0], 0);
  assert.equal((out.l3.data as Float64Array)[0], 0);
  await s.dispose();
});
