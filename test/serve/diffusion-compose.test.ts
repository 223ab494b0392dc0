// Multi-LoRA composition for diffusion on a tiny random UNet2DConditionModel: the shallow (cached) pass against the
// full pass, LoRA Merge against one merged weight, Composite against the mean of separate guided predictions, and
// the Switch and CMLoRA schedules against hand-written sequences.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { assertAllclose } from '../helpers.ts';
import { Rng } from '../../src/linalg/index.ts';
import { guide, initUNetConditionWeights, memoryUNetCondition } from '../../src/models/index.ts';
import { PeftModel } from '../../src/peft/index.ts';
import {
  cmloraRefreshSteps,
  cmloraSchedule,
  cmloraWeights,
  composedPredictor,
  type LoraPass,
  unetPass,
} from '../../src/serve/index.ts';
import { canvasPrompt, oneHotStates } from '../../src/train/index.ts';
import { tinyUNetConditionConfig } from '../unet-configs.ts';

const config = tinyUNetConditionConfig();
const N = 2;
const SHAPE = [1, 4, 8];
const lora = { peft_type: 'LORA', r: 2, lora_alpha: 4, init_lora_weights: false };
const TARGETS = ['to_q', 'to_k', 'to_v', 'conv1', 'conv2'];

async function setup() {
  const weights = initUNetConditionWeights(config, new Rng(3));
  const unet = memoryUNetCondition(config, weights);
  const peft = new PeftModel(unet.base());
  await peft.addAdapter('a', { ...lora, target_modules: TARGETS }, { seed: 1 });
  await peft.addAdapter('b', { ...lora, target_modules: TARGETS }, { seed: 2 });
  const states = oneHotStates(canvasPrompt(N, 5, 7), 12);
  const nullStates = oneHotStates(canvasPrompt(N, 11, 11), 12);
  const pass = (adapters: string[], p: PeftModel | undefined = peft) =>
    unetPass({ unet, peft: p, adapters, batch: N, states, nullStates, sampleShape: SHAPE });
  return { unet, peft, pass, states, nullStates, weights };
}
const latent = new Rng(9).normalArray(N * 32);

test('the shallow pass on its own deep features equals the full pass; on other features it differs', async () => {
  const { pass } = await setup();
  const p = await pass(['a']);
  const full = await p.run(latent, 500);
  const shallow = await p.run(latent, 500, full.deep);
  assertAllclose(shallow.cond, full.cond, { atol: 1e-5, what: 'cond' });
  assertAllclose(shallow.uncond, full.uncond, { atol: 1e-5, what: 'uncond' });
  const other = await p.run(
    latent,
    500,
    Float32Array.from(full.deep, (v) => v + 0.5),
  );
  assert.ok(Math.abs(other.cond[0] - full.cond[0]) > 1e-4, 'the cached features must be used');
  // guided: the unconditional and conditional halves differ (the prompt is read)
  assert.ok(full.cond.some((v, k) => Math.abs(v - full.uncond[k]) > 1e-4));
  await p.dispose();
});

test('LoRA Merge (both adapters active) equals the base with W0 + ΔW_a + ΔW_b merged into its weights', async () => {
  const { pass, unet, peft } = await setup();
  const both = await pass(['a', 'b']);
  const predict = composedPredictor([both], { method: 'merge', guidance: 3, steps: 10 });
  const got = await predict(latent, 700, 0);
  const merged = new PeftModel(unet.base());
  await merged.addAdapter('a', { ...lora, target_modules: TARGETS }, { seed: 1 });
  await merged.addAdapter('b', { ...lora, target_modules: TARGETS }, { seed: 2 });
  merged.setActive('a', 'b');
  await merged.merge();
  const m = await pass(['a', 'b'], merged);
  const r = await m.run(latent, 700);
  assertAllclose(got, guide(r.uncond, r.cond, 3), { atol: 2e-5, what: 'merge' });
  // and it is not the base
  const base = await pass([], peft);
  const r0 = await base.run(latent, 700);
  assert.ok(guide(r0.uncond, r0.cond, 3).some((v, k) => Math.abs(v - got[k]) > 1e-3));
  await Promise.all([both, m, base].map((p) => p.dispose()));
});

test('LoRA Composite equals the mean of the separate passes, guided after averaging', async () => {
  const { pass } = await setup();
  const [pa, pb] = [await pass(['a']), await pass(['b'])];
  const got = await composedPredictor([pa, pb], { method: 'composite', guidance: 4, steps: 10 })(latent, 300, 0);
  const [ra, rb] = [await pa.run(latent, 300), await pb.run(latent, 300)];
  const want = Float32Array.from(got, (_, k) => {
    const u = (ra.uncond[k] + rb.uncond[k]) / 2;
    return u + 4 * ((ra.cond[k] + rb.cond[k]) / 2 - u);
  });
  assertAllclose(got, want, { atol: 1e-5, what: 'composite' });
  // equal to the mean of the per-LoRA guided predictions too (guidance is linear)
  const g = [guide(ra.uncond, ra.cond, 4), guide(rb.uncond, rb.cond, 4)];
  assertAllclose(
    got,
    g[0].map((v, k) => (v + g[1][k]) / 2),
    { atol: 1e-5, what: 'mean of guided' },
  );
  await Promise.all([pa, pb].map((p) => p.dispose()));
});

