/**
 * The discrete noise schedules of denoising diffusion (DDPM, Ho et al. 2020; DDIM, Song et al. 2021) with
 * diffusers' semantics: betas (linear, scaled_linear, squaredcos_cap_v2), alphas_cumprod, the forward process
 * (add_noise), the inference timesteps of timestep_spacing "leading", and one reverse step of DDPMScheduler
 * (ε-prediction, posterior variance "fixed_small", clip_sample) and of DDIMScheduler (η, set_alpha_to_one).
 * Follows diffusers 0.35 scheduling_ddpm.py and scheduling_ddim.py; checked against them on fixtures
 * (test/models/noise-schedule.test.ts, interop/make_diffusion_fixtures.py). Host arithmetic in float64 over the
 * float32 inputs; every array handed back is float32.
 * Not here: the sampling loop, guidance and hooks (diffusion-sampler.ts), the model (unet-cond.ts).
 */
import { LorakitError } from '../errors.ts';

/** The scheduler fields lorakit reads, with diffusers' names and defaults (scheduler_config.json). */
export interface NoiseScheduleConfig {
  num_train_timesteps: number;
  beta_start: number;
  beta_end: number;
  beta_schedule: 'linear' | 'scaled_linear' | 'squaredcos_cap_v2';
  /** Clamp the predicted x₀ to ±clip_sample_range (both schedulers). */
  clip_sample: boolean;
  clip_sample_range: number;
  /** DDIM: ᾱ before the first step is 1 (true) or ᾱ₀ (false). */
  set_alpha_to_one: boolean;
  /** Added to every inference timestep ("leading" spacing). */
  steps_offset: number;
}

/** diffusers' defaults of DDPMScheduler / DDIMScheduler. */
export const DEFAULT_NOISE_SCHEDULE: NoiseScheduleConfig = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: 'linear',
  clip_sample: true,
  clip_sample_range: 1,
  set_alpha_to_one: true,
  steps_offset: 0,
};

/** A schedule: its config, β_t and ᾱ_t = Π_{s≤t}(1 − β_s), t = 0..T−1. */
export interface NoiseSchedule {
  config: NoiseScheduleConfig;
  betas: Float64Array;
  alphasCumprod: Float64Array;
}

/** Builds β and ᾱ from a (partial) config; unknown beta schedules are refused naming the field. */
export function noiseSchedule(partial: Partial<NoiseScheduleConfig> = {}): NoiseSchedule {
  const config = { ...DEFAULT_NOISE_SCHEDULE, ...partial };
  const T = config.num_train_timesteps;
  if (!Number.isInteger(T) || T < 2)
    throw new LorakitError('LK_CONFIG_INVALID', `noise schedule: num_train_timesteps must be an integer ≥ 2, got ${T}`);
  const f32 = (x: number) => Math.fround(x);
  const betas = new Float64Array(T);
  if (config.beta_schedule === 'linear' || config.beta_schedule === 'scaled_linear') {
    // torch.linspace in float32; scaled_linear squares a linspace of the square roots (Stable Diffusion's)
    const [a, b] =
      config.beta_schedule === 'linear'
        ? [config.beta_start, config.beta_end]
        : [Math.sqrt(config.beta_start), Math.sqrt(config.beta_end)];
    for (let i = 0; i < T; i++) {
      const v = f32(a + ((b - a) * i) / (T - 1));
      betas[i] = config.beta_schedule === 'linear' ? v : f32(v * v);
    }
  } else if (config.beta_schedule === 'squaredcos_cap_v2') {
    // Nichol & Dhariwal's cosine ᾱ(t) = cos²((t + 0.008)/1.008 · π/2), β_i = min(1 − ᾱ(t₂)/ᾱ(t₁), 0.999)
    const abar = (t: number) => Math.cos(((t + 0.008) / 1.008) * (Math.PI / 2)) ** 2;
    for (let i = 0; i < T; i++) betas[i] = f32(Math.min(1 - abar((i + 1) / T) / abar(i / T), 0.999));
  } else {
    throw new LorakitError(
      'LK_CONFIG_INVALID',
      `noise schedule: beta_schedule "${String(config.beta_schedule)}" is not one of linear, scaled_linear, ` +
        'squaredcos_cap_v2',
    );
  }
  const alphasCumprod = new Float64Array(T);
  let prod = 1;
  for (let i = 0; i < T; i++) {
    prod = f32(prod * f32(1 - betas[i])); // torch.cumprod over float32 alphas
    alphasCumprod[i] = prod;
  }
  return { config, betas, alphasCumprod };
}

/** x_t = √ᾱ_t·x₀ + √(1 − ᾱ_t)·ε, one timestep per sample (x₀, ε [N, ...], timesteps [N]). */
export function addNoise(
  s: NoiseSchedule,
  x0: Float32Array,
  noise: Float32Array,
  timesteps: ArrayLike<number>,
): Float32Array {
  const n = timesteps.length;
  const per = x0.length / n;
  if (noise.length !== x0.length || !Number.isInteger(per))
    throw new LorakitError(
      'LK_SHAPE_MISMATCH',
      `addNoise: x0 has ${x0.length} values, noise ${noise.length}, for ${n} timesteps; x0 and noise must be [N, ...]`,
    );
  const out = new Float32Array(x0.length);
  for (let b = 0; b < n; b++) {
    const a = s.alphasCumprod[timesteps[b]];
    const [sa, sb] = [Math.sqrt(a), Math.sqrt(1 - a)];
    for (let k = b * per; k < (b + 1) * per; k++) out[k] = sa * x0[k] + sb * noise[k];
  }
  return out;
}

