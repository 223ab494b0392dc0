/**
 * MatryoshkaLoRA — Modoranu, Safaryan & Alistarh (arXiv:2605.07850); official code IST-DASLab/MatryoshkaLoRA
 * (`adapters/matryoshka.py`, Algorithm 1). A LoRA variant picked by the training-only field `matryoshka` that trains
 * every nested truncation B[:, :t]·A[:t, :], t ∈ S, in one forward, through a fixed diagonal P between the factors
 * (spec methods-a §12):
 *   training:  y = base(x) + ((x̃·Aᵀ) ⊙ P)·Bᵀ,   P_i = Σ_{t ∈ S, t ≥ i} s(t)   (i = 1..r)
 *              = base(x) + Σ_{t ∈ S} s(t)·B[:, :t]·A[:t, :]·x̃      ("binary" masks: the same sum divided by |S|)
 *   otherwise: y = base(x) + s(t)·B[:, :t]·A[:t, :]·x̃ at `inference_rank` t (default r); it merges there.
 * s(t) is LoRA's scaling at rank t: α/t, or α/√t with use_rslora. The official code has no α: its `lora_scaling`
 * "rank" (1/t) is lora_alpha 1 here and "sqrt" (1/√t, the paper's runs) lora_alpha 1 with use_rslora; its default
 * "none" (s(t) = 1 for every t) is not offered, because a PEFT LoRA truncated to rank t scales by α/t: with this law
 * the saved folder is a plain rank-r LoRA whose truncations (`saveTruncated`, `lorakit eval --ranks`) are exactly the
 * nested adapters trained, with the same lora_alpha.
 * S (`train_ranks`) defaults to the powers of two below r and r; ranks above r are dropped (as the official config
 * does) and r must be in S (the spec's pitfall: components above max S would get P = 0 and never train). P is fed
 * as a model-level step input (the same every step), so the forward is one graph for training and inference.
 * Init as the official LoraLayer, whose A is stored [in, r]: kaiming_uniform_(a = √5) there has fan-in r, so
 * A ~ U(±1/√r), not LoRA's U(±1/√in); B = 0. The official checkpoints are torch pickles of `lora_A` [in, r] and
 * `lora_B` [r, out]; lorakit saves the PEFT layout (lora_A.weight = their lora_Aᵀ, lora_B.weight = their lora_Bᵀ).
 * Not here: the factors and their saving (lora.ts), truncation (truncate.ts), AURAC (train/text-eval.ts).
 */
import { z } from 'zod';
import { LorakitError } from '../../errors.ts';
import { kaimingUniformBound } from '../../linalg/index.ts';
import type { MethodVariant, StepInputSpec } from '../method.ts';
import { truncateFactors } from './dylora.ts';
import { type LoraConfig, type LoraSettings, lora } from './lora.ts';

/** The `matryoshka` field. */
const matryoshkaField = z
  .strictObject({
    /** S: the nested ranks trained together (default: powers of two below r, and r). */
    train_ranks: z.array(z.number().int().positive()).min(1).optional(),
    /** "diag": P as in Algorithm 1 (official default for the paper); "binary": the sum of masked LoRAs over |S|. */
    mask_type: z.enum(['diag', 'binary']).default('diag'),
    /** The rank evaluation, generation and merges use; default r. */
    inference_rank: z.number().int().positive().optional(),
  })
  .optional();

/** A LoraConfig with the matryoshka field. */
export type MatryoshkaConfig = LoraConfig & { matryoshka?: z.output<typeof matryoshkaField> };

/**
 * The step inputs: a model-level [r] weight per component — P/α while training, the 0/1 mask of the inference rank
 * otherwise — and per layer the scalar it multiplies the term by — α while training, s(t) otherwise —, so that at the
 * inference rank the term is computed as LoRA computes it, (x̃·Aᵀ·Bᵀ)·s, bit for bit.
 */
const WEIGHTS = 'matryoshka_weights',
  SCALE = 'matryoshka_scale';

/** S, sorted, without ranks above r. */
export function trainRanks(c: MatryoshkaConfig): number[] {
  const given = c.matryoshka?.train_ranks;
  const all = given ?? [...Array.from({ length: Math.ceil(Math.log2(c.r)) }, (_, i) => 2 ** i), c.r];
  return [...new Set(all.filter((t) => t <= c.r))].sort((a, b) => a - b);
}

