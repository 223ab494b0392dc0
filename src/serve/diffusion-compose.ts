/**
 * Composing several concept LoRAs while sampling a diffusion model, as noise predictors for the sampling loop
 * (models/diffusion-sampler.ts). Four methods, after "Multi-LoRA Composition for Image Generation" (Zhong et al.
 * 2024) and CMLoRA ("Cached Multi-LoRA Composition", Zou et al., ICLR 2025; spec methods-c §4):
 *  - merge: one pass with every LoRA active (W0 + Σ ΔW_i, the weight-space sum);
 *  - switch: one LoRA per step, the next every `switchEvery` steps (cycling in order);
 *  - composite: one pass per LoRA, ε = mean_i ε_i^u + g·(mean_i ε_i^c − mean_i ε_i^u);
 *  - cmlora: composite with a dominant LoRA weighted w_dom = c·w_non (c = N − 0.5, w_non = N/(c + N − 1)), the
 *    dominance moving to the next LoRA at each refresh step, and per-LoRA caching of deep features: between its
 *    refreshes a LoRA's pass runs only the shallow path on its cached features (models/unet-cond.ts
 *    unet2dConditionParts); the schedule is `cmloraSchedule`.
 * A pass is one U-Net call on [latent; latent] with [null prompt; prompt] (classifier-free guidance in one batch).
 * Not here: the sampling loop (models/), CLoRA (its own module plugs into the same PredictNoise and LatentHook).
 */
import { LorakitError } from '../errors.ts';
import { Graph } from '../graph/index.ts';
import {
  type LatentHook,
  type NoiseSchedule,
  type PredictNoise,
  type SamplerName,
  type UNetConditionSource,
  guide,
  sampleDiffusion,
  unet2dConditionParts,
} from '../models/index.ts';
import type { PeftModel } from '../peft/index.ts';
import { compile, type Session } from '../runtime/index.ts';
import { type CmloraSplit, cmloraSchedule } from './cmlora-schedule.ts';

/** The unconditional and conditional ε̂ of one guided pass, and its deep features (the cache). */
export interface PassResult {
  uncond: Float32Array;
  cond: Float32Array;
  deep: Float32Array;
}

/** One LoRA set's U-Net pass: full, or shallow on `cached` deep features of an earlier full pass. */
export interface LoraPass {
  run(latent: Float32Array, timestep: number, cached?: Float32Array): Promise<PassResult>;
}

/** The composition methods. */
export const COMPOSE_METHODS = ['merge', 'switch', 'composite', 'cmlora'] as const;
/** One of COMPOSE_METHODS. */
export type ComposeMethod = (typeof COMPOSE_METHODS)[number];

/** Options of composedPredictor. */
export interface ComposeOptions {
  method: ComposeMethod;
  /** Guidance scale g. */
  guidance: number;
  /** Inference steps of the run (CMLoRA's schedule needs them). */
  steps: number;
  /** LoRA Switch: steps per LoRA (default 5, the baseline's `switch_step`). */
  switchEvery?: number;
  /** CMLoRA: refresh every c steps (c > 1 also caches); 0 the paper's non-uniform sequence (default 2). */
  cacheInterval?: number;
  /** CMLoRA: the frequency split of the passes, ordered high list first (cmloraFrequencyOrder); none: one list. */
  split?: CmloraSplit;
}

/** The dominant-LoRA weights of CMLoRA for N LoRAs: [w_dom, w_non], N·mean weight = 1·N (they sum to N). */
export function cmloraWeights(n: number): [number, number] {
  const c = n - 0.5;
  const wNon = n / (c + n - 1);
  return [c * wNon, wNon];
}

function needPasses(method: string, passes: readonly LoraPass[], want: number) {
  if (passes.length < want)
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `compose ${method}: needs ${want} LoRA pass(es), got ${passes.length}`,
    );
}

/**
 * The noise predictor of one method. `passes` holds one pass per LoRA (switch, composite, cmlora) or the single pass
 * with every LoRA active (merge).
 */
