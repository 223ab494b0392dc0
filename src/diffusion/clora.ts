/**
 * CLoRA in full as a sampler plug-in (arXiv:2403.19776; official pipeline_clora.py, read in the copy
 * PinAura/clora-test): a LatentHook that moves the latent down the gradient of the contrastive attention loss
 * (z ← z − η·∇_z L, at steps i < max_iter_to_alter, repeated iterative_steps_steps more times at the steps listed in
 * iterative_steps), and a predictNoise that runs every pass, turns each pass's attention to its mask tokens into a
 * binary mask (per token: map > α·max; union over tokens; optional 3×3 erode/dilate/open/close; the background pass
 * takes every position no other mask covers), upsamples the masks to the latent (nearest) and fuses the passes' noise
 * predictions as Σ_p m_p ε_p / Σ_p m_p, then applies classifier-free guidance.
 * Not here: the graphs (clora-graph.ts), the loss (clora-loss.ts), the sampler and its schedule (the diffusion
 * branch's samplers call hook, then predictNoise, each step).
 */
import { LorakitError } from '../errors.ts';
import type { LayerSelection } from '../models/index.ts';
import { type Session, compile } from '../runtime/index.ts';
import type { ConceptGroups } from './clora-loss.ts';
import { type CloraGraphOptions, type CloraPass, type CondUNetSource, buildCloraGraph } from './clora-graph.ts';

/** A sampler's per-step hook on the latent (the diffusion branch's type, defined the same way here). */
export type LatentHook = (s: {
  latent: Float32Array;
  shape: readonly number[];
  step: number;
  timestep: number;
}) => Promise<Float32Array>;

/**
 * The noise prediction a sampler calls: latent [N, C, H, W] at one timestep → ε of the same shape; `step` is the
 * denoising step's index (the diffusion branch's sampler passes it; without it the last hook call's step is used).
 */
export type PredictNoise = (latent: Float32Array, timestep: number, step?: number) => Promise<Float32Array>;

/** Mask post-processing of the official pipeline (3×3 max-pool morphology), each off by default. */
export interface MaskMorphology {
  erode?: boolean;
  dilate?: boolean;
  opening?: boolean;
  closing?: boolean;
}

/** CLoRA's options; names follow the official pipeline's arguments, defaults its signature's unless said. */
export interface CloraOptions {
  unet: CondUNetSource;
  /** Every pass: passes[0] is usually the background (no LoRA, no mask tokens). */
  passes: readonly CloraPass[];
  /** important_token_indices regrouped: concepts[c] = the (prompt, token) pairs of concept c. */
  concepts: ConceptGroups;
  /** Unconditional states [L, D]; absent: no classifier-free guidance (ε is the fused conditional prediction). */
  uncond?: Float32Array;
  /** guidance_scale (default 7.5). */
  guidanceScale?: number;
  /**
   * The layers whose maps are averaged. Default: those at 1/4 of the latent (SD's 16×16 of a 64×64 latent: the
   * official attn_res = image/32), or the coarsest grid the U-Net has if it has no 1/4 layer.
   */
  layers?: LayerSelection;
  /** latent_update (default true here: CLoRA in full; the official signature defaults to false, its notebook true). */
  latentUpdate?: boolean;
  /** step_size η (default 20). */
  stepSize?: number;
  /** max_iter_to_alter: the latent is updated at steps i < this (default 30). */
  maxIterToAlter?: number;
  /** iterative_steps: steps where the update repeats (default none; the notebook uses [0, 10, 20]). */
  iterativeSteps?: readonly number[];
  /** iterative_steps_steps: extra updates at those steps (default 20). */
  iterativeStepsSteps?: number;
  /** The NT-Xent temperature (0.5, hard-coded in the official code). */
  temperature?: number;
  /** mask_threshold_alpha (default 0.3). */
  maskThreshold?: number;
  /** apply_mask_after: before this step every mask is 1, an even average of the passes (default 0). */
  applyMaskAfter?: number;
  morphology?: MaskMorphology;
}

/** What clora() returns: the sampler's two plug-ins, the last step's masks, and close(). */
export interface Clora {
  hook: LatentHook;
  predictNoise: PredictNoise;
  /** ∂loss/∂latent and the loss at one latent [1, C, H, W] (what the hook steps along). */
  gradient(latent: Float32Array, timestep: number): Promise<{ loss: number; grad: Float32Array }>;
  /** The masks [P, H, W] the last predictNoise fused with, per image row (for pictures and tests). */
  lastMasks: () => Float32Array[];
  close(): Promise<void>;
}

