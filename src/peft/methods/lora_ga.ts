/**
 * LoRA-GA — "LoRA-GA: Low-Rank Adaptation with Gradient Approximation" (Wang, Yu & Li, NeurIPS 2024,
 * arXiv:2407.05000); in PEFT (≥ 0.19) a LoRA initialisation, `init_lora_weights: "lora_ga"` with a `lora_ga_config`
 * sub-object (peft/tuners/lora/layer.py `lora_ga_init`, loraga.py `preprocess_loraga`). The adapter starts from the
 * singular vectors of the full-weight gradient G = ∂L/∂W0 on calibration batches, so that the first steps move W
 * along the best low-rank approximation of a full fine-tuning step, and the frozen weight absorbs the initial product
 * (spec methods-b §2):
 *   G ≈ U·diag(S)·Vᵀ   (torch.svd_lowrank's algorithm, q = min(4r, out, in), 4 power iterations),
 *   A = Vᵀ[a, :] [r, in],  B = U[:, b]·diag(S[b]) [out, r],   a, b ⊂ 0..2r−1 by `direction`,
 *   then `scale`, and W_res = W0 − s·B·A from the float32 A and B, so the output is unchanged at init.
 * G is the platform's calibration gradient (train/calibrate.ts: the token-weighted mean gradient of the causal-LM
 * loss over the first `lora_ga_batches` training batches). Training is plain LoRA on W_res; saveAdapter's
 * convertToBase writes the rank-2r LoRA [B | −B0]·[A; A0] of the untouched base (lora.ts).
 *
 * This is PEFT's lora_ga, which departs from the authors' code (spec §2 "Pitfalls"): B carries the singular values
 * S[b] and `stable` scales B only (the authors scale A and B by m^¼/√γ and drop S); `random` gives A and B the same
 * r components (the spec: complementary halves). Kept for compatibility, as PEFT does: `stable`'s m is the stored
 * weight's first dimension, which for GPT-2's Conv1D ([in, out]) is in_features, not out_features. PEFT draws the
 * sketch and the `random` permutation from torch's global stream; lorakit draws them from the layer's seeded
 * generator, so where the gradient's rank exceeds q the factors equal PEFT's only as closely as either equals the
 * exact SVD's.
 * Not here: computing G (train/calibrate.ts), the decompositions (linalg/), holding and saving the replaced weight
 * (model.ts, format.ts).
 */
import { z } from 'zod';
import { LorakitError } from '../../errors.ts';
import { type Rng, svdLowrank } from '../../linalg/index.ts';
import { matrixDims, toMatrix } from '../layers.ts';
import { residualWeight } from '../residual.ts';
import type { LayerInfo, MethodVariant } from '../method.ts';
import type { LoraConfig, LoraSettings } from './lora.ts';

/** PEFT's LoraGAConfig (peft/tuners/lora/config.py), field for field, with its defaults. */
const loraGaConfigField = z
  .strictObject({
    /** Which of the first 2r gradient components go to A and to B (table in spec §2; PEFT's names). */
    direction: z.enum(['ArBr', 'A2rBr', 'ArB2r', 'random']).default('ArB2r'),
    /** stable: B·m^¼/√γ; weight_svd: B·σ₁(W0)/S_B[0]; gd_scale: A/s and B/s; unit: unchanged. */
    scale: z.enum(['stable', 'weight_svd', 'gd_scale', 'unit']).default('stable'),
    /** γ of the stable scale. */
    stable_gamma: z.number().positive().default(16),
  })
  .nullable()
  .optional();

/** A LoraConfig with LoRA-GA's fields. */
export type LoraGaConfig = LoraConfig & {
  lora_ga_config?: z.output<typeof loraGaConfigField>;
  lora_ga_batches?: number;
};

/** Calibration batches when lora_ga_batches is not given: the authors' PEFT-fork default (iters 64, spec §2). */
export const DEFAULT_LORA_GA_BATCHES = 64;

/** The gradient components [r, in] rows of A and [out, r] columns of B take, by PEFT's direction. */
function components(direction: string, r: number, rng: Rng): { a: number[]; b: number[] } {
  const range = (n: number, f: (j: number) => number) => Array.from({ length: n }, (_, j) => f(j));
  if (direction === 'ArB2r') return { a: range(r, (j) => j), b: range(r, (j) => r + j) };
  if (direction === 'A2rBr') return { a: range(r, (j) => r + j), b: range(r, (j) => j) };
  if (direction === 'ArBr') return { a: range(r, (j) => 2 * j + 1), b: range(r, (j) => 2 * j) };
  // random: r of the 2r components, the same ones for A and B (torch.randperm(2r)[:r] in PEFT)
  const perm = range(2 * r, (j) => j);
  for (let j = 2 * r - 1; j > 0; j--) {
    const k = Math.floor(rng.next() * (j + 1));
    [perm[j], perm[k]] = [perm[k], perm[j]];
  }
  return { a: perm.slice(0, r), b: perm.slice(0, r) };
}

