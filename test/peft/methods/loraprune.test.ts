// LoRAPrune against host references written from the official code (aim-uofa/LoRAPrune loraprune/utils.py): the
// cubic schedule (`schedule_sparsity_ratio`) and the block prune (`local_prune`: argsort of importance ⊙ mask); the
// train step's update rule — importance |Ĝ ⊙ (W0 + s·B·A)| with Ĝ = g_B·A + B·g_A − g_B·g_A, grouped, normalised and
// EMA-smoothed, plus AdamW on A and B — against the same formulas in float64; and a toy training run whose masks are,
// step by step, the host decision made from the rule state in its checkpoints, reaching ⌊ratio·groups⌋ pruned groups.
// (Gradients, save/load, exact resume, the count: test/peft/contract.test.ts.)
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { LorakitError } from '../../../src/errors.ts';
import { Graph } from '../../../src/graph/index.ts';
import { Rng } from '../../../src/linalg/index.ts';
import {
  type LayerStepView,
  loraprune,
  loraPruneOptions,
  MASK_INPUTS,
  PeftModel,
  pruneGroups,
  prunedFraction,
  ruleStateKey,
  stepMasks,
} from '../../../src/peft/index.ts';
import { compile } from '../../../src/runtime/index.ts';
import { loadCheckpoint, train } from '../../../src/train/index.ts';
import { assertAllclose } from '../../helpers.ts';
import { toyBase, toyTask, toyWeights } from '../toy.ts';

/** schedule_sparsity_ratio, transcribed. */
function officialSchedule(step: number, total: number, wi: number, wf: number, p0: number, pf: number): number {
  if (step <= wi * total) return p0;
  if (step > total - wf * total) return pf;
  const mul = 1 - (step - wi * total) / (total - (wf + wi) * total);
  return pf + (p0 - pf) * mul ** 3;
}

test('the cubic schedule is the official one, from init_ratio to ratio between warmup and cooldown', () => {
  const o = { total_steps: 200, warmup: 0.1, cooldown: 0.15, ratio: 0.5, init_ratio: 0.05 };
  for (let g = 0; g <= 200; g++)
    assert.equal(prunedFraction(g, o), officialSchedule(g, 200, 0.1, 0.15, 0.05, 0.5), `step ${g}`);
  assert.equal(prunedFraction(20, o), 0.05);
  assert.equal(prunedFraction(171, o), 0.5);
  assert.ok(Math.abs(prunedFraction(95, o) - (0.5 - 0.45 * 0.5 ** 3)) < 1e-12, 'halfway: 1/8 of the way left');
});

test('a block prune zeroes the ⌊ratio·G⌋ groups of least importance ⊙ mask; pruned groups stay pruned', () => {
  const r = new Rng(4);
  for (let trial = 0; trial < 20; trial++) {
    const G = 3 + trial;
    const imp = Array.from({ length: G }, () => r.next());
    const pruned: number[] = Array.from({ length: G }, () => (r.next() < 0.2 ? 1 : 0));
    const ratio = 0.3 + 0.4 * r.next();
    const need = Math.floor(G * ratio);
    const already = pruned.reduce((a, v) => a + v, 0);
    const masked = imp.map((v, g) => v * (1 - pruned[g]));
    const order = masked.map((v, g) => [v, g]).sort((x, y) => x[0] - y[0] || x[1] - y[1]);
    const want = new Float32Array(G);
    for (const [, g] of order.slice(0, need)) want[g] = 1;
    const got = pruneGroups(imp, pruned, ratio);
    assert.deepEqual(got, want, `trial ${trial}`);
    if (need >= already) for (let g = 0; g < G; g++) if (pruned[g]) assert.equal(got[g], 1, 'stays pruned');
  }
});