/** 3×3 max pool, stride 1, padding 1 (padding never wins: torch pads max_pool2d with −∞), of m [h, w]. */
function maxPool3(m: Float32Array, h: number, w: number): Float32Array {
  const out = new Float32Array(h * w);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      let v = Number.NEGATIVE_INFINITY;
      for (let dy = -1; dy <= 1; dy++)
        for (let dx = -1; dx <= 1; dx++) {
          const [yy, xx] = [y + dy, x + dx];
          if (yy >= 0 && yy < h && xx >= 0 && xx < w) v = Math.max(v, m[yy * w + xx]);
        }
      out[y * w + x] = v;
    }
  return out;
}

const dilate = (m: Float32Array, h: number, w: number) => maxPool3(m, h, w);
const erode = (m: Float32Array, h: number, w: number) =>
  maxPool3(
    m.map((v) => 1 - v),
    h,
    w,
  ).map((v) => 1 - v);

/**
 * The official attention_map_to_mask: per pass p, maps[p] [h, w, L] → a 0/1 mask [h, w] (union over maskTokens[p]
 * of map > α·max of that token's map; empty maskTokens: all 0), morphology in the official order (dilate, erode,
 * opening, closing), then the first pass takes every position where no mask is 1; nearest upsampling to [H, W].
 * Returns [P, H, W].
 */
export function cloraMasks(
  maps: readonly Float32Array[],
  [h, w, L]: readonly [number, number, number],
  maskTokens: readonly (readonly number[])[],
  alpha: number,
  [H, W]: readonly [number, number],
  morphology: MaskMorphology = {},
): Float32Array {
  const P = maps.length;
  const small = maps.map((map, p) => {
    let m: Float32Array = new Float32Array(h * w);
    for (const tok of maskTokens[p]) {
      let max = Number.NEGATIVE_INFINITY;
      for (let i = 0; i < h * w; i++) max = Math.max(max, map[i * L + tok]);
      for (let i = 0; i < h * w; i++) if (map[i * L + tok] > max * alpha) m[i] = 1;
    }
    if (morphology.dilate) m = dilate(m, h, w);
    if (morphology.erode) m = erode(m, h, w);
    if (morphology.opening) m = dilate(erode(m, h, w), h, w);
    if (morphology.closing) m = erode(dilate(m, h, w), h, w);
    return m;
  });
  for (let i = 0; i < h * w; i++) if (small.every((m) => m[i] === 0)) small[0][i] = 1;
  const out = new Float32Array(P * H * W);
  for (let p = 0; p < P; p++)
    for (let y = 0; y < H; y++)
      for (let x = 0; x < W; x++) {
        // F.interpolate(mode="nearest"): source index floor(dst · in / out)
        out[(p * H + y) * W + x] = small[p][Math.floor((y * h) / H) * w + Math.floor((x * w) / W)];
      }
  return out;
}

/**
 * Σ_p m_p ε_p / Σ_p m_p for noises[p] [C, H, W] and masks [P, H, W] (broadcast over channels). Every position has a
 * nonzero Σ m_p: the background takes what no other mask covers.
 */
export function fuseNoise(noises: readonly Float32Array[], masks: Float32Array, C: number, HW: number): Float32Array {
  const out = new Float32Array(C * HW);
  for (let c = 0; c < C; c++)
    for (let i = 0; i < HW; i++) {
      let [num, den] = [0, 0];
      noises.forEach((e, p) => {
        const m = masks[p * HW + i];
        num += m * e[c * HW + i];
        den += m;
      });
      out[c * HW + i] = num / den;
    }
  return out;
}

/** The default layer choice: the maps at 1/4 of the latent, or the coarsest grid there is. */
function defaultLayers(unet: CondUNetSource): LayerSelection {
  const n = unet.config.block_out_channels.length;
  const want = Math.min(4, 2 ** (n - 1));
  return (l) => l.downscale === want;
}

/**
 * CLoRA over a sampler: `hook` updates the latent (call it first each step), `predictNoise` fuses the passes.
 * One latent image per row of the sampler's batch; each row is updated and fused on its own.
 */
