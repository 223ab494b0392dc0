/**
 * Mask the Target — a regulariser against forgetting (arXiv:2605.29498; ../shared/spec/methods-b-init-optim-compress.md
 * §10). A variant of every method (`mask_target: {lambda, direction}`): the training loss gains λ·R, where R is the
 * mean over counted positions of a KL divergence between the frozen model's and the adapted model's next-token
 * distributions with the target token removed and the rest renormalised: q̃(v) = p(v)/(1 − p(y)) for v ≠ y. The
 * cross-entropy keeps learning the target while R keeps the base model's ranking of the alternatives.
 * Only the abstract was read: the KL direction and λ are unverified, so both are settings — `direction: 'fwd'`
 * is KL(q̃_0 ‖ q̃_θ) (base as teacher, the default), `'rev'` is KL(q̃_θ ‖ q̃_0); λ defaults to 0.3 (the spec's middle
 * of {0.1, 0.3, 1}). Temperature 1. Training-only: the adapter it trains saves and loads as its method's.
 * Not here: the frozen model's logits (built by the task's loss builder, train/loss.ts), adding the term (same).
 */
import { z } from 'zod';
import { logSoftmax, type Tensor } from '../../graph/index.ts';
import type { LossTermContext, MethodVariant } from '../method.ts';

/** The `mask_target` config field. */
const maskTargetField = z
  .strictObject({
    /** Weight λ of the term in the loss (unverified in the paper; the spec sweeps 0.1, 0.3, 1). */
    lambda: z.number().nonnegative().default(0.3),
    /** fwd: KL(q̃_base ‖ q̃_adapted); rev: KL(q̃_adapted ‖ q̃_base) (unverified in the paper). */
    direction: z.enum(['fwd', 'rev']).default('fwd'),
  })
  .optional();

/** A config with the mask_target field. */
export type MaskTargetConfig = { mask_target?: z.output<typeof maskTargetField>; [k: string]: unknown };

/**
 * R = mean over counted positions of KL between the target-masked, renormalised distributions of `frozen` and
 * `logits` ([N, V] each; `targets` [N] i64, `counted` [N] bool). log q̃ = logSoftmax(Where(onehot(y), −∞, z)), so
 * log q̃(v) = z_v − logsumexp_{u≠y} z_u does not depend on z_y: ∂R/∂z[y] = 0.
 */
export function maskedKl(
  logits: Tensor,
  frozen: Tensor,
  targets: Tensor,
  counted: Tensor,
  direction: 'fwd' | 'rev',
): Tensor {
  const V = logits.shape[1];
  if (typeof V !== 'number') throw new Error(`internal: mask_target needs a static vocabulary size, got ${logits}`);
  const g = logits.graph;
  const target = g.range(0, V).equal(targets.unsqueeze(1)); // [N, V] bool: one-hot of y (none for -100)
  // the target's log q̃ is −∞; those entries are set to 0 before any product, so no 0·∞ reaches value or gradient
  const logQ = (z: Tensor) => target.where(0, logSoftmax(target.where(-Infinity, z))); // [N, V]
  const [lq0, lqT] = [logQ(frozen), logQ(logits)];
  const [lp, lq] = direction === 'fwd' ? [lq0, lqT] : [lqT, lq0]; // KL(p ‖ q) = Σ_v p(v)·(log p(v) − log q(v))
  const p = target.where(0, lp.exp()); // [N, V]: the renormalised distribution, 0 at the target
  const kl = p.mul(lp.sub(lq)).sum(1); // [N]
  const w = counted.cast(logits.dtype); // [N]
  return kl.mul(w).sum().div(w.sum().maximum(1));
}

export const maskTarget: MethodVariant<MaskTargetConfig> = {
  name: 'mask_target',
  paper: 'Mask the Target: non-target KL regularisation against forgetting (arXiv:2605.29498)',
  of: '*',
  applies: (c) => c.mask_target !== undefined,
  selectedBy: { mask_target: {} },
  fields: { mask_target: maskTargetField },
  trainingOnly: ['mask_target'],

  lossTerms: (c) => [
    {
      name: 'mask_target',
      // λ·R; the frozen logits carry no gradient (the loss builder detaches them)
      build: (ctx: LossTermContext<MaskTargetConfig>) =>
        maskedKl(ctx.logits, ctx.frozenLogits(), ctx.targets, ctx.counted, c.mask_target!.direction).mul(
          c.mask_target!.lambda,
        ),
    },
  ],
};
