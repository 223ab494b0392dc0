/**
 * LoRA-Mixer's routing as graph ops (arXiv 2507.00029; no official code was released, spec §6 marks the details
 * [NOTE]/[RECON]): E LoRA experts on each attention projection, routed per token.
 * - Stage 1, hard routing by domain: every token of a sample goes to its domain's expert; the weights are a fed
 *   one-hot row per sequence, the router does not train.
 * - Stage 2, soft top-k: p = softmax(R·x); the forward keeps the top-K of p renormalised, w = p·m/Σ(p·m), with the
 *   mask m a constant, so the router's gradient is the softmax's through the kept probabilities (the spec's
 *   "hard–soft top-k": a hard mask forward, soft probabilities for the gradient).
 * - The routing specialisation loss RSL = α·Σ_i p̄_i·f̄_i ± λ·H̄: p̄ the mean router probability, f̄_i the fraction of
 *   the N·K routing slots given to expert i, H̄ the mean per-token entropy. The paper's printed −λ·H maximises entropy
 *   while its text says the term makes routing peaky and input-specific; lorakit's default is '+' (entropy
 *   penalised, the stated intent; the balance term already pulls towards uniform load), '-' gives the formula as
 *   printed (config.ts: entropy_sign).
 * Not here: the stages' schedule (demo/mixture.ts), the expert product (experts.ts).
 */
import type { Tensor } from '../../graph/index.ts';
import { selectionMask } from './experts.ts';

/** What LoRA-Mixer's soft top-k routing gives for rows x [N, in]. */
export interface MixerRoute {
  /** [N, E]: renormalised top-K probabilities (0 off the top-K). */
  weights: Tensor;
  /** [N, E] router probabilities. */
  p: Tensor;
  /** [N, E] 0/1 top-K mask (constant). */
  mask: Tensor;
}

/** Soft top-K routing of rows x [N, in] with router R [E, in]. */
export function mixerRoute(x: Tensor, router: Tensor, k: number): MixerRoute {
  const E = router.shape[0] as number;
  const p = x.matmul(router.T).softmax(-1); // [N, E]
  const [, indices] = p.detach().topk(k, -1); // [N, k]
  const mask = selectionMask(indices, E, x); // [N, E]
  const kept = p.mul(mask); // [N, E]
  return { weights: kept.div(kept.sum(-1, true)), p, mask };
}

/** The settings of the specialisation loss. */
export interface RslSettings {
  alpha: number;
  lambda: number;
  entropySign: '+' | '-';
  topK: number;
}

/** The parts of one layer's RSL, as scalars. */
export interface RslParts {
  /** Σ_i p̄_i·f̄_i. */
  balance: Tensor;
  /** Mean per-token entropy of p (nats). */
  entropy: Tensor;
  /** α·balance ± λ·entropy. */
  value: Tensor;
}

/**
 * RSL of one routed layer from p [N, E] and the mask [N, E]. ∂/∂p_n,i of the balance is α·f̄_i/N (f̄ constant), of
 * ±λ·H̄ it is ∓λ(log p_n,i + 1)/N.
 */
export function routingSpecialisationLoss(p: Tensor, mask: Tensor, s: RslSettings): RslParts {
  const pBar = p.mean(0); // [E]
  const fBar = mask.mean(0).mul(1 / s.topK); // [E], sums to 1
  const balance = pBar.mul(fBar).sum();
  const entropy = p.mul(p.maximum(1e-30).log()).sum(-1).mean().neg();
  const ent = entropy.mul(s.lambda);
  const value = s.entropySign === '+' ? balance.mul(s.alpha).add(ent) : balance.mul(s.alpha).sub(ent);
  return { balance, entropy, value };
}
