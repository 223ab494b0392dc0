// SGD with momentum, PyTorch's semantics (dampening 0): g ← g + wd·p; b ← μ·b + g; p ← p − lr·(nesterov ? g + μ·b : b).
import { check } from '../errors.ts';
import type { Optimizer } from './optimizer.ts';

export interface SgdOptions {
  momentum?: number;
  nesterov?: boolean;
}

/** Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay. */
export function sgd({ momentum = 0, nesterov = false }: SgdOptions = {}): Optimizer {
  check(momentum >= 0 && momentum < 1, 'LK_INVALID_ARGUMENT', `sgd: momentum must be in [0, 1), got ${momentum}`);
  check(!nesterov || momentum > 0, 'LK_INVALID_ARGUMENT', 'sgd: nesterov needs momentum > 0');
  return {
    name: 'sgd',
    stateSlots: momentum ? ['momentum'] : [],
    elementwise: true,
    settings: { momentum, nesterov },
    update({ param, grad, state, lr, weightDecay }) {
      const g = weightDecay ? grad.add(param.mul(weightDecay)) : grad;
      if (!momentum) return { param: param.sub(g.mul(lr)), state: [] };
      const b = state[0].mul(momentum).add(g);
      const dir = nesterov ? g.add(b.mul(momentum)) : b;
      return { param: param.sub(dir.mul(lr)), state: [b] };
    },
  };
}
