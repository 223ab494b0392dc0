/**
 * Training a conditional denoising diffusion model (DDPM, Ho et al. 2020): a UNet2DConditionModel predicts the noise
 * ε added to an image x₀ at a uniformly drawn timestep t (x_t = √ᾱ_t·x₀ + √(1 − ᾱ_t)·ε, noise-schedule.ts), with the
 * mean squared error mean((ε̂(x_t, t, c) − ε)²) as loss; the condition c is the prompt's one-hot token states, read
 * through cross-attention, replaced by the null prompt with probability `condDropout` so one model also predicts
 * unconditionally (classifier-free guidance, Ho & Salimans 2022). One task trains every U-Net weight (a base) or one
 * adapter of a PeftModel over the U-Net (a concept LoRA).
 * Not here: the images (digit-canvas.ts), the sampler (models/diffusion-sampler.ts).
 */
import { Graph, type Tensor } from '../graph/index.ts';
import { Rng, seedFrom } from '../linalg/index.ts';
import {
  type NoiseSchedule,
  type UNet2DConditionConfig,
  type UNetConditionSource,
  addNoise,
  unet2dCondition,
} from '../models/index.ts';
import type { ModelContext } from '../nn/index.ts';
import type { PeftModel } from '../peft/index.ts';
import { adapterTraining, unetTaskGraph } from './adapter-task.ts';
import { LorakitError } from '../errors.ts';
import {
  CANVAS,
  CANVAS_TOKENS,
  type CanvasSet,
  leftRightTokens,
  type PromptKind,
  promptStates,
  promptWidth,
} from './digit-canvas.ts';
import type { TaskGraph, TrainBatch, TrainTask } from './task.ts';

/** Options of diffusionTask. */
export interface DiffusionTaskOptions {
  unet: UNetConditionSource;
  schedule: NoiseSchedule;
  train: CanvasSet;
  batchSize: number;
  /** Probability of the null prompt per example (default 0.1). */
  condDropout?: number;
  /** Train this adapter of `peft`; absent: every U-Net weight. */
  peft?: PeftModel;
  adapter?: string;
  /** Seeds the shuffles, timesteps, noise and prompt dropout (default 0). */
  dataSeed?: number;
  /** How prompts reach the U-Net (default 'set'); its cross_attention_dim must be promptWidth(prompt). */
  prompt?: PromptKind;
}

/** ε̂ [N, 1, H, W] of the U-Net for noisy images, float timesteps [N] and prompt states [N, L, V]. */
export function predictEpsilon(
  ctx: ModelContext<UNet2DConditionConfig>,
  latent: Tensor,
  timesteps: Tensor,
  states: Tensor,
): Tensor {
  return unet2dCondition(ctx, latent, timesteps, states);
}

/** Mean squared error of the noise prediction. */
export function noiseMse(pred: Tensor, noise: Tensor): Tensor {
  const d = pred.sub(noise);
  return d.mul(d).mean();
}

/** One batch's feeds: x_t, t, states and ε for rows `rows` of the set, from the stream position's own seed. */
export function diffusionBatch(
  o: Pick<DiffusionTaskOptions, 'schedule' | 'train' | 'condDropout' | 'prompt'>,
  rows: ArrayLike<number>,
  rng: Rng,
) {
  const { height: H, width: W, promptLength: L } = CANVAS;
  const B = rows.length;
  const per = H * W;
  const x0 = new Float32Array(B * per);
  const tokens = new Int32Array(B * L);
  const kind = o.prompt ?? 'set';
  const source = kind === 'positional' ? leftRightTokens(o.train) : o.train.tokens;
  for (let b = 0; b < B; b++) {
    x0.set(o.train.images.subarray(rows[b] * per, (rows[b] + 1) * per), b * per);
    const drop = rng.next() < (o.condDropout ?? 0.1);
    for (let l = 0; l < L; l++) tokens[b * L + l] = drop ? CANVAS_TOKENS.null : source[rows[b] * L + l];
  }
  const T = o.schedule.config.num_train_timesteps;
  const t = Array.from({ length: B }, () => Math.floor(rng.next() * T));
  const noise = rng.normalArray(B * per);
  return {
    latent: addNoise(o.schedule, x0, noise, t),
    timesteps: Float32Array.from(t),
    states: promptStates(tokens, kind),
    noise,
  };
}

/** The TrainTask: noise-prediction MSE over seeded shuffles of the canvases, fresh t and ε per batch. */
export function diffusionTask(o: DiffusionTaskOptions): TrainTask {
  const { unet, train, batchSize: B } = o;
  const { height: H, width: W, promptLength: L } = CANVAS;
  const V = unet.config.cross_attention_dim;
  if (V !== promptWidth(o.prompt ?? 'set'))
    throw new LorakitError(
      'LK_CONFIG_INVALID',
      `diffusion task: ${o.prompt ?? 'set'} prompts have width ${promptWidth(o.prompt ?? 'set')}, ` +
        `the U-Net's cross_attention_dim is ${V}`,
      { field: 'cross_attention_dim' },
    );
  const perEpoch = Math.floor(train.n / B);
  const seed = o.dataSeed ?? 0;
  const shared = o.peft ? adapterTraining(o.peft, o.adapter ?? 'default') : null;
  const names = unet.parameters().map((p) => p.name);
  const build = (): TaskGraph => {
    const g = new Graph('diffusion');
    const latent = g.input('latent', 'f32', [B, 1, H, W]);
    const timesteps = g.input('timesteps', 'f32', [B]);
    const states = g.input('states', 'f32', [B, L, V]);
    const noise = g.input('noise', 'f32', [B, 1, H, W]);
    const adapter = shared && o.peft ? { shared, peft: o.peft, name: o.adapter } : null;
    return unetTaskGraph(g, unet, names, adapter, (ctx) =>
      noiseMse(predictEpsilon(ctx, latent, timesteps, states), noise),
    );
  };
  return {
    build,
    async initialParams() {
      if (shared) return shared.initialParams();
      const out: Record<string, Float32Array> = {};
      for (const n of names) out[n] = Float32Array.from(await unet.read(n));
      return out;
    },
    *batches(from) {
      for (let epoch = from.epoch, index = from.index; ; epoch++, index = 0) {
        const perm = new Rng(seedFrom(seed, `epoch ${epoch}`)).permutation(train.n);
        for (; index < perEpoch; index++) {
          const rng = new Rng(seedFrom(seed, `batch ${epoch} ${index}`));
          const f = diffusionBatch(o, perm.subarray(index * B, (index + 1) * B), rng);
          const next = index + 1 < perEpoch ? { epoch, index: index + 1 } : { epoch: epoch + 1, index: 0 };
          const img = [B, 1, H, W];
          const feeds = {
            latent: { data: f.latent, shape: img },
            timesteps: { data: f.timesteps, shape: [B] },
            states: { data: f.states, shape: [B, L, V] },
            noise: { data: f.noise, shape: img },
          };
          yield { feeds, weight: B, next } as TrainBatch;
        }
      }
    },
    batchesPerEpoch: perEpoch,
    stepInputs: shared?.stepInputs,
    settings: {
      batch_size: B,
      train_images: train.n,
      data_seed: seed,
      cond_dropout: o.condDropout ?? 0.1,
      prompt: o.prompt ?? 'set',
    },
  };
}