/** Fake passes that log (pass, step, cached?) and return ε = pass index + 1 (cond) and 0 (uncond). */
function fakePasses(n: number, log: string[]): LoraPass[] {
  let step = 0;
  return Array.from({ length: n }, (_, i) => ({
    async run(x: Float32Array, t: number, cached?: Float32Array) {
      log.push(`${t}:${i}${cached ? 'c' : ''}`);
      step++;
      return {
        uncond: new Float32Array(x.length),
        cond: new Float32Array(x.length).fill(i + 1),
        deep: new Float32Array([step]),
      };
    },
  }));
}

test('LoRA Switch runs one LoRA per step, the next every switchEvery steps, cycling', async () => {
  const log: string[] = [];
  const predict = composedPredictor(fakePasses(3, log), { method: 'switch', guidance: 1, steps: 8, switchEvery: 2 });
  for (let s = 0; s < 8; s++) await predict(new Float32Array(1), 100 - s, s);
  assert.deepEqual(log, ['100:0', '99:0', '98:1', '97:1', '96:2', '95:2', '94:0', '93:0']);
});

test('CMLoRA refresh steps: every step, every c-th, and the non-uniform sequence (2 / 3 / 2)', () => {
  assert.deepEqual(cmloraRefreshSteps(5, 1), [0, 1, 2, 3, 4]);
  assert.deepEqual(cmloraRefreshSteps(10, 3), [0, 3, 6, 9]);
  // 10 steps: ⌊3.75⌋ = 3, ⌊8.75⌋ = 8 → range(0,3,2) + range(3,8,3) + range(8,10,2)
  assert.deepEqual(cmloraRefreshSteps(10, 0), [0, 2, 3, 6, 8]);
  assert.deepEqual(cmloraRefreshSteps(16, 0), [0, 2, 4, 6, 9, 12, 14]);
});

test('CMLoRA schedule: dominance moves at each refresh; with caching only the refreshed LoRA runs in full', () => {
  const p0 = cmloraSchedule(10, 2, 0);
  assert.equal(p0.caching, false);
  assert.deepEqual(
    p0.steps.map((s) => s.dominant),
    [0, 0, 1, 0, 0, 0, 1, 1, 0, 0],
  );
  assert.ok(p0.steps.every((s) => s.full.every(Boolean)));
  const p3 = cmloraSchedule(8, 2, 3);
  assert.deepEqual(
    p3.steps.map((s) => [s.refreshed, s.dominant, s.full.map((f) => (f ? 'F' : 'c')).join('')]),
    [
      [0, 0, 'FF'],
      [null, 0, 'cc'],
      [null, 0, 'cc'],
      [1, 1, 'cF'],
      [null, 1, 'cc'],
      [null, 1, 'cc'],
      [0, 0, 'Fc'],
      [null, 0, 'cc'],
    ],
  );
});

test('CMLoRA weights: c = N − 0.5, w_non = N/(c + N − 1), w_dom = c·w_non (N = 3: 0.56 vs 0.22 of the sum)', () => {
  const [d, n] = cmloraWeights(3);
  assertAllclose([d / (d + 2 * n), n / (d + 2 * n)], [2.5 / 4.5, 1 / 4.5], { atol: 1e-12 });
  assertAllclose([d + 2 * n], [3], { atol: 1e-12 });
});

test('the CMLoRA predictor weights the dominant LoRA and feeds each LoRA its own cache between refreshes', async () => {
  const log: string[] = [];
  const predict = composedPredictor(fakePasses(2, log), { method: 'cmlora', guidance: 1, steps: 5, cacheInterval: 3 });
  const [wd, wn] = cmloraWeights(2);
  const outs: number[] = [];
  for (let s = 0; s < 5; s++) outs.push((await predict(new Float32Array(1), 10 - s, s))[0]);
  assert.deepEqual(log, ['10:0', '10:1', '9:0c', '9:1c', '8:0c', '8:1c', '7:0c', '7:1', '6:0c', '6:1c']);
  // ε = (w_0·1 + w_1·2)/2 with the dominant 0 for steps 0–2 and 1 for steps 3–4
  const [dom0, dom1] = [(wd * 1 + wn * 2) / 2, (wn * 1 + wd * 2) / 2];
  assertAllclose(outs, [dom0, dom0, dom0, dom1, dom1], { atol: 1e-6 });
});