export function clora(o: CloraOptions): Clora {
  const stepSize = o.stepSize ?? 20;
  const maxIter = o.maxIterToAlter ?? 30;
  const repeats = o.iterativeStepsSteps ?? 20;
  const iterative = new Set(o.iterativeSteps ?? []);
  const guidance = o.guidanceScale ?? 7.5;
  const alpha = o.maskThreshold ?? 0.3;
  const applyAfter = o.applyMaskAfter ?? 0;
  const graphs = new Map<string, Promise<Session>>(); // by purpose and latent shape
  let lastStep = Number.POSITIVE_INFINITY; // the last hook call's step; with neither it nor a step, masks apply
  let masks: Float32Array[] = [];
  let lastShape: readonly number[] | null = null; // the latent shape of the last hook call
  /** The shape of a latent passed without one: the hook's last, else one square image. */
  const shapeOf = (latent: Float32Array): readonly number[] =>
    lastShape && lastShape.reduce((a, b) => a * b, 1) === latent.length
      ? lastShape
      : [1, ...squareLatent(latent.length, o.unet.config.in_channels)];

  const session = (withGradient: boolean, latent: readonly [number, number, number]) => {
    const key = `${withGradient}:${latent.join('x')}`;
    let s = graphs.get(key);
    if (!s) {
      const opts: CloraGraphOptions = {
        unet: o.unet,
        passes: o.passes,
        latent,
        uncond: o.uncond,
        layers: o.layers ?? defaultLayers(o.unet),
        concepts: o.concepts,
        temperature: o.temperature ?? 0.5,
      };
      s = compile(buildCloraGraph(opts, withGradient), { worker: false });
      graphs.set(key, s);
    }
    return s;
  };
  const dims = (shape: readonly number[]) => {
    if (shape.length !== 4 || shape[1] !== o.unet.config.in_channels)
      throw new LorakitError(
        'LK_SHAPE_MISMATCH',
        `CLoRA: latent shape [${shape}] is not [N, ${o.unet.config.in_channels}, H, W] (the U-Net's in_channels)`,
      );
    return [shape[0], [shape[1], shape[2], shape[3]] as const] as const;
  };
  const feeds = (row: Float32Array, chw: readonly number[], timestep: number) => ({
    latent: { data: row, shape: [1, ...chw] },
    timestep: Float32Array.of(timestep),
  });

  const gradient = async (latent: Float32Array, timestep: number) => {
    const [, chw] = dims([1, ...shapeOf(latent).slice(1)]);
    const out = await (await session(true, chw)).run(feeds(latent, chw, timestep));
    return { loss: (out.loss.data as Float32Array)[0], grad: out.grad.data as Float32Array };
  };

  const hook: LatentHook = async ({ latent, shape, step, timestep }) => {
    lastStep = step;
    lastShape = shape;
    if (o.latentUpdate === false || step >= maxIter) return latent;
    const [n, chw] = dims(shape);
    const per = chw[0] * chw[1] * chw[2];
    const out = Float32Array.from(latent);
    const updates = 1 + (iterative.has(step) ? repeats : 0);
    for (let r = 0; r < n; r++) {
      const row = out.subarray(r * per, (r + 1) * per);
      for (let k = 0; k < updates; k++) {
        const s = await session(true, chw);
        const g = (await s.run(feeds(Float32Array.from(row), chw, timestep))).grad.data as Float32Array;
        for (let i = 0; i < per; i++) row[i] -= stepSize * g[i]; // z ← z − η·∇_z L
      }
    }
    return out;
  };

  const predictNoise: PredictNoise = async (latent, timestep, step) => {
    const at = step ?? lastStep;
    const C = o.unet.config.in_channels;
    const [n, chw] = dims(shapeOf(latent));
    const [, H, W] = chw;
    const per = C * H * W;
    const s = await session(false, chw);
    const eps = new Float32Array(latent.length);
    masks = [];
    for (let r = 0; r < n; r++) {
      const out = await s.run(feeds(latent.slice(r * per, (r + 1) * per), chw, timestep));
      const P = o.passes.length;
      const mapShape = out.map0.shape as [number, number, number];
      const m =
        at >= applyAfter
          ? cloraMasks(
              Array.from({ length: P }, (_, p) => out[`map${p}`].data as Float32Array),
              mapShape,
              o.passes.map((p) => p.maskTokens),
              alpha,
              [H, W],
              o.morphology,
            )
          : new Float32Array(P * H * W).fill(1);
      masks.push(m);
      const rows = (b: number) =>
        Array.from({ length: P }, (_, p) => (out[`noise${p}`].data as Float32Array).subarray(b * per, (b + 1) * per));
      let e: Float32Array;
      if (o.uncond) {
        const [u, c] = [fuseNoise(rows(0), m, C, H * W), fuseNoise(rows(1), m, C, H * W)];
        e = u.map((v, i) => v + guidance * (c[i] - v)); // ε_u + g·(ε_c − ε_u)
      } else e = fuseNoise(rows(0), m, C, H * W);
      eps.set(e, r * per);
    }
    return eps;
  };

  return {
    hook,
    predictNoise,
    gradient,
    lastMasks: () => masks,
    close: async () => {
      for (const s of graphs.values()) await (await s).dispose();
      graphs.clear();
    },
  };
}

/** [C, H, W] of one square latent image of `n` values (SD samples square latents). */
function squareLatent(n: number, C: number): [number, number, number] {
  const side = Math.round(Math.sqrt(n / C));
  if (side * side * C !== n)
    throw new LorakitError(
      'LK_SHAPE_MISMATCH',
      `CLoRA: ${n} latent values are not one square ${C}-channel latent; call the hook first (it passes the shape)`,
    );
  return [C, side, side];
}
