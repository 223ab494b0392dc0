// Global-norm gradient clipping (PyTorch's clip_grad_norm_): scale every gradient by min(1, max/(‖g‖ + 1e-6)).
import type { Tensor } from '../graph/index.ts';

/** The global L2 norm of all gradients, as a scalar tensor. */
export function globalNorm(grads: readonly Tensor[]): Tensor {
  const sq = grads.map((g) => g.mul(g).sum());
  return sq.reduce((a, b) => a.add(b)).sqrt();
}

/** The factor min(1, maxNorm/(norm + 1e-6)) that scales gradients of global norm `norm` to at most `maxNorm`. */
export function clipScale(norm: Tensor, maxNorm: number): Tensor {
  return norm.add(1e-6).reciprocal().mul(maxNorm).minimum(1).detach();
}

/** Gradients scaled so that their global norm is at most `maxNorm`; also returns the norm before clipping. */
export function clipByGlobalNorm(grads: readonly Tensor[], maxNorm: number): { grads: Tensor[]; norm: Tensor } {
  const norm = globalNorm(grads);
  const scale = clipScale(norm, maxNorm);
  return { grads: grads.map((g) => g.mul(scale)), norm };
}