export function composedPredictor(passes: readonly LoraPass[], o: ComposeOptions): PredictNoise {
  const g = o.guidance;
  if (o.method === 'merge') {
    needPasses('merge', passes, 1);
    return async (x, t) => {
      const r = await passes[0].run(x, t);
      return guide(r.uncond, r.cond, g);
    };
  }
  if (o.method === 'switch') {
    needPasses('switch', passes, 1);
    const every = o.switchEvery ?? 5;
    return async (x, t, step) => {
      const r = await passes[Math.floor(step / every) % passes.length].run(x, t);
      return guide(r.uncond, r.cond, g);
    };
  }
  if (o.method === 'composite') {
    needPasses('composite', passes, 1);
    return async (x, t) => {
      const rs = await Promise.all(passes.map((p) => p.run(x, t)));
      return guide(weightedMean(rs.map((r) => r.uncond)), weightedMean(rs.map((r) => r.cond)), g);
    };
  }
  if (o.method === 'cmlora') {
    needPasses('cmlora', passes, 1);
    const plan = cmloraSchedule(o.steps, passes.length, o.cacheInterval ?? 2, o.split);
    const [wDom, wNon] = cmloraWeights(passes.length);
    const caches: (Float32Array | undefined)[] = passes.map(() => undefined);
    return async (x, t, step) => {
      const at = plan.steps[step];
      const rs: PassResult[] = [];
      for (let i = 0; i < passes.length; i++) {
        const r = await passes[i].run(x, t, at.full[i] ? undefined : caches[i]);
        if (at.full[i]) caches[i] = r.deep;
        rs.push(r);
      }
      const w = passes.map((_, i) => (i === at.dominant ? wDom : wNon));
      return guide(
        weightedMean(
          rs.map((r) => r.uncond),
          w,
        ),
        weightedMean(
          rs.map((r) => r.cond),
          w,
        ),
        g,
      );
    };
  }
  throw new LorakitError(
    'LK_INVALID_ARGUMENT',
    `compose: method "${String(o.method)}" is not one of ${COMPOSE_METHODS.join(', ')}`,
  );
}

/** (1/N)·Σ_i w_i·x_i (w_i = 1 by default: the plain mean). */
function weightedMean(xs: Float32Array[], w?: number[]): Float32Array {
  const out = new Float32Array(xs[0].length);
  for (let i = 0; i < xs.length; i++) {
    const wi = (w?.[i] ?? 1) / xs.length;
    for (let k = 0; k < out.length; k++) out[k] += wi * xs[i][k];
  }
  return out;
}

/** Options of unetPass. */
export interface UNetPassOptions {
  unet: UNetConditionSource;
  /** The adapters to activate (all at once) from `peft`; none: the base. */
  peft?: PeftModel;
  adapters?: readonly string[];
  /** Samples per call N (the pass runs 2N: unconditional, then conditional). */
  batch: number;
  /** Prompt states [N, L, V] and the null prompt's [N, L, V]. */
  states: Float32Array;
  nullStates: Float32Array;
  /** Latent [C, H, W] of one sample. */
  sampleShape: readonly number[];
}

