/**
 * ReMix's routing as graph ops (Reinforcement Routing for Mixtures of LoRAs, arXiv 2603.10160, §3): per token a
 * router q = softmax(P·x) over n experts; k distinct experts active with the constant weight ω each (so the effective
 * support size is k by construction); in training the k are an ordered Gumbel-top-k sample without replacement from
 * q (the noise is a graph input the host draws), with log Q of that ordered sample for the REINFORCE term; at
 * inference the deterministic top-k of q (§3.3).
 *
 * The router sees x without gradient (the REINFORCE term must not move earlier layers), and the selection is a
 * constant of the graph, so the task loss trains only the experts and log Q only the router: the surrogate
 * mean(L) + Σ stop(L_m − L̄)·log Q_m / (B·(M − 1)) (`remixSurrogate`) has exactly the paper's two gradients.
 * Not here: the training loop that builds M routings per window (demo/mixture.ts), the host reference (routing.ts).
 */
import type { Tensor } from '../../graph/index.ts';
import { logSoftmax, selectionMask } from './experts.ts';

/** What ReMix's routing gives for rows x [N, in]. */
export interface RemixRoute {
  /** [N, E]: 1 for the k selected experts, else 0 (the constant weights; ω is applied by expertTerm's scale). */
  weights: Tensor;
  /** [N, E] router probabilities (reported: their ESS, and which experts win). */
  q: Tensor;
  /** [N, k] i64: the selected experts in selection order. */
  indices: Tensor;
  /** [N] log Q of each row's ordered selection; null at inference. */
  logQ: Tensor | null;
}

/**
 * Routes rows x [N, in] with router P [E, in]: sampled when `noise` ([N, E] standard Gumbel draws) is given, top-k of
 * q otherwise.
 */
export function remixRoute(x: Tensor, router: Tensor, k: number, noise: Tensor | null): RemixRoute {
  const E = router.shape[0] as number;
  const logq = logSoftmax(x.detach().matmul(router.T)); // [N, E]
  const q = logq.exp(); // [N, E]
  // Gumbel-top-k: the top k of log q + g are an ordered sample without replacement from q
  const scores = noise ? logq.detach().add(noise) : q.detach(); // [N, E]
  const [, indices] = scores.topk(k, -1); // [N, k]
  const weights = selectionMask(indices, E, x); // [N, E]
  if (!noise) return { weights, q, indices, logQ: null };
  // log Q = Σ_j log q_{i_j} − log(1 − Σ_{j'<j} q_{i_j'}); the running sum is one product with a strict triangle
  const logSel = logq.gatherElements(indices, 1); // [N, k]
  const strict = x.graph.constant(
    Array.from({ length: k * k }, (_, i) => (Math.floor(i / k) < i % k ? 1 : 0)),
    x.dtype,
    [k, k],
  ); // [k, k]: row j' feeds column j when j' < j
  const before = logSel.exp().matmul(strict); // [N, k]: Σ_{j'<j} q_{i_j'}
  const rest = before.neg().add(1).maximum(1e-30); // [N, k]: 1 − Σ_{j'<j}, > 0 since q > 0
  const logQ = logSel.sub(rest.log()).sum(1); // [N]
  return { weights, q, indices, logQ };
}

/**
 * The loss whose gradient is ReMix's: L [M, B] holds window b's mean loss under its m-th sampled routing and logQ
 * [M, B] that routing's log-probability (summed over tokens and layers). Its value is mean(L) (the REINFORCE
 * term is written (L − L̄)·(log Q − stop(log Q)), zero in value); its gradient is mean ∇L for the experts (log Q does
 * not depend on them) plus, for the router, the mean over windows of the RLOO estimate
 * 1/(M−1)·Σ_m (L_m − L̄)·∇ log Q_m, since (L − L̄) is held constant.
 */
export function remixSurrogate(L: Tensor, logQ: Tensor): Tensor {
  const [M, B] = L.shape as number[];
  const adv = L.sub(L.mean(0, true)).detach(); // [M, B]: L_m − L̄ per window
  const score = logQ.sub(logQ.detach()); // [M, B]: 0 in value, ∇ log Q in gradient
  return L.mean().add(
    adv
      .mul(score)
      .sum()
      .mul(1 / (B * (M - 1))),
  );
}