test("the update rule's importance, EMA and AdamW equal the float64 formulas", async () => {
  const [m, n, r, G, L] = [6, 4, 2, 3, 2];
  const rng = new Rng(9);
  const vals = {
    A: rng.normalArray(r * n, 1),
    B: rng.normalArray(m * r, 1),
    gA: rng.normalArray(r * n, 0.5),
    gB: rng.normalArray(m * r, 0.5),
    W0: rng.normalArray(m * n, 1),
    mA: rng.normalArray(r * n, 0.1),
    vA: Float32Array.from(rng.normalArray(r * n, 0.1), Math.abs),
    mB: rng.normalArray(m * r, 0.1),
    vB: Float32Array.from(rng.normalArray(m * r, 0.1), Math.abs),
    ema: Float32Array.from(rng.normalArray(G, 1), Math.abs),
    mask: Float32Array.of(1, 1, 1, 1, 0, 1),
  };
  const [lr, t, wd, s] = [0.01, 3, 0.1, 1.5];
  const config = {
    loraprune: loraPruneOptions.parse({ total_steps: 10, kv_heads: G, ema: 0.8 }),
  } as never;
  const layer = {
    path: 'model.layers.1.self_attn.q_proj',
    kind: 'linear' as const,
    inFeatures: n,
    outFeatures: m,
    conv: null,
    layerIndex: 1,
    weightShape: [m, n],
    weightDtype: 'F32',
    readWeight: async () => vals.W0,
  };
  const g = new Graph('loraprune-rule');
  const inp = (name: string, shape: number[]) => g.input(name, 'f32', shape);
  const out = loraprune.update!.apply({
    layer,
    settings: { r, alpha: s * r, scaling: s, dropout: 0 },
    config,
    p: { 'lora_A.weight': inp('A', [r, n]), 'lora_B.weight': inp('B', [m, r]) },
    g: { 'lora_A.weight': inp('gA', [r, n]), 'lora_B.weight': inp('gB', [m, r]) },
    state: {
      'lora_A.weight.exp_avg': inp('mA', [r, n]),
      'lora_A.weight.exp_avg_sq': inp('vA', [r, n]),
      'lora_B.weight.exp_avg': inp('mB', [m, r]),
      'lora_B.weight.exp_avg_sq': inp('vB', [m, r]),
      ema: inp('ema', [G]),
      pruned: inp('pruned', [G]),
    },
    inputs: { [MASK_INPUTS.heads]: inp('mask', [L, G]) },
    lr: g.input('lr', 'f32', []),
    step: g.input('step', 'f32', []),
    weightDecay: wd,
    weight: inp('W0', [m, n]),
  });
  g.output('A1', out.p['lora_A.weight']);
  g.output('B1', out.p['lora_B.weight']);
  g.output('ema1', out.state.ema);
  g.output('pruned1', out.state.pruned);
  const res = await (await compile(g, { worker: false })).run({
    ...vals,
    pruned: new Float32Array(G),
    lr: Float32Array.of(lr),
    step: Float32Array.of(t),
  });
  // importance in float64: S = |Ĝ ⊙ W| summed over each group's rows (2 rows per KV-head group), normalised
  const mm = (x: ArrayLike<number>, y: ArrayLike<number>, a: number, k: number, b: number) => {
    const o = new Float64Array(a * b);
    for (let i = 0; i < a; i++)
      for (let q = 0; q < k; q++) for (let j = 0; j < b; j++) o[i * b + j] += x[i * k + q] * y[q * b + j];
    return o;
  };
  const [gbA, bgA, gbgA, BA] = [
    mm(vals.gB, vals.A, m, r, n),
    mm(vals.B, vals.gA, m, r, n),
    mm(vals.gB, vals.gA, m, r, n),
    mm(vals.B, vals.A, m, r, n),
  ];
  const score = new Float64Array(G);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      const k = i * n + j;
      score[Math.floor(i / (m / G))] += Math.abs((gbA[k] + bgA[k] - gbgA[k]) * (vals.W0[k] + s * BA[k]));
    }
  const norm = Math.sqrt(score.reduce((a, v) => a + v * v, 0)) + 1e-8;
  const ema = Array.from(vals.ema, (e, k) => 0.8 * e + 0.2 * (score[k] / norm));
  assertAllclose(res.ema1.data as Float32Array, ema, { rtol: 1e-5, atol: 1e-6, what: 'EMA' });
  assert.deepEqual(Array.from(res.pruned1.data as Float32Array), [0, 1, 0], 'the mask row of layer 1, inverted');
  // AdamW (torch's order): p·(1 − lr·wd) − lr/(1 − β1^t)·m'/(√v'/√(1 − β2^t) + ε)
  const adamw = (p: Float32Array, grad: Float32Array, m0: Float32Array, v0: Float32Array) =>
    Array.from(p, (x, k) => {
      const m1 = m0[k] + (grad[k] - m0[k]) * 0.1;
      const v1 = 0.999 * v0[k] + 0.001 * grad[k] * grad[k];
      return x * (1 - lr * wd) - ((lr / (1 - 0.9 ** t)) * m1) / (Math.sqrt(v1) / Math.sqrt(1 - 0.999 ** t) + 1e-8);
    });
  assertAllclose(res.A1.data as Float32Array, adamw(vals.A, vals.gA, vals.mA, vals.vA), {
    rtol: 1e-5,
    atol: 1e-6,
    what: 'A',
  });
  assertAllclose(res.B1.data as Float32Array, adamw(vals.B, vals.gB, vals.mB, vals.vB), {
    rtol: 1e-5,
    atol: 1e-6,
    what: 'B',
  });
});