/** Compiles one LoRA set's full and shallow U-Net passes (the shallow one on first use). */
export async function unetPass(o: UNetPassOptions): Promise<LoraPass & { dispose(): Promise<void> }> {
  const { unet, batch: N } = o;
  const [C, H, W] = o.sampleShape;
  const V = unet.config.cross_attention_dim;
  const L = o.states.length / (N * V);
  if (!Number.isInteger(L) || o.nullStates.length !== o.states.length)
    throw new LorakitError(
      'LK_SHAPE_MISMATCH',
      `unetPass: states have ${o.states.length} values and null states ${o.nullStates.length}; both must be ` +
        `[${N}, L, ${V}]`,
    );
  const hooks = () => {
    if (!o.peft) return {};
    o.peft.setActive(...(o.adapters ?? []));
    return { hooks: o.peft.hooks(), overrides: o.peft.weightOverrides() };
  };
  let deepShape: number[] = [];
  const build = (shallow: boolean) => {
    const g = new Graph(shallow ? 'unet-shallow' : 'unet-full');
    const x = g.input('latent', 'f32', [2 * N, C, H, W]);
    const t = g.input('timesteps', 'f32', [2 * N]);
    const s = g.input('states', 'f32', [2 * N, L, V]);
    const cached = shallow ? g.input('cached', 'f32', deepShape) : undefined;
    const r = unet2dConditionParts(unet.context(g, hooks()), x, t, s, cached);
    g.output('sample', r.sample);
    if (!shallow) {
      deepShape = r.deep.shape as number[];
      g.output('deep', r.deep);
    }
    return compile(g, { worker: false });
  };
  const full = await build(false);
  let shallowSession: Session | undefined;
  const states = new Float32Array(2 * o.states.length);
  states.set(o.nullStates, 0);
  states.set(o.states, o.states.length);
  const per = C * H * W;
  return {
    async run(latent, timestep, cached) {
      if (latent.length !== N * per)
        throw new LorakitError(
          'LK_SHAPE_MISMATCH',
          `unetPass: latent has ${latent.length} values, expected ${N * per}`,
        );
      const x = new Float32Array(2 * N * per);
      x.set(latent, 0);
      x.set(latent, N * per);
      const feeds: Record<string, Float32Array> = {
        latent: x,
        timesteps: new Float32Array(2 * N).fill(timestep),
        states,
      };
      let out: Record<string, { data: unknown }>;
      if (cached) {
        shallowSession ??= await build(true);
        out = await shallowSession.run({ ...feeds, cached });
      } else out = await full.run(feeds);
      const eps = out.sample.data as Float32Array;
      return {
        uncond: eps.slice(0, N * per),
        cond: eps.slice(N * per),
        deep: cached ?? (out.deep.data as Float32Array),
      };
    },
    async dispose() {
      await full.dispose();
      await shallowSession?.dispose();
    },
  };
}

/** Options of sampleComposed. */
export interface ComposedSampleOptions extends Omit<UNetPassOptions, 'adapters'> {
  schedule: NoiseSchedule;
  /** The LoRAs of `peft` to compose (one: that LoRA alone; none: the base). */
  adapters: readonly string[];
  method: ComposeMethod;
  guidance: number;
  steps: number;
  sampler?: SamplerName;
  eta?: number;
  seed?: number;
  switchEvery?: number;
  cacheInterval?: number;
  /** CMLoRA's frequency split; `adapters` must then be in its pass order (high-frequency list first). */
  split?: CmloraSplit;
  /** Called before each denoising step (CLoRA's latent update). */
  hook?: LatentHook;
  /** DDIM: ε from the clipped x̂₀ (default true; sampleDiffusion). */
  useClippedModelOutput?: boolean;
}

/** Draws `batch` samples with the LoRAs composed by `method`; returns x₀ [batch, C, H, W]. */
export async function sampleComposed(o: ComposedSampleOptions): Promise<Float32Array> {
  const { adapters, method } = o;
  const sets = method === 'merge' || adapters.length <= 1 ? [[...adapters]] : adapters.map((a) => [a]);
  const passes = [];
  for (const s of sets) passes.push(await unetPass({ ...o, adapters: s }));
  try {
    const predictNoise = composedPredictor(passes, {
      method: sets.length === 1 ? 'merge' : method,
      guidance: o.guidance,
      steps: o.steps,
      switchEvery: o.switchEvery,
      cacheInterval: o.cacheInterval,
      split: o.split,
    });
    return await sampleDiffusion({
      schedule: o.schedule,
      predictNoise,
      shape: [o.batch, ...o.sampleShape],
      steps: o.steps,
      sampler: o.sampler,
      eta: o.eta,
      seed: o.seed,
      hook: o.hook,
      useClippedModelOutput: o.useClippedModelOutput,
    });
  } finally {
    for (const p of passes) await p.dispose();
  }
}
