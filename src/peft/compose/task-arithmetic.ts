/**
 * The elementwise merge rules of PEFT's add_weighted_adapter (peft/utils/merge_utils.py), on flat float64 tensors:
 * task arithmetic (a weighted sum), magnitude pruning, DARE's random drop-and-rescale, and TIES's sign election with
 * a disjoint mean. Each rule takes the same n tensors of one shape (one per source adapter) and n weights and
 * returns one tensor, with PEFT's order of operations (prune each tensor, then elect signs on the unweighted pruned
 * tensors, then weight, then merge), so the results agree with PEFT's to float32 rounding.
 * Not here: which tensors are combined (A and B separately, or full ΔW then SVD: combine.ts), the folders (merge.ts).
 */
import { LorakitError } from '../../errors.ts';
import { selectInPlace } from '../../linalg/index.ts';

/** How TIES elects the sign of an entry: by the sign of the sum of values, or of the sum of signs. */
export type SignMethod = 'total' | 'frequency';

/** The rules that act on one tensor per source: PEFT's names. */
export type TensorRule = 'linear' | 'ties' | 'dare_linear' | 'dare_ties' | 'magnitude_prune';

/**
 * Draws DARE's keep mask for a tensor of n entries kept with probability `density` (1 = keep), in the tensor's
 * memory order; `bernoulliSource` in combine.ts makes one from torch's generator.
 */
export type KeepMask = (n: number, density: number) => Uint8Array;

/** Options of combineTensors. */
export interface RuleOptions {
  /** Fraction of entries kept by pruning (ties, dare_*, magnitude_prune); at or above 1 nothing is pruned. */
  density?: number;
  /** TIES's sign election (default 'total', as PEFT). */
  signMethod?: SignMethod;
  /** DARE's random masks (dare_linear, dare_ties). */
  keep?: KeepMask;
}

/**
 * PEFT's magnitude_based_pruning: keeps the k = ⌊density·n⌋ entries of largest |value| (ties: the earlier first), by
 * selecting the k-th largest |value| (no sort: bench/svd-merge.ts prunes 576×576 ΔWs).
 */
export function magnitudePrune(t: Float64Array, density: number): Float64Array {
  const n = t.length;
  const k = Math.min(Math.trunc(density * n), n); // Python's int(density * numel): the same double product, truncated
  const out = new Float64Array(n);
  if (k <= 0) return out;
  const mags = new Float64Array(n);
  for (let i = 0; i < n; i++) mags[i] = Math.abs(t[i]);
  const thr = selectInPlace(mags, n - k); // the k-th largest |value|
  let ties = k;
  for (let i = 0; i < n; i++) if (Math.abs(t[i]) > thr) ties--; // entries at the threshold still to keep
  for (let i = 0; i < n; i++) {
    const v = Math.abs(t[i]);
    if (v > thr) out[i] = t[i];
    else if (v === thr && ties > 0) {
      out[i] = t[i];
      ties--;
    }
  }
  return out;
}

/** PEFT's random_pruning with rescale: t·mask/density (DARE keeps the expected value of every entry). */
export function randomPrune(t: Float64Array, mask: Uint8Array, density: number): Float64Array {
  const out = new Float64Array(t.length);
  for (let i = 0; i < t.length; i++) out[i] = mask[i] ? t[i] / density : 0;
  return out;
}

/** PEFT's prune(): nothing is pruned (and no random number drawn) at density ≥ 1; a negative density is refused. */
function prune(t: Float64Array, kind: 'magnitude' | 'random', o: RuleOptions): Float64Array {
  const d = o.density!;
  if (d >= 1) return t;
  if (kind === 'magnitude') return magnitudePrune(t, d);
  return randomPrune(t, o.keep!(t.length, d), d);
}

/**
 * The elected sign per entry (+1 or −1) of n stacked tensors: the sign of Σᵢ tᵢ ('total') or of Σᵢ sign(tᵢ)
 * ('frequency'), a zero sum electing +1 (PEFT's `where(sum >= 0, 1, -1)`).
 */
export function majoritySign(ts: readonly Float64Array[], method: SignMethod): Int8Array {
  const n = ts[0].length;
  const sum = new Float64Array(n);
  // tensor by tensor (contiguous) rather than entry by entry: the same sums, in the same order per entry
  for (const t of ts) for (let e = 0; e < n; e++) sum[e] += method === 'total' ? t[e] : Math.sign(t[e]);
  const out = new Int8Array(n);
  for (let e = 0; e < n; e++) out[e] = sum[e] >= 0 ? 1 : -1;
  return out;
}

/**
 * TIES's disjoint merge: per entry, the mean of the weighted values whose source entry has the elected sign (a zero
 * entry has sign 0 and never counts), or 0 where none has.
 */
export function disjointMerge(ts: readonly Float64Array[], weights: readonly number[], sign: Int8Array): Float64Array {
  const n = sign.length;
  const sum = new Float64Array(n);
  const count = new Uint32Array(n);
  for (let i = 0; i < ts.length; i++) {
    const t = ts[i];
    const w = weights[i];
    for (let e = 0; e < n; e++) {
      if (Math.sign(t[e]) === sign[e]) {
        sum[e] += t[e] * w;
        count[e]++;
      }
    }
  }
  for (let e = 0; e < n; e++) sum[e] /= Math.max(count[e], 1);
  return sum;
}

/** Σᵢ wᵢ·tᵢ. */
export function weightedSum(ts: readonly Float64Array[], weights: readonly number[]): Float64Array {
  const out = new Float64Array(ts[0].length);
  ts.forEach((t, i) => {
    for (let e = 0; e < t.length; e++) out[e] += weights[i] * t[e];
  });
  return out;
}

/** One of PEFT's rules on n same-shape tensors with n weights. */
export function combineTensors(
  rule: TensorRule,
  ts: readonly Float64Array[],
  weights: readonly number[],
  o: RuleOptions = {},
): Float64Array {
  if (ts.length === 0 || ts.length !== weights.length)
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `combineTensors: expected one weight per tensor and at least one tensor, got ${ts.length} tensors and ` +
        `${weights.length} weights`,
    );
  if (ts.some((t) => t.length !== ts[0].length))
    throw new LorakitError(
      'LK_SHAPE_MISMATCH',
      `combineTensors: the tensors have different sizes (${ts.map((t) => t.length).join(', ')})`,
    );
  if (rule !== 'linear') {
    const d = o.density;
    if (d === undefined || !Number.isFinite(d) || d < 0)
      throw new LorakitError('LK_INVALID_ARGUMENT', `${rule}: density must be a number >= 0, got ${d}`);
    if (rule.startsWith('dare') && o.keep === undefined && d < 1)
      throw new LorakitError('LK_INVALID_ARGUMENT', `${rule}: no random source for the keep masks was given`);
  }
  const signMethod = o.signMethod ?? 'total';
  switch (rule) {
    case 'linear':
      return weightedSum(ts, weights);
    case 'magnitude_prune':
      return weightedSum(
        ts.map((t) => prune(t, 'magnitude', o)),
        weights,
      );
    case 'dare_linear':
      return weightedSum(
        ts.map((t) => prune(t, 'random', o)),
        weights,
      );
    case 'ties':
    case 'dare_ties': {
      const pruned = ts.map((t) => prune(t, rule === 'ties' ? 'magnitude' : 'random', o));
      return disjointMerge(pruned, weights, majoritySign(pruned, signMethod));
    }
  }
}
