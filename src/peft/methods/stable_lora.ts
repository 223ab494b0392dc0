/**
 * Stable-LoRA — "Stable-LoRA: Stabilizing Feature Learning of Low-Rank Adaptation" (Wu, Gao, Li, Wu, ICLR 2026,
 * arXiv:2603.05204); code Yize-Wu/Stable-LoRA (stable_lora.py `StableLora`, example.py). No PEFT method: a LoRA variant
 * picked by the training-only field `stable_lora`, whose update rule is
 * the official optimizer (spec methods-b §9): a non-zero A₀ (needed so that B gets a gradient) breaks LoRA's
 * self-stabilising dynamics, so A is shrunk geometrically during the first steps, until its norm falls below a
 * B-relative threshold, and then never again. Per layer and optimizer step, from the values before the step:
 *   ρ = numel(A)/numel(B) (= in/out for a Linear);
 *   if ‖A‖_F < ρ·‖B‖_F: stopped ← true (for good, and this step does not shrink); otherwise, while not stopped,
 *   A ← (1 − λ)·A — not scaled by lr or the schedule;
 * then torch's AdamW on every trainable tensor of the layer (A shrunk), decoupled weight decay included.
 * The stop is a per-layer state (0 or 1) of the rule, computed in the step graph from the norms and checkpointed
 * with the moments, so a resumed run shrinks exactly as an uninterrupted one; no host work per step.
 * Differences from the code, by design: layers are paired by name (the code zips two parameter groups and needs A and
 * B in the same order); the rule's AdamW has its own betas and ε (the code's are the optimizer's, example 0.9, 0.999,
 * 1e-8, weight decay 0.01, lr 1e-4, λ = 5e-4), and lr, schedule and weight decay are the run's.
 * Not here: the train step (optim/step.ts); the per-layer AdamW and its slots (peft/adamw-rule.ts).
 */
import { z } from 'zod';
import type { Tensor } from '../../graph/index.ts';
import { adamwLayerStep, adamwState } from '../adamw-rule.ts';
import type { LayerInfo, LayerUpdateRule, MethodVariant, UpdateContext } from '../method.ts';
import { type LoraConfig, type LoraSettings, lora } from './lora.ts';

/** The `stable_lora` field: Stable-LoRA's settings (lr and weight decay are the run's). */
export const stableLoraOptions = z.strictObject({
  /** λ: A ← (1 − λ)·A per step while shrinking (the example's 5e-4). */
  shrink_ratio: z.number().min(0).lt(1).default(5e-4),
  /** AdamW's β1, β2 and ε (the example's). */
  betas: z.tuple([z.number().min(0).lt(1), z.number().min(0).lt(1)]).default([0.9, 0.999]),
  eps: z.number().positive().default(1e-8),
});

/** Stable-LoRA's settings with defaults filled. */
export type StableLoraOptions = z.output<typeof stableLoraOptions>;

/** A LoraConfig that may ask for Stable-LoRA. */
export type StableLoraConfig = LoraConfig & { stable_lora?: StableLoraOptions };

/** The per-layer stop flag: 0 while shrinking, 1 once ‖A‖ < ρ·‖B‖ was seen. */
export const STOPPED = 'stable_lora.stopped';

/** The layer's A and B specs, by role. */
function factors(layer: LayerInfo, s: LoraSettings, c: StableLoraConfig) {
  const specs = lora.params(layer, s, c);
  return { a: specs.find((p) => p.role === 'a')!, b: specs.find((p) => p.role === 'b')! };
}

const numel = (shape: readonly number[]) => shape.reduce((x, y) => x * y, 1);

/** The update rule: the shrink of A with its stop, then AdamW on every trainable tensor. */
const update: LayerUpdateRule<StableLoraConfig, LoraSettings> = {
  state: (layer, s, c) => [...adamwState('stable_lora', lora.params(layer, s, c)), { name: STOPPED, shape: [1] }],

  apply(ctx: UpdateContext<StableLoraConfig, LoraSettings>): {
    p: Record<string, Tensor>;
    state: Record<string, Tensor>;
  } {
    const o = ctx.config.stable_lora!;
    const { a, b } = factors(ctx.layer, ctx.settings, ctx.config);
    const rho = numel(a.shape) / numel(b.shape);
    const [A, B] = [ctx.p[a.name], ctx.p[b.name]];
    const frobenius = (t: Tensor) => t.mul(t).sum(undefined, false).sqrt(); // scalar
    const below = frobenius(A).less(frobenius(B).mul(rho)).cast('f32'); // ‖A‖ < ρ·‖B‖, as 0/1
    const stopped = ctx.state[STOPPED].maximum(below); // [1]: once 1, always 1
    const factor = stopped.neg().add(1).mul(-o.shrink_ratio).add(1); // 1 − λ·(1 − stopped) [1]
    // the shrink comes before AdamW's decay and step
    const r = adamwLayerStep(ctx, 'stable_lora', o, (name, param) =>
      name === a.name ? { param: param.mul(factor) } : {},
    );
    return { p: r.p, state: { [STOPPED]: stopped, ...r.state } };
  },
};

export const stableLora: MethodVariant<StableLoraConfig, LoraSettings> = {
  name: 'stable_lora',
  paper: 'Stable-LoRA: Stabilizing Feature Learning of Low-Rank Adaptation (arXiv:2603.05204)',
  of: ['lora'],
  applies: (c) => c.stable_lora != null,
  selectedBy: { stable_lora: {} },
  fields: {
    /** Stable-LoRA's optimizer (absent: plain LoRA with the run's optimizer). Training only: not saved. */
    stable_lora: stableLoraOptions.nullable().optional(),
  },
  trainingOnly: ['stable_lora'],
  update,
};