/** s(t) = α/t, or α/√t with rsLoRA (LoRA's scaling law at rank t, computed as LoRA computes its scaling). */
const scaleAt = (c: MatryoshkaConfig, alpha: number, t: number) => (c.use_rslora ? alpha / Math.sqrt(t) : alpha / t);

/**
 * P/α of Algorithm 1 [r]: component i (0-based) gets Σ s(t)/α over the training ranks t > i; with "binary" masks
 * divided by |S|.
 */
export function matryoshkaWeights(c: MatryoshkaConfig): Float32Array {
  const S = trainRanks(c);
  const div = c.matryoshka!.mask_type === 'binary' ? S.length : 1;
  return Float32Array.from(
    { length: c.r },
    (_, i) => S.filter((t) => t > i).reduce((p, t) => p + scaleAt(c, 1, t), 0) / div,
  );
}

const inferenceRank = (c: MatryoshkaConfig) => c.matryoshka!.inference_rank ?? c.r;

export const matryoshka: MethodVariant<MatryoshkaConfig, LoraSettings> = {
  name: 'matryoshka',
  paper: 'MatryoshkaLoRA (arXiv:2605.07850)',
  of: ['lora'],
  applies: (c) => c.matryoshka !== undefined,
  selectedBy: { matryoshka: {} },
  fields: { matryoshka: matryoshkaField },
  trainingOnly: ['matryoshka'],
  layers: ['linear', 'conv1d'],

  check(c, source) {
    const bad = (field: string, msg: string) =>
      new LorakitError('LK_CONFIG_INVALID', `${source}: matryoshka.${field} ${msg}`, { field: `matryoshka.${field}` });
    const S = trainRanks(c);
    if (!S.includes(c.r)) {
      throw bad(
        'train_ranks',
        `${JSON.stringify(c.matryoshka!.train_ranks)} leaves out r = ${c.r}: components above ${Math.max(0, ...S)} ` +
          `would get no weight and never train; add ${c.r}`,
      );
    }
    if (inferenceRank(c) > c.r) throw bad('inference_rank', `= ${inferenceRank(c)} exceeds r = ${c.r}`);
    if (Object.keys(c.rank_pattern).length) {
      throw new LorakitError(
        'LK_UNSUPPORTED',
        `${source}: matryoshka nests the same ranks in every layer, so every layer needs the same r; remove ` +
          'rank_pattern',
        { field: 'rank_pattern' },
      );
    }
  },

  stepInputs: (c, layers): StepInputSpec<MatryoshkaConfig>[] => [
    {
      name: WEIGHTS,
      layer: null,
      dtype: 'f32',
      shape: [c.r],
      train: ({ config }) => matryoshkaWeights(config),
      infer: (config) => Float32Array.from({ length: config.r }, (_, i) => (i < inferenceRank(config) ? 1 : 0)),
    },
    ...layers.map(
      ({ layer, settings: s }): StepInputSpec<MatryoshkaConfig> => ({
        name: SCALE,
        layer: layer.path,
        dtype: 'f32',
        shape: [],
        train: () => Float32Array.of(s.alpha),
        infer: (config) => Float32Array.of(scaleAt(config, s.alpha, inferenceRank(config))),
      }),
    ),
  ],

  // the official A is [in, r]: Kaiming's fan-in is r there
  async init({ layer, settings: s, rng }) {
    const b = kaimingUniformBound(s.r);
    return { values: { 'lora_A.weight': rng.uniformArray(s.r * layer.inFeatures, -b, b) } };
  },

  forward(ctx) {
    const { settings: s, p, inputs } = ctx;
    const h = ctx.dropout(ctx.x, s.dropout).matmul(p['lora_A.weight'].T); // [.., r]
    const t = h.mul(inputs[WEIGHTS]).matmul(p['lora_B.weight'].T); // [.., r] ⊙ [r] · [r, out]
    return ctx.y.add(t.mul(inputs[SCALE]));
  },

  // s(t)·B[:, :t]·A[:t, :] at the inference rank: LoRA's ΔW of the truncated factors
  delta(v) {
    const t = inferenceRank(v.config);
    const f = truncateFactors(v.p['lora_A.weight'], v.p['lora_B.weight'], v.settings.r, t);
    const settings = { ...v.settings, r: t, scaling: scaleAt(v.config, v.settings.alpha, t) };
    return lora.delta!({ ...v, settings, p: { 'lora_A.weight': f.a, 'lora_B.weight': f.b } });
  },
};
