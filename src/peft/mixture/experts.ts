/**
 * The expert stack of one targeted module, shared by ReMix and LoRA-Mixer: E LoRAs of rank r held as
 * A [E, r, in], B [E, out, r] and a linear router P [E, in]; their initial values (each A Kaiming-uniform as PEFT's
 * LoRA A, each B zero so the mixture starts at the base model, P Gaussian); the routed term
 * Σ_e w[n, e]·s·B_e·A_e·x_n as graph ops for any routing weights w; and the one-hot mask of a top-k selection.
 * Not here: how w is chosen (remix.ts, lora-mixer.ts), where the tensors live (model.ts).
 */
import type { Tensor } from '../../graph/index.ts';
import { kaimingUniformBound, Rng, seedFrom } from '../../linalg/index.ts';

/** Sizes of one module's stack. */
export interface StackDims {
  experts: number;
  r: number;
  in: number;
  out: number;
}

/** One module's expert tensors as graph tensors. */
export interface ExpertTensors {
  /** [E, r, in] */
  a: Tensor;
  /** [E, out, r] */
  b: Tensor;
  /** [E, in] */
  router: Tensor;
}

/** Tensor-name suffixes of a stack, in files and graphs (`<module path>.<suffix>`). */
export const STACK_TENSORS = ['experts_A', 'experts_B', 'router'] as const;

/** The shapes of a stack's tensors, by suffix. */
export function stackShapes(d: StackDims): Record<(typeof STACK_TENSORS)[number], number[]> {
  return { experts_A: [d.experts, d.r, d.in], experts_B: [d.experts, d.out, d.r], router: [d.experts, d.in] };
}

/** Initial values of a stack: A ~ U(±1/√in) per expert (PEFT's kaiming_uniform(a=√5)), B = 0, P ~ N(0, std²). */
export function initStack(d: StackDims, path: string, seed: number, routerStd: number): Record<string, Float32Array> {
  const rng = new Rng(seedFrom(seed, `mixture ${path}`));
  const bound = kaimingUniformBound(d.in);
  return {
    experts_A: rng.uniformArray(d.experts * d.r * d.in, -bound, bound),
    experts_B: new Float32Array(d.experts * d.out * d.r),
    router: rng.normalArray(d.experts * d.in, routerStd),
  };
}

/**
 * Σ_e w[n, e]·scale·B_e·(A_e·x_n) for rows x [N, in] and weights w [N, E], without forming any ΔW: all experts'
 * down-projections at once (x·[A_1; …; A_E]ᵀ, [N, E·r]), each expert's r columns weighted by its w, then one
 * up-projection by [B_1 … B_E] (the gradient of every expert and of w follows from the product rule through these
 * three products). An expert with weight 0 contributes nothing and gets no gradient.
 */
export function expertTerm(x: Tensor, w: Tensor, t: ExpertTensors, d: StackDims, scale: number): Tensor {
  const { experts: E, r } = d;
  const aAll = t.a.reshape([E * r, d.in]); // [E·r, in]
  const bAll = t.b.transpose([0, 2, 1]).reshape([E * r, d.out]); // [E·r, out]
  const u = x.matmul(aAll.T).reshape([-1, E, r]); // [N, E, r]
  const weighted = u.mul(w.unsqueeze(-1)).reshape([-1, E * r]); // [N, E·r]
  return weighted.matmul(bAll).mul(scale); // [N, out]
}

/** The [N, E] 0/1 mask of indices [N, k] (each row's k distinct experts), in dtype `like`'s. */
export function selectionMask(indices: Tensor, experts: number, like: Tensor): Tensor {
  const g = indices.graph;
  const ids = g.range(0, experts, 1, 'i64'); // [E]
  return indices.unsqueeze(-1).equal(ids).cast(like.dtype).sum(1); // [N, k, E] → [N, E]
}

/** log softmax over the last axis of [N, E] logits, stable (the max is subtracted without gradient). */
export function logSoftmax(logits: Tensor): Tensor {
  const m = logits.max(-1, true).detach(); // [N, 1]
  const shifted = logits.sub(m); // [N, E]
  return shifted.sub(shifted.exp().sum(-1, true).log()); // [N, E]
}