test('in a toy run each step applies the host decision made from the rule state after the step before', async () => {
  const config = {
    r: 2,
    lora_alpha: 3,
    target_modules: ['q_proj'],
    // layer 0's q_proj is 6→5 (5 rows cannot form 3 groups): only layer 1 is targeted by the regex below
    loraprune: { total_steps: 6, kv_heads: 3, prune_freq: 1, warmup: 0, cooldown: 0.2, skip_last: 0, ratio: 0.7 },
  };
  const peft = new PeftModel(toyBase(toyWeights()));
  await assert.rejects(
    peft.addAdapter('bad', config),
    (e: unknown) => e instanceof LorakitError && e.code === 'LK_UNSUPPORTED' && e.message.includes('layers.0.q_proj'),
  );
  await peft.addAdapter('default', { ...config, target_modules: ['layers.1.q_proj'] }, { seed: 3 });
  const dir = mkdtempSync(join(tmpdir(), 'lk-loraprune-'));
  await train(toyTask(peft, 'default'), {
    outputDir: dir,
    steps: 6,
    lr: 0.05,
    seed: 5,
    checkpointEvery: 1,
    progress: 'none',
    plot: false, // loss.svg (Vega, at every checkpoint) is plot.test.ts's concern
  });
  const o = loraPruneOptions.parse(config.loraprune);
  const l = peft.get('default').layers.get('model.layers.1.q_proj')!;
  const key = (slot: string) => ruleStateKey('default', l.info.path, slot);
  let before: { ema: Float32Array; pruned: Float32Array } = { ema: new Float32Array(3), pruned: new Float32Array(3) };
  const history: number[] = [];
  for (let step = 1; step <= 6; step++) {
    const ck = await loadCheckpoint(join(dir, `checkpoint-${step}`));
    const views = new Map<string, LayerStepView>([[l.info.path, { info: l.info, values: l.values, state: before }]]);
    // the reference decision: at step u the official g = u − 2, pruning while init_ratio < p_g < ratio (and at the
    // first cooldown step with reach_target), on the rule's EMA ⊙ mask
    const g = step - 2;
    const p = prunedFraction(g, o);
    const due = g >= 0 && p > 0 && p <= 0.7 && before.pruned.reduce((a, v) => a + v, 0) / 3 < 0.7;
    const want = due ? pruneGroups(before.ema, before.pruned, p) : before.pruned;
    const fed = stepMasks(step, views, o, 'heads').subarray(3, 6); // layer 1's row
    assert.deepEqual(
      Array.from(fed, (v) => 1 - v),
      Array.from(want),
      `mask of step ${step}`,
    );
    const now = { ema: ck.optimizer.get(key('ema'))!, pruned: ck.optimizer.get(key('pruned'))! };
    assert.deepEqual(now.pruned, want, `the rule recorded step ${step}'s mask`);
    assert.ok(now.ema.every((v) => v > 0) && now.ema.some((v, k) => v !== before.ema[k]), `EMA moves at ${step}`);
    history.push(now.pruned.reduce((a, v) => a + v, 0));
    before = now;
  }
  // p_g = 0, 0.353, 0.561, 0.663, 0.697 at g = 0..4 (cooldown from g = 5): ⌊3p⌋ = 0, 1, 1, 1, 2 at steps 2..6
  assert.deepEqual(history, [0, 0, 1, 1, 1, 2]);
});