/** The largest singular value of W0 as PEFT's weight_svd scale estimates it (svd_lowrank(W, q=r, niter=4)). */
async function topSingularValue(layer: LayerInfo, w: Float32Array, r: number, rng: Rng): Promise<number> {
  const [o, i] = matrixDims(layer);
  return (await svdLowrank(w, o, i, { q: r, niter: 4, rng })).s[0];
}

export const loraGa: MethodVariant<LoraGaConfig, LoraSettings> = {
  name: 'lora_ga',
  paper: 'LoRA-GA: Low-Rank Adaptation with Gradient Approximation (arXiv:2407.05000)',
  of: ['lora'],
  applies: (c) => c.init_lora_weights === 'lora_ga',
  selectedBy: { init_lora_weights: 'lora_ga', lora_ga_config: {} },
  claims: { field: 'init_lora_weights', describe: '"lora_ga" (with lora_ga_config)' },
  fields: {
    lora_ga_config: loraGaConfigField,
    /** lorakit's: how many training batches the calibration gradient averages (PEFT leaves it to train_step). */
    lora_ga_batches: z.number().int().positive().optional(),
  },
  trainingOnly: ['lora_ga_batches'],
  // PEFT estimates gradients of nn.Linear and Conv1D weights only (loraga.py get_target_modules)
  layers: ['linear', 'conv1d'],

  check(c, source) {
    if (!c.lora_ga_config) {
      throw new LorakitError(
        'LK_CONFIG_INVALID',
        `${source}: init_lora_weights "lora_ga" needs lora_ga_config (as in PEFT); give {} for PEFT's defaults ` +
          '{direction: "ArB2r", scale: "stable", stable_gamma: 16}',
        { field: 'lora_ga_config' },
      );
    }
  },

  // A and B take 2r distinct singular components of G, which has min(out, in)
  checkLayer(layer, s, _c, source) {
    const [o, i] = matrixDims(layer);
    if (2 * s.r > Math.min(o, i)) {
      throw new LorakitError(
        'LK_CONFIG_INVALID',
        `${source}: lora_ga needs 2r ≤ min(out, in) for ${layer.path}, whose weight is [${o}, ${i}] as an ` +
          `[out, in] matrix, but r = ${s.r} (A and B take 2r singular components of its gradient); lower r or ` +
          'give the layer a smaller rank in rank_pattern',
        { field: 'r', layer: layer.path },
      );
    }
  },

  calibration: (c) => ({ batches: c.lora_ga_batches ?? DEFAULT_LORA_GA_BATCHES }),

  async init({ layer, settings: s, config: c, rng, readBase, calibrationGrad }) {
    if (!calibrationGrad) throw new Error(`internal: lora_ga on ${layer.path} got no calibration gradient`);
    const { direction, scale, stable_gamma: gamma } = c.lora_ga_config!;
    const [o, i] = matrixDims(layer);
    const r = s.r;
    const g = toMatrix(layer, calibrationGrad); // [out, in]
    // u [out, k], sv [k] descending, v [in, k] (V, not Vᵀ), k = q
    const { u, s: sv, v, k } = await svdLowrank(g, o, i, { q: Math.min(4 * r, o, i), niter: 4, rng });
    const pick = components(direction, r, rng);
    const a = new Float32Array(r * i);
    const b = new Float32Array(o * r);
    for (let j = 0; j < r; j++) {
      const [ca, cb] = [pick.a[j], pick.b[j]];
      for (let col = 0; col < i; col++) a[j * i + col] = v[col * k + ca]; // A[j] = Vᵀ[ca]
      for (let row = 0; row < o; row++) b[row * r + j] = u[row * k + cb] * sv[cb]; // B[:, j] = U[:, cb]·S[cb]
    }
    const w = toMatrix(layer, await readBase()); // [out, in]
    let [fa, fb] = [1, 1];
    if (scale === 'stable')
      fb = layer.weightShape[0] ** 0.25 / Math.sqrt(gamma); // PEFT's weight.shape[0]
    else if (scale === 'gd_scale') [fa, fb] = [1 / s.scaling, 1 / s.scaling];
    else if (scale === 'weight_svd' && sv[pick.b[0]] > 0)
      fb = (await topSingularValue(layer, w, r, rng)) / sv[pick.b[0]];
    for (let t = 0; t < a.length; t++) a[t] *= fa;
    for (let t = 0; t < b.length; t++) b[t] *= fb;
    return {
      values: { 'lora_A.weight': a, 'lora_B.weight': b },
      base: residualWeight(layer, w, a, b, r, s.scaling),
    };
  },
};
