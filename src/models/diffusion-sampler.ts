/**
 * The reverse-diffusion loop: from seeded Gaussian noise, T inference steps of DDPM or DDIM (noise-schedule.ts),
 * each asking a pluggable noise predictor for ε̂(x_t, t). The predictor is where a model, classifier-free guidance
 * (`guide`) and multi-LoRA composition (serve/diffusion-compose.ts, CLoRA) plug in; an optional hook may replace the
 * latent before each step (CLoRA's contrastive latent update) without changing this loop.
 * Not here: the schedule maths (noise-schedule.ts), the U-Net graph (unet-cond.ts), composition methods (serve/).
 */
import { LorakitError } from '../errors.ts';
import { Rng, seedFrom } from '../linalg/index.ts';
import { ddimStep, ddpmStep, inferenceTimesteps, type NoiseSchedule } from './noise-schedule.ts';

/** Called before each denoising step; returns the latent to use (CLoRA's latent update plugs in here). */
export type LatentHook = (s: {
  latent: Float32Array;
  shape: readonly number[];
  step: number;
  timestep: number;
}) => Promise<Float32Array>;

/**
 * ε̂ for the latent [N, C, H, W] at one timestep (the same for every sample); `step` is the index of the denoising step
 * (0 first), for methods that change with it (LoRA Switch, CMLoRA). A predictor of (latent, timestep) fits too.
 */
export type PredictNoise = (latent: Float32Array, timestep: number, step: number) => Promise<Float32Array>;

/** The samplers: DDPMScheduler's ancestral step or DDIMScheduler's (η = 0: deterministic). */
export type SamplerName = 'ddpm' | 'ddim';

/** Options of sampleDiffusion. */
export interface SampleOptions {
  schedule: NoiseSchedule;
  predictNoise: PredictNoise;
  /** The latent's shape [N, C, H, W]. */
  shape: readonly number[];
  /** Inference steps (timesteps of "leading" spacing). */
  steps: number;
  /** Default 'ddim'. */
  sampler?: SamplerName;
  /** DDIM's η (default 0). */
  eta?: number;
  /** Seeds the initial noise and every step's noise (default 0). */
  seed?: number;
  hook?: LatentHook;
  /** Start from this latent instead of seeded noise. */
  initial?: Float32Array;
  /**
   * DDIM only: recompute ε from the clipped x̂₀ for the direction term (diffusers' `use_clipped_model_output`).
   * Default true, unlike diffusers' pipelines: with clip_sample a small pixel model's x̂₀ is often clamped, and the
   * unclamped ε then pushes x_{t−1} off the clamped image (docs/decisions.md).
   */
  useClippedModelOutput?: boolean;
}

/** Classifier-free guidance: ε = ε_u + g·(ε_c − ε_u). */
export function guide(uncond: Float32Array, cond: Float32Array, scale: number): Float32Array {
  if (uncond.length !== cond.length)
    throw new LorakitError(
      'LK_SHAPE_MISMATCH',
      `guide: unconditional prediction has ${uncond.length} values, conditional ${cond.length}`,
    );
  return Float32Array.from(uncond, (u, k) => u + scale * (cond[k] - u));
}

/** Draws x_T ~ N(0, I) and runs the reverse process; returns x₀ [N, C, H, W]. */
export async function sampleDiffusion(o: SampleOptions): Promise<Float32Array> {
  const size = o.shape.reduce((a, b) => a * b, 1);
  if (o.shape.length !== 4 || !Number.isInteger(size) || size <= 0)
    throw new LorakitError('LK_INVALID_ARGUMENT', `sampleDiffusion: shape must be [N, C, H, W], got [${o.shape}]`);
  const seed = o.seed ?? 0;
  const sampler = o.sampler ?? 'ddim';
  const eta = o.eta ?? 0;
  if (sampler !== 'ddpm' && sampler !== 'ddim')
    throw new LorakitError('LK_INVALID_ARGUMENT', `sampleDiffusion: sampler "${sampler}" is not ddpm or ddim`);
  let x = o.initial ? Float32Array.from(o.initial) : new Rng(seedFrom(seed, 'x_T')).normalArray(size);
  if (x.length !== size)
    throw new LorakitError('LK_SHAPE_MISMATCH', `sampleDiffusion: initial has ${x.length} values, shape needs ${size}`);
  const ts = inferenceTimesteps(o.schedule, o.steps);
  for (let i = 0; i < ts.length; i++) {
    const [t, prevT] = [ts[i], i + 1 < ts.length ? ts[i + 1] : -1];
    if (o.hook) {
      x = await o.hook({ latent: x, shape: o.shape, step: i, timestep: t });
      if (x.length !== size)
        throw new LorakitError(
          'LK_SHAPE_MISMATCH',
          `sampleDiffusion: the hook returned ${x.length} values at step ${i}`,
        );
    }
    const eps = await o.predictNoise(x, t, i);
    const needsNoise = sampler === 'ddpm' ? t > 0 : eta > 0;
    const noise = needsNoise ? new Rng(seedFrom(seed, `step ${i}`)).normalArray(size) : undefined;
    x = (
      sampler === 'ddpm'
        ? ddpmStep(o.schedule, eps, t, prevT, x, noise)
        : ddimStep(o.schedule, eps, t, prevT, x, eta, noise, o.useClippedModelOutput ?? true)
    ).prev;
  }
  return x;
}
