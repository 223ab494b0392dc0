// What a seed controls in the Recycling runs (scripts/smollm2-adaptive.ts --seed): the random control pool and
// LoraHub's CMA-ES draws. Same seed → the same values bitwise; another seed → other values of the same std (the
// pool) or other evaluated points (CMA-ES, LoraHub's weights).
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { cmaes, loraHub, type MethodContext, poolFromLoras, randomPool } from '../../src/adaptive/index.ts';
import { loadModel } from '../../src/models/index.ts';
import { shutdownRuntime } from '../../src/runtime/index.ts';
import { LLAMA, randomBatch, randomLora } from './tiny.ts';

after(shutdownRuntime);
const pool = poolFromLoras(
  ['one', 'two', 'three'],
  [randomLora(1, 2, 2, 0.2), randomLora(2, 2, 2, 0.5), randomLora(3, 2, 2, 0.3)],
);
const std = (v: Float32Array) => Math.sqrt(v.reduce((s, x) => s + x * x, 0) / v.length);

test('randomPool: the same seed gives the same matrices, another seed others of the same std', () => {
  const a = randomPool(pool, 1);
  const again = randomPool(pool, 1);
  const b = randomPool(pool, 2);
  for (let m = 0; m < pool.modules.length; m++) {
    assert.deepEqual(again.modules[m].a, a.modules[m].a);
    assert.deepEqual(again.modules[m].b, a.modules[m].b);
    const differ = (x: Float32Array, y: Float32Array) => x.filter((v, k) => v !== y[k]).length;
    assert.equal(differ(a.modules[m].a, b.modules[m].a), a.modules[m].a.length, `module ${m}: A shares entries`);
    assert.equal(differ(a.modules[m].b, b.modules[m].b), a.modules[m].b.length, `module ${m}: B shares entries`);
    for (const f of ['a', 'b'] as const) {
      const want = std(pool.modules[m][f]);
      for (const r of [a, b]) assert.ok(Math.abs(std(r.modules[m][f]) / want - 1) < 0.1, `module ${m} ${f}`);
    }
  }
});

test('CMA-ES: the same seed evaluates the same points, another seed other points', async () => {
  const f = (x: Float64Array) => x.reduce((s, v, i) => s + (v - 0.1 * i) ** 2, 0);
  const points = async (seed: number) => {
    const seen: number[][] = [];
    await cmaes(
      (x) => {
        seen.push([...x]);
        return f(x);
      },
      new Float64Array(4),
      { sigma: 0.5, budget: 40, seed },
    );
    return seen;
  };
  const a = await points(5);
  assert.deepEqual(await points(5), a);
  const b = await points(6);
  assert.equal(b.length, a.length);
  assert.ok(
    a.every((p, k) => p.every((v, i) => v !== b[k][i])),
    'another seed shares an evaluated coordinate',
  );
});

test('LoraHub passes its seed to CMA-ES: the same seed, the same weights; another seed, other weights', async () => {
  const model = await loadModel(LLAMA);
  try {
    const T = 8;
    const train = [randomBatch(21, 2, T)];
    const val = [randomBatch(23, 2, T)];
    const ctx: MethodContext = { model, pool, data: { train, val, test: val }, batch: 2, seqLen: T };
    const a = await loraHub(ctx, { budget: 8, seed: 1 });
    const again = await loraHub(ctx, { budget: 8, seed: 1 });
    const b = await loraHub(ctx, { budget: 8, seed: 2 });
    assert.deepEqual([...again.weights], [...a.weights]);
    assert.deepEqual(again.trainLosses, a.trainLosses);
    assert.ok(
      [...a.weights].every((w, i) => w !== b.weights[i]),
      `seed 1 ${[...a.weights]} vs seed 2 ${[...b.weights]}`,
    );
  } finally {
    await model.close();
  }
});
