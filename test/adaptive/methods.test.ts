// The methods around the checked gradient: host Adam's first step is lr·sign(g) (its closed form), LoraHub's merge
// has the cross terms Σᵢⱼ wᵢwⱼBᵢAⱼ, a learned merge written as a PEFT folder and read back computes the same loss
// as the coefficients it came from (φ on the host = φ in the graph), the study's method at step 0 is the base model,
// evaluation-based selection ranks by each adapter's own loss, and LoraHub / AdaMerging lower the training loss.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import {
  adaMerging,
  CoefficientObjective,
  type CoefficientSpec,
  effectiveCoefficients,
  HostAdam,
  loraHub,
  lorahubMerge,
  mergedLora,
  type MethodContext,
  poolFromLoras,
  randomPool,
  recycle,
  selectTopK,
} from '../../src/adaptive/index.ts';
import { loadModel } from '../../src/models/index.ts';
import { compose } from '../../src/peft/index.ts';
import { shutdownRuntime } from '../../src/runtime/index.ts';
import { assertAllclose } from '../helpers.ts';
import { denseDelta, LLAMA, randomBatch, randomLora, TARGETS } from './tiny.ts';

after(shutdownRuntime);
const T = 8;
const adapters = [randomLora(1, 2, 2, 0.2), randomLora(2, 2, 2, 0.2), randomLora(3, 2, 2, 0.2)];
const pool = poolFromLoras(['one', 'two', 'three'], adapters);

test("host Adam's first step moves every parameter by lr·sign(g)", () => {
  const p = [Float64Array.from([1, -2, 3])];
  new HostAdam(0.1).step(p, [Float64Array.from([0.5, -1e-3, 7])]);
  assertAllclose(p[0], [0.9, -1.9, 2.9], { rtol: 1e-6 });
});

test("LoraHub's merge of A and B has the cross terms Σᵢⱼ wᵢwⱼ·s·BᵢAⱼ", () => {
  const w = [0.5, -1.2, 0.8];
  const merged = lorahubMerge(pool, w);
  for (const [path, out, inF] of TARGETS) {
    const m = merged.modules.find((q) => q.path === path)!;
    const ba = new Float64Array(out * inF);
    for (let o = 0; o < out; o++)
      for (let k = 0; k < 2; k++)
        for (let j = 0; j < inF; j++) ba[o * inF + j] += 2 * m.b[o * 2 + k] * m.a[k * inF + j];
    // Σᵢⱼ wᵢwⱼ·s·BᵢAⱼ from the sources, with s = 2
    const ref = new Float64Array(out * inF);
    for (const [i, ai] of adapters.entries())
      for (const [j, aj] of adapters.entries()) {
        const bi = ai.modules.get(path)!.b;
        const aa = aj.modules.get(path)!.a;
        for (let o = 0; o < out; o++)
          for (let k = 0; k < 2; k++)
            for (let q = 0; q < inF; q++) ref[o * inF + q] += w[i] * w[j] * 2 * bi[o * 2 + k] * aa[k * inF + q];
      }
    assertAllclose(ba, ref, { rtol: 1e-5, atol: 1e-6, what: path });
    // and it is not Σ wᵢ·ΔWᵢ (the cross terms matter)
    const linear = denseDelta(adapters, path, w);
    assert.ok(linear.some((v, k) => Math.abs(v - ref[k]) > 1e-3));
  }
});

