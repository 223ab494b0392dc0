// AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", arXiv:1711.05101) as PyTorch's single-tensor
// implementation computes it, op for op: p ← p·(1 − lr·wd); m ← m + (1−β1)·(g − m) (lerp); v ← β2·v + (1−β2)·g·g;
// p ← p − (lr/(1−β1^t))·m/(√v/√(1−β2^t) + ε). The scalars in parentheses are Python floats in torch: they are
// computed on the host in float64 and fed once per step (in float32 inside the graph, 1 − β2^t loses its low digits:
// −6.7e-6 relative at β2 0.999, +8.3e-5 at 0.9999).
import { check } from '../errors.ts';
import type { Tensor } from '../graph/index.ts';
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
    elementwise: true,
    settings: { beta1, beta2, eps },
    scalars: ({ step, lr, weightDecay }) => ({
      decay: 1 - lr * weightDecay,
      step_size: lr / (1 - beta1 ** step),
      bc2_sqrt: Math.sqrt(1 - beta2 ** step),
    }),
    update({ param, grad, state: [m, v], weightDecay, scalars }) {
      const p0 = weightDecay ? param.mul(scalars.decay) : param;
      const m1 = m.add(grad.sub(m).mul(1 - beta1)); // torch's lerp_ for weights below 0.5
      const v1 = v.mul(beta2).add(grad.mul(1 - beta2).mul(grad)); // addcmul_: value·t1·t2, left to right
      const denom = v1.sqrt().div(scalars.bc2_sqrt).add(eps);
      const p1 = p0.add(m1.mul(scalars.step_size.neg()).div(denom)); // addcdiv_: (value·m)/denom, as its CPU kernel
      return { param: p1, state: [m1, v1] };
    },
  };
}

/**
 * One AdamW step (the same ops as `adamw`) for a method's update rule, whose step size is a graph value: `lr` is a
 * tensor broadcasting against the parameter (ALLoRA's per-row rates, a scheduled lr), and the bias corrections are
 * computed in the graph from `step` (f32 rounding of 1 − β2^t: −6.7e-6 relative at β2 0.999, step 1).
 */
export function adamwStep(
  o: AdamWOptions,
  x: { param: Tensor; grad: Tensor; m: Tensor; v: Tensor; lr: Tensor; step: Tensor; weightDecay: number },
): { param: Tensor; m: Tensor; v: Tensor } {
  const opt = adamw(o);
  const [beta1, beta2] = [opt.settings!.beta1 as number, opt.settings!.beta2 as number];
  const { step, lr } = x;
  const scalars = {
    decay: lr.mul(x.weightDecay).neg().add(1), // 1 − lr·wd
    step_size: lr.div(step.lift(1).sub(step.lift(beta1).pow(step))), // lr/(1 − β1^t)
    bc2_sqrt: step.lift(1).sub(step.lift(beta2).pow(step)).sqrt(), // √(1 − β2^t)
  };
  const r = opt.update({ ...x, state: [x.m, x.v], scalars });
  return { param: r.param, m: r.state[0], v: r.state[1] };
}
