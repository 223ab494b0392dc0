/**
 * Host-side routing mathematics of the LoRA mixtures (ReMix, arXiv 2603.10160; LoRA-Mixer, arXiv 2507.00029), in
 * float64: sampling k of n experts without replacement by Gumbel-top-k, the log-probability of an ordered selection,
 * the REINFORCE leave-one-out (RLOO) router gradient over M sampled routings, top-k, and the effective support size.
 * The graphs (remix.ts, lora-mixer.ts) compute the same things in-graph; these functions are what the tests hold
 * them to, what the training loop draws its Gumbel noise with, and what reports ESS.
 * Not here: graph ops (remix.ts, lora-mixer.ts), the training loop (demo/mixture.ts).
 */
import { LorakitError } from '../../errors.ts';
import type { Rng } from '../../linalg/index.ts';

/** softmax of one row of logits, float64. */
export function softmax(logits: ArrayLike<number>): Float64Array {
  let m = -Infinity;
  for (let i = 0; i < logits.length; i++) m = Math.max(m, logits[i]);
  const e = Float64Array.from(logits, (v) => Math.exp(v - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

/** One standard Gumbel draw, −log(−log u), with u in (0, 1). */
export function gumbel(rng: Rng): number {
  const u = Math.min(Math.max(rng.next(), 1e-12), 1 - 1e-12);
  return -Math.log(-Math.log(u));
}

/** `n` standard Gumbel draws as float32 (the noise a training graph is fed). */
export function gumbelArray(rng: Rng, n: number): Float32Array {
  return Float32Array.from({ length: n }, () => gumbel(rng));
}

/**
 * The indices of the k largest scores, largest first (ties to the lower index, as ONNX TopK). With scores log q + g
 * for Gumbel noise g this is an ordered sample of k distinct experts drawn one after another without replacement from
 * q (the Gumbel-top-k trick); with scores q it is the deterministic top-k ReMix uses at inference.
 */
export function topK(scores: ArrayLike<number>, k: number): number[] {
  if (!Number.isInteger(k) || k < 1 || k > scores.length)
    throw new LorakitError('LK_INVALID_ARGUMENT', `topK: k must be in 1..${scores.length}, got ${k}`);
  const idx = Array.from({ length: scores.length }, (_, i) => i);
  idx.sort((a, b) => scores[b] - scores[a] || a - b);
  return idx.slice(0, k);
}

/** An ordered sample of k distinct experts from q without replacement, by Gumbel-top-k. */
export function sampleWithoutReplacement(q: ArrayLike<number>, k: number, rng: Rng): number[] {
  return topK(
    Float64Array.from(q, (v) => Math.log(v) + gumbel(rng)),
    k,
  );
}

/**
 * log Q of an ordered selection (i₁, …, i_k) drawn without replacement from q (ReMix §3.2):
 * Σ_j [log q_{i_j} − log(1 − Σ_{j'<j} q_{i_j'})].
 */
export function logProbOrdered(q: ArrayLike<number>, sel: readonly number[]): number {
  let lp = 0,
    used = 0;
  for (const i of sel) {
    lp += Math.log(q[i]) - Math.log(1 - used);
    used += q[i];
  }
  return lp;
}

/**
 * ∂ log Q(sel) / ∂ logits for q = softmax(logits). With z = logits: ∂ log q_i/∂z = e_i − q, and
 * ∂(−log(1 − c))/∂z = (∂c/∂z)/(1 − c) where c = Σ_{j'<j} q_{i_j'} and ∂q_i/∂z = q_i(e_i − q).
 */
export function gradLogProbOrdered(logits: ArrayLike<number>, sel: readonly number[]): Float64Array {
  const q = softmax(logits);
  const n = q.length;
  const g = new Float64Array(n);
  let used = 0;
  const dUsed = new Float64Array(n); // ∂c/∂z for the running c
  for (const i of sel) {
    // log q_i
    for (let a = 0; a < n; a++) g[a] += (a === i ? 1 : 0) - q[a];
    // −log(1 − c)
    for (let a = 0; a < n; a++) g[a] += dUsed[a] / (1 - used);
    for (let a = 0; a < n; a++) dUsed[a] += q[i] * ((a === i ? 1 : 0) - q[a]);
    used += q[i];
  }
  return g;
}

/**
 * The RLOO router gradient of ReMix (§3.2): G = 1/(M−1)·Σ_m (L_m − L̄)·∇ log Q(J_m), L̄ the mean of the M losses.
 * `grads[m]` is ∇ log Q(J_m) (any parameter layout); an unbiased estimate of ∇ E_J[L(J)] for M ≥ 2.
 */
export function rlooGradient(losses: readonly number[], grads: readonly ArrayLike<number>[]): Float64Array {
  const M = losses.length;
  if (M < 2 || grads.length !== M)
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `rlooGradient: needs M ≥ 2 losses and one gradient each, got ${M} losses and ${grads.length} gradients`,
    );
  const mean = losses.reduce((a, b) => a + b, 0) / M;
  const out = new Float64Array(grads[0].length);
  for (let m = 0; m < M; m++) {
    const w = (losses[m] - mean) / (M - 1);
    for (let i = 0; i < out.length; i++) out[i] += w * grads[m][i];
  }
  return out;
}

/** Every ordered selection of k distinct indices out of n (n!/(n−k)! of them), for exact expectations in tests. */
export function orderedSelections(n: number, k: number): number[][] {
  const out: number[][] = [];
  const rec = (prefix: number[]) => {
    if (prefix.length === k) {
      out.push(prefix.slice());
      return;
    }
    for (let i = 0; i < n; i++) {
      if (prefix.includes(i)) continue;
      prefix.push(i);
      rec(prefix);
      prefix.pop();
    }
  };
  rec([]);
  return out;
}

/**
 * Effective support size of routing weights π (ReMix §2): ‖π‖₁² / ‖π‖₂². 1 when one expert takes all the weight, k for
 * k equal weights (ReMix's constant weights give exactly k).
 */
export function effectiveSupport(pi: ArrayLike<number>): number {
  let l1 = 0,
    l2 = 0;
  for (let i = 0; i < pi.length; i++) {
    l1 += Math.abs(pi[i]);
    l2 += pi[i] * pi[i];
  }
  return l2 === 0 ? 0 : (l1 * l1) / l2;
}