/** The inference timesteps of "leading" spacing, high to low: (0..n−1)·⌊T/n⌋ reversed, plus steps_offset. */
export function inferenceTimesteps(s: NoiseSchedule, steps: number): number[] {
  const T = s.config.num_train_timesteps;
  if (!Number.isInteger(steps) || steps < 1 || steps > T)
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `inference steps must be an integer in 1..${T} (num_train_timesteps), got ${steps}`,
    );
  const ratio = Math.floor(T / steps);
  return Array.from({ length: steps }, (_, i) => (steps - 1 - i) * ratio + s.config.steps_offset);
}

/** One reverse step's result: x_{t−1} and the predicted x₀. */
export interface StepResult {
  prev: Float32Array;
  predX0: Float32Array;
}

/** x̂₀ = (x_t − √(1 − ᾱ_t)·ε)/√ᾱ_t, clamped when clip_sample. */
function predictX0(s: NoiseSchedule, a: number, eps: Float32Array, x: Float32Array): Float64Array {
  const { clip_sample: clip, clip_sample_range: r } = s.config;
  const out = new Float64Array(x.length);
  for (let k = 0; k < x.length; k++) {
    const v = (x[k] - Math.sqrt(1 - a) * eps[k]) / Math.sqrt(a);
    out[k] = clip ? Math.min(r, Math.max(-r, v)) : v;
  }
  return out;
}

function checkStep(name: string, eps: Float32Array, x: Float32Array, noise?: Float32Array) {
  if (eps.length !== x.length || (noise && noise.length !== x.length))
    throw new LorakitError(
      'LK_SHAPE_MISMATCH',
      `${name}: model output has ${eps.length} values, sample ${x.length}` +
        (noise ? `, noise ${noise.length}` : '') +
        '; they must have one shape',
    );
}

/**
 * DDPMScheduler.step (ε-prediction, variance "fixed_small"): μ = (√ᾱ_prev·β_t'/(1 − ᾱ_t))·x̂₀ +
 * (√α_t'·(1 − ᾱ_prev)/(1 − ᾱ_t))·x_t with α_t' = ᾱ_t/ᾱ_prev, β_t' = 1 − α_t'; x_{t−1} = μ + σ·z for t > 0, with the
 * posterior variance σ² = max((1 − ᾱ_prev)/(1 − ᾱ_t)·β_t', 1e−20). `prevT` is the next inference timestep (−1 last).
 */
export function ddpmStep(
  s: NoiseSchedule,
  eps: Float32Array,
  t: number,
  prevT: number,
  x: Float32Array,
  noise?: Float32Array,
): StepResult {
  checkStep('ddpmStep', eps, x, noise);
  const a = s.alphasCumprod[t];
  const aPrev = prevT >= 0 ? s.alphasCumprod[prevT] : 1;
  const alphaT = a / aPrev;
  const betaT = 1 - alphaT;
  const x0 = predictX0(s, a, eps, x);
  const c0 = (Math.sqrt(aPrev) * betaT) / (1 - a);
  const c1 = (Math.sqrt(alphaT) * (1 - aPrev)) / (1 - a);
  const sigma = t > 0 ? Math.sqrt(Math.max(((1 - aPrev) / (1 - a)) * betaT, 1e-20)) : 0;
  if (t > 0 && !noise) throw new LorakitError('LK_INVALID_ARGUMENT', `ddpmStep: timestep ${t} > 0 needs a noise draw`);
  const prev = new Float32Array(x.length);
  for (let k = 0; k < x.length; k++) prev[k] = c0 * x0[k] + c1 * x[k] + (t > 0 ? sigma * noise![k] : 0);
  return { prev, predX0: Float32Array.from(x0) };
}

/**
 * DDIMScheduler.step (ε-prediction): σ = η·√((1 − ᾱ_prev)/(1 − ᾱ_t)·(1 − ᾱ_t/ᾱ_prev)),
 * x_{t−1} = √ᾱ_prev·x̂₀ + √(1 − ᾱ_prev − σ²)·ε + σ·z. ᾱ_prev before the first step is 1 or ᾱ₀ (set_alpha_to_one).
 * `useClippedModelOutput` (diffusers' argument of that name, default false as in diffusers): ε in the direction
 * term is recomputed from the clipped x̂₀, ε = (x_t − √ᾱ_t·x̂₀)/√(1 − ᾱ_t), so x̂₀ and ε describe one x_t; with false
 * a clamped x̂₀ is paired with the unclamped ε (what diffusers' pipelines do; sampleDiffusion's default is true,
 * docs/decisions.md).
 */
export function ddimStep(
  s: NoiseSchedule,
  eps: Float32Array,
  t: number,
  prevT: number,
  x: Float32Array,
  eta = 0,
  noise?: Float32Array,
  useClippedModelOutput = false,
): StepResult {
  checkStep('ddimStep', eps, x, noise);
  const a = s.alphasCumprod[t];
  const aPrev = prevT >= 0 ? s.alphasCumprod[prevT] : s.config.set_alpha_to_one ? 1 : s.alphasCumprod[0];
  const std = eta * Math.sqrt(((1 - aPrev) / (1 - a)) * (1 - a / aPrev));
  if (eta > 0 && !noise) throw new LorakitError('LK_INVALID_ARGUMENT', `ddimStep: eta ${eta} > 0 needs a noise draw`);
  const x0 = predictX0(s, a, eps, x);
  const dir = Math.sqrt(1 - aPrev - std * std);
  const prev = new Float32Array(x.length);
  for (let k = 0; k < x.length; k++) {
    const e = useClippedModelOutput ? (x[k] - Math.sqrt(a) * x0[k]) / Math.sqrt(1 - a) : eps[k];
    prev[k] = Math.sqrt(aPrev) * x0[k] + dir * e + (eta > 0 ? std * noise![k] : 0);
  }
  return { prev, predX0: Float32Array.from(x0) };
}
