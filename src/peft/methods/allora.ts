/**
 * ALLoRA — "ALLoRA: Adaptive Learning Rate Mitigates LoRA Fatal Flaws" (Huang, Balestriero, 2024, arXiv:2410.09692).
 * No official code was found (spec methods-b §8). A LoRA variant picked by the training-only field `allora`: LoRA
 * without dropout and without the α/r scale (s = 1), trained by AdamW with a per-row learning rate inversely
 * proportional to the row's ℓ2 norm, so B escapes 0 quickly (its rows start at norm 0: the largest rate, η·lr) and the
 * step self-limits as the factors grow. Forward, merge and the saved folder are plain LoRA's: the variant refuses a
 * config whose dropout or scale is not the paper's (lora_dropout 0, lora_alpha = r; PEFT's defaults r = α = 8 are),
 * rather than changing LoRA's forward, so the saved folder means the same in PEFT.
 *
 * For each trainable factor P (A [r, n], B [m, r], as stored) and each row i, from the values before the step:
 *   c_i = 1/√(‖P_i,:‖² + 1/η²)        (norm_squared false: 1/√(‖P_i,:‖ + 1/η²), the third-party optimizer's form)
 * and the row's AdamW step uses lr·c_i (apply_to 'update', the default: Adam's normalisation would largely cancel
 * a slowly varying factor on its input), or AdamW gets the gradient c_i·g (apply_to 'gradient': the abstract's
 * literal "scaling the per-parameter gradients"). granularity 'matrix' uses one c per factor (the Frobenius norm).
 * UNVERIFIED against the paper's text: the exact coefficient, η (2 here, the third-party default) and the placement;
 * all are options. The AdamW is torch's (decoupled weight decay at the row's rate), with the rule's own betas and ε.
 * Not here: the train step (optim/step.ts); the per-layer AdamW and its slots (peft/adamw-rule.ts).
 */
import { z } from 'zod';
import { LorakitError } from '../../errors.ts';
import type { Tensor } from '../../graph/index.ts';
import { adamwLayerStep, adamwState } from '../adamw-rule.ts';
import type { LayerUpdateRule, MethodVariant, UpdateContext } from '../method.ts';
import { type LoraConfig, type LoraSettings, lora } from './lora.ts';

/** The `allora` field: ALLoRA's settings (lr and weight decay are the run's). */
export const alloraOptions = z.strictObject({
  /** η: the largest rate multiplier, reached at a zero row (1/√(0 + 1/η²) = η). */
  eta: z.number().positive().default(2),
  /** Whether the row norm enters squared (true: c ~ 1/‖P_i‖ for large rows; false: c ~ 1/√‖P_i‖). */
  norm_squared: z.boolean().default(true),
  /** One coefficient per row, or one per factor. */
  granularity: z.enum(['row', 'matrix']).default('row'),
  /** Where c applies: the AdamW step's rate ('update'), or the gradient AdamW receives ('gradient'). */
  apply_to: z.enum(['update', 'gradient']).default('update'),
  /** AdamW's β1, β2 and ε (torch's defaults). */
  betas: z.tuple([z.number().min(0).lt(1), z.number().min(0).lt(1)]).default([0.9, 0.999]),
  eps: z.number().positive().default(1e-8),
});

/** ALLoRA's settings with defaults filled. */
export type AlloraOptions = z.output<typeof alloraOptions>;

/** A LoraConfig that may ask for ALLoRA. */
export type AlloraConfig = LoraConfig & { allora?: AlloraOptions };

/** The coefficient c of each row of `p` [d0, ...] ([d0, 1, ...]), or of the whole factor ([1, 1, ...]). */
export function rowCoefficient(p: Tensor, o: AlloraOptions): Tensor {
  const axes = p.shape.map((_, i) => i);
  const sq = p.mul(p).sum(o.granularity === 'row' ? axes.slice(1) : axes, true); // ‖P_i‖² (keepdims)
  const norm = o.norm_squared ? sq : sq.sqrt();
  return norm
    .add(1 / (o.eta * o.eta))
    .sqrt()
    .reciprocal();
}

/** The update rule: AdamW with per-row rates on every trainable tensor of the layer (A and B). */
const update: LayerUpdateRule<AlloraConfig, LoraSettings> = {
  state: (layer, s, c) => adamwState('allora', lora.params(layer, s, c)),

  apply(ctx: UpdateContext<AlloraConfig, LoraSettings>): { p: Record<string, Tensor>; state: Record<string, Tensor> } {
    const o = ctx.config.allora!;
    return adamwLayerStep(ctx, 'allora', o, (name, param) => {
      const c = rowCoefficient(param, o); // from the values before the step
      return o.apply_to === 'update'
        ? { lr: ctx.lr.mul(c) } // [d0, 1] per-row rates, or the scalar
        : { grad: ctx.g[name].mul(c) };
    });
  },
};

export const allora: MethodVariant<AlloraConfig, LoraSettings> = {
  name: 'allora',
  paper: 'ALLoRA: Adaptive Learning Rate Mitigates LoRA Fatal Flaws (arXiv:2410.09692)',
  of: ['lora'],
  applies: (c) => c.allora != null,
  selectedBy: { allora: {} },
  fields: {
    /** ALLoRA's optimizer (absent: plain LoRA with the run's optimizer). Training only: not saved. */
    allora: alloraOptions.nullable().optional(),
  },
  trainingOnly: ['allora'],

  check(c, source) {
    if (c.use_dora)
      throw new LorakitError(
        'LK_CONFIG_INVALID',
        `${source}: allora cannot be combined with use_dora = true (ALLoRA trains the plain LoRA factors A and B); ` +
          'set one of them',
        { field: 'allora' },
      );
    if (c.lora_dropout !== 0)
      throw new LorakitError(
        'LK_CONFIG_INVALID',
        `${source}: allora needs lora_dropout = 0 (ALLoRA removes dropout), got ${c.lora_dropout}`,
        { field: 'lora_dropout' },
      );
  },

  // The scale can differ per layer (rank_pattern, alpha_pattern), so it is checked per layer.
  checkLayer(layer, s, c, source) {
    if (s.scaling === 1) return;
    const want = c.use_rslora ? `√r = ${Math.sqrt(s.r)} (use_rslora)` : `r = ${s.r}`;
    throw new LorakitError(
      'LK_CONFIG_INVALID',
      `${source}: allora needs the LoRA scale to be 1 (ALLoRA removes the α/r factor), but layer ${layer.path} has ` +
        `lora_alpha ${s.alpha} and r ${s.r}, scale ${s.scaling}; set lora_alpha (or its alpha_pattern entry) to ${want}`,
      { field: 'lora_alpha' },
    );
  },

  update,
};
