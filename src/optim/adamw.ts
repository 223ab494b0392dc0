// AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", arXiv:1711.05101), PyTorch's semantics:
// p ← p·(1 − lr·wd); m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²; p ← p − lr·m̂/(√v̂ + ε), m̂ = m/(1−β1^t), v̂ =
// v/(1−β2^t).
import { check } from '../errors.ts';
import type { Optimizer } from './optimizer.ts';

export interface AdamWOptions {
  beta1?: number;
  beta2?: number;
  eps?: number;
}

/** AdamW with bias correction and decoupled weight decay. */
export function adamw({ beta1 = 0.9, beta2 = 0.999, eps = 1e-8 }: AdamWOptions = {}): Optimizer {
  check(beta1 >= 0 && beta1 < 1, 'LK_INVALID_ARGUMENT', `adamw: beta1 must be in [0, 1), got ${beta1}`);
  check(beta2 >= 0 && beta2 < 1, 'LK_INVALID_ARGUMENT', `adamw: beta2 must be in [0, 1), got ${beta2}`);
  check(eps > 0, 'LK_INVALID_ARGUMENT', `adamw: eps must be > 0, got ${eps}`);
  return {
    name: 'adamw',
    stateSlots: ['m', 'v'],
    update({ param, grad, state: [m, v], lr, step, weightDecay }) {
      const p0 = weightDecay ? param.sub(param.mul(lr.mul(weightDecay))) : param;
      const m1 = m.mul(beta1).add(grad.mul(1 - beta1));
      const v1 = v.mul(beta2).add(grad.mul(grad).mul(1 - beta2));
      const bc1 = lr.lift(1).sub(lr.lift(beta1).pow(step)); // 1 − β1^t
      const bc2 = lr.lift(1).sub(lr.lift(beta2).pow(step));
      const denom = v1.div(bc2).sqrt().add(eps);
      const p1 = p0.sub(m1.div(bc1).div(denom).mul(lr));
      return { param: p1, state: [m1, v1] };
    },
  };
}
