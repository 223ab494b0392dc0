// Noise schedules and DDPM/DDIM steps against diffusers 0.35.2's schedulers (interop/make_diffusion_fixtures.py),
// and the sampling loop's contract: hook order, step indices, determinism, the DDIM identity on a known x₀.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { assertAllclose } from '../helpers.ts';
import {
  addNoise,
  ddimStep,
  ddpmStep,
  inferenceTimesteps,
  noiseSchedule,
  type NoiseScheduleConfig,
} from '../../src/models/noise-schedule.ts';
import { guide, sampleDiffusion } from '../../src/models/diffusion-sampler.ts';
import { LorakitError } from '../../src/errors.ts';

interface Step {
  sampler: 'ddpm' | 'ddim';
  clip: boolean;
  eta?: number;
  set_alpha_to_one?: boolean;
  index: number;
  t: number;
  noise: number[] | null;
  prev: number[];
  x0: number[];
}
const fx = JSON.parse(readFileSync(join(import.meta.dirname, '../fixtures/diffusion/schedulers.json'), 'utf8')) as {
  steps: number;
  sample: number[];
  eps: number[];
  schedules: {
    config: Partial<NoiseScheduleConfig>;
    betas: number[];
    alphas_cumprod: number[];
    timesteps: number[];
    steps: Step[];
  }[];
};

for (const s of fx.schedules) {
  const name = s.config.beta_schedule;
  test(`${name}: betas, alphas_cumprod and leading timesteps equal diffusers'`, () => {
    const sched = noiseSchedule(s.config);
    assertAllclose(sched.betas, s.betas, { atol: 1e-9, rtol: 1e-6, what: 'betas' });
    assertAllclose(sched.alphasCumprod, s.alphas_cumprod, { atol: 1e-6, rtol: 0, what: 'alphas_cumprod' });
    assert.deepEqual(inferenceTimesteps(sched, fx.steps), s.timesteps);
  });
  test(`${name}: one DDPM and DDIM step() at the first, middle and last timestep equal diffusers' to 1e-6`, () => {
    const [x, eps] = [Float32Array.from(fx.sample), Float32Array.from(fx.eps)];
    for (const st of s.steps) {
      const sched = noiseSchedule({ ...s.config, clip_sample: st.clip, set_alpha_to_one: st.set_alpha_to_one ?? true });
      const prevT = st.index + 1 < fx.steps ? s.timesteps[st.index + 1] : -1;
      const noise = st.noise ? Float32Array.from(st.noise) : undefined;
      const r =
        st.sampler === 'ddpm'
          ? ddpmStep(sched, eps, st.t, prevT, x, noise)
          : ddimStep(sched, eps, st.t, prevT, x, st.eta ?? 0, noise, false); // diffusers' default
      const what = `${st.sampler} clip=${st.clip} eta=${st.eta} one=${st.set_alpha_to_one} t=${st.t}`;
      assertAllclose(r.prev, st.prev, { atol: 1e-6, rtol: 1e-6, what: `${what} prev` });
      assertAllclose(r.predX0, st.x0, { atol: 1e-6, rtol: 1e-6, what: `${what} x0` });
    }
  });
}

test('an unknown beta schedule and a bad step count are refused naming the field', () => {
  assert.throws(
    () => noiseSchedule({ beta_schedule: 'sigmoid' as 'linear' }),
    (e: unknown) => e instanceof LorakitError && e.code === 'LK_CONFIG_INVALID' && /beta_schedule/.test(e.message),
  );
  assert.throws(() => inferenceTimesteps(noiseSchedule(), 0), /inference steps/);
});

test('DDIM with η = 0 and the true ε recovers x₀ in one step from x_t (the deterministic identity)', () => {
  const sched = noiseSchedule({ clip_sample: false });
  const x0 = Float32Array.from({ length: 12 }, (_, i) => Math.sin(i));
  const eps = Float32Array.from({ length: 12 }, (_, i) => Math.cos(3 * i));
  const xt = addNoise(sched, x0, eps, [700]);
  const r = ddimStep(sched, eps, 700, -1, xt, 0);
  assertAllclose(r.prev, x0, { atol: 1e-5, what: 'x0 from x_t' });
});