test('a learned merge written as a PEFT folder computes the loss of its coefficients', async () => {
  const model = await loadModel(LLAMA);
  const dir = await mkdtemp(join(tmpdir(), 'lk-adaptive-'));
  const batch = randomBatch(4, 2, T);
  try {
    const specs: [CoefficientSpec, number[]][] = [
      [{ granularity: 'module', phi: 'leaky_relu' }, [0.5, -0.3, 0.8, -0.6, 0.2, 0.9, 0.1, -0.4, 0.3]],
      [{ granularity: 'task', phi: 'softmax', affine: true }, [0.5, -0.3, 0.8]],
    ];
    for (const [spec, w] of specs) {
      const obj = await CoefficientObjective.create({ model, pool, spec, batch: 2, seqLen: T, withGrad: false });
      const v = obj.values(w);
      for (let k = 0; v.a && v.b && k < v.a.length; k++) {
        v.a[k] = 1.5 - 0.2 * k;
        v.b[k] = 0.1 * k;
      }
      const want = await obj.loss(v, [batch]);
      await obj.dispose();
      const out = join(dir, spec.phi);
      await compose.writeLora(out, mergedLora(pool, effectiveCoefficients(pool, spec, v), adapters[0].config), 'test');
      const back = await compose.readLora(out);
      const one = poolFromLoras(['merged'], [back]);
      const ev = await CoefficientObjective.create({
        model,
        pool: one,
        spec: { granularity: 'task', phi: 'linear' },
        batch: 2,
        seqLen: T,
        withGrad: false,
      });
      assertAllclose([await ev.loss(ev.values(1), [batch])], [want], { rtol: 1e-5, what: spec.phi });
      await ev.dispose();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
    await model.close();
  }
});

test('methods on the tiny model: recycle at step 0 is the base, selection, LoraHub and AdaMerging lower the loss', async () => {
  const model = await loadModel(LLAMA);
  try {
    const train = [randomBatch(21, 2, T), randomBatch(22, 2, T)];
    const val = [randomBatch(23, 2, T)];
    const ctx: MethodContext = { model, pool, data: { train, val, test: val }, batch: 2, seqLen: T };
    const baseObj = await CoefficientObjective.create({
      model,
      pool,
      spec: { granularity: 'task', phi: 'linear' },
      batch: 2,
      seqLen: T,
      withGrad: false,
    });
    const base = await baseObj.loss(baseObj.values(0), val);
    const baseTrain = await baseObj.loss(baseObj.values(0), train);
    const alone: number[] = [];
    for (let i = 0; i < 3; i++)
      alone.push(await baseObj.loss({ w: Float64Array.from([0, 1, 2].map((j) => +(i === j))) }, train));
    await baseObj.dispose();

    const r0 = await recycle(ctx, { steps: 0, topK: 2 });
    assertAllclose([r0.testLoss!], [base], { rtol: 1e-6, what: 'recycle at step 0 vs the base model' });
    const order = [0, 1, 2].sort((p, q) => alone[p] - alone[q]);
    assert.deepEqual(
      r0.selected,
      order.slice(0, 2).map((i) => pool.names[i]),
    );
    const sel = await selectTopK(pool, { strategy: 'evaluation', k: 3, model, train, batch: 2, seqLen: T });
    assertAllclose(sel.scores!, alone, { rtol: 1e-6 });

    const hub = await loraHub(ctx, { budget: 24 });
    assert.ok(hub.weights.every((v) => Math.abs(v) <= 1.5));
    assert.ok(
      Math.min(...hub.trainLosses) < baseTrain,
      `LoraHub best ${Math.min(...hub.trainLosses)} vs base ${baseTrain}`,
    );
    const ada = await adaMerging(ctx, { steps: 6, lr: 0.1 });
    assert.ok(ada.trainLosses[5] < ada.trainLosses[0], `AdaMerging ${ada.trainLosses[0]} -> ${ada.trainLosses[5]}`);
    // the random control keeps the shapes and each factor's std, not its values
    const rnd = randomPool(pool, 0);
    const std = (v: Float32Array) => Math.sqrt(v.reduce((s, x) => s + x * x, 0) / v.length);
    assert.ok(Math.abs(std(rnd.modules[0].a) / std(pool.modules[0].a) - 1) < 0.1);
    assert.ok(rnd.modules[0].a.some((v, k) => v !== pool.modules[0].a[k]));
  } finally {
    await model.close();
  }
});