test('DDIM with use_clipped_model_output: x̂₀ clamped, ε recomputed from it (float64 hand computation)', async () => {
  const sched = noiseSchedule({ clip_sample: true, set_alpha_to_one: true });
  // a latent and ε whose x̂₀ leaves [−1, 1] in some entries and not in others, at t 200 → 100 and with η 0.5
  const x = Float32Array.from([2.5, -0.3, 0.8, -3.1, 0.05, 1.7]);
  const eps = Float32Array.from([-1.2, 0.4, 0.1, 0.9, -0.2, -2.0]);
  const noise = Float32Array.from([0.3, -0.7, 1.1, 0.2, -0.4, 0.6]);
  const [t, prevT, eta] = [200, 100, 0.5];
  const a = sched.alphasCumprod[t];
  const ap = sched.alphasCumprod[prevT];
  const std = eta * Math.sqrt(((1 - ap) / (1 - a)) * (1 - a / ap));
  const want = (clipped: boolean) =>
    [...x].map((xv, k) => {
      const raw = (xv - Math.sqrt(1 - a) * eps[k]) / Math.sqrt(a);
      const x0 = Math.min(1, Math.max(-1, raw));
      const e = clipped ? (xv - Math.sqrt(a) * x0) / Math.sqrt(1 - a) : eps[k];
      return Math.sqrt(ap) * x0 + Math.sqrt(1 - ap - std * std) * e + std * noise[k];
    });
  const raw0 = [...x].map((xv, k) => (xv - Math.sqrt(1 - a) * eps[k]) / Math.sqrt(a));
  assert.ok(raw0.some((v) => Math.abs(v) > 1) && raw0.some((v) => Math.abs(v) < 1), 'some x̂₀ clamped, some not');
  const on = ddimStep(sched, eps, t, prevT, x, eta, noise, true);
  const off = ddimStep(sched, eps, t, prevT, x, eta, noise, false);
  assertAllclose(on.prev, want(true), { atol: 1e-6, what: 'clipped model output' });
  assertAllclose(off.prev, want(false), { atol: 1e-6, what: "diffusers' default" });
  // where x̂₀ was not clamped the recomputed ε is the model's, so the two agree there
  raw0.forEach((v, k) => {
    if (Math.abs(v) < 1) assert.ok(Math.abs(on.prev[k] - off.prev[k]) < 1e-6, `entry ${k}`);
    else assert.ok(Math.abs(on.prev[k] - off.prev[k]) > 1e-3, `entry ${k} differs`);
  });
  // sampleDiffusion uses the clipped output by default and diffusers' step when told so
  const ts = inferenceTimesteps(sched, 2);
  const first = (c: boolean) => ddimStep(sched, eps, ts[0], ts[1], x, 0, undefined, c).prev;
  assert.notDeepEqual(first(true), first(false));
  // the predictor's input at step 2 is what step 1 returned
  const seen: Float32Array[] = [];
  for (const c of [undefined, true, false])
    await sampleDiffusion({
      schedule: sched,
      predictNoise: async (latent) => {
        seen.push(Float32Array.from(latent));
        return eps;
      },
      shape: [1, 1, 2, 3],
      steps: 2,
      initial: x,
      useClippedModelOutput: c,
    });
  assertAllclose(seen[1], first(true), { atol: 0, what: 'default = clipped' });
  assertAllclose(seen[3], first(true), { atol: 0, what: 'true' });
  assertAllclose(seen[5], first(false), { atol: 0, what: 'false' });
});

test('the sampler calls the hook before each step with its index and timestep, and uses what it returns', async () => {
  const sched = noiseSchedule();
  const seen: string[] = [];
  const x = await sampleDiffusion({
    schedule: sched,
    shape: [1, 1, 2, 2],
    steps: 4,
    seed: 3,
    predictNoise: async (latent, t, step) => {
      seen.push(`predict ${step} ${t} ${latent[0]}`);
      return new Float32Array(latent.length);
    },
    hook: async ({ latent, step, timestep, shape }) => {
      assert.deepEqual(shape, [1, 1, 2, 2]);
      seen.push(`hook ${step} ${timestep}`);
      return Float32Array.from(latent, () => step); // the predictor must see the hook's latent
    },
  });
  assert.deepEqual(seen, [
    'hook 0 750',
    'predict 0 750 0',
    'hook 1 500',
    'predict 1 500 1',
    'hook 2 250',
    'predict 2 250 2',
    'hook 3 0',
    'predict 3 0 3',
  ]);
  // ε = 0 at the last step (t 0 → ᾱ_prev = 1): x_{-1} = x̂₀ = x_0/√ᾱ₀ from the hook's latent 3
  const a0 = sched.alphasCumprod[0];
  assertAllclose(
    x,
    [3, 3, 3, 3].map((v) => Math.min(1, v / Math.sqrt(a0))),
    { what: 'last step' },
  );
});

test('sampling is deterministic in the seed (DDPM) and DDIM η = 0 uses no step noise', async () => {
  const schedule = noiseSchedule({ clip_sample: false });
  const predictNoise = async (x: Float32Array) => Float32Array.from(x, (v) => 0.5 * v);
  const run = (sampler: 'ddpm' | 'ddim', seed: number) =>
    sampleDiffusion({ schedule, predictNoise, shape: [2, 1, 3, 3], steps: 5, sampler, seed });
  assert.deepEqual(await run('ddpm', 1), await run('ddpm', 1));
  assert.notDeepEqual(await run('ddpm', 1), await run('ddpm', 2));
  const init = new Float32Array(18).fill(0.3);
  const a = await sampleDiffusion({ schedule, predictNoise, shape: [2, 1, 3, 3], steps: 5, seed: 1, initial: init });
  const b = await sampleDiffusion({ schedule, predictNoise, shape: [2, 1, 3, 3], steps: 5, seed: 9, initial: init });
  assert.deepEqual(a, b);
});

test('guide is ε_u + g·(ε_c − ε_u)', () => {
  assertAllclose(guide(Float32Array.from([1, 2]), Float32Array.from([3, 0]), 2.5), [6, -3]);
});
