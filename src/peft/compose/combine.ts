/**
 * One module of PEFT's add_weighted_adapter: n source LoRAs (A [r, in], B [out, r], scaling s, user weight w) become
 * one (A [k, in], B [out, k]) whose adapter has r = lora_alpha = k, so its own scaling is 1. Three families:
 *  - on A and B separately (linear, ties, dare_linear, dare_ties, magnitude_prune): a rule of task-arithmetic.ts on
 *    the Aᵢ with weights sign(wᵢsᵢ)·√|wᵢsᵢ| and on the Bᵢ with √|wᵢsᵢ|, all sources of equal rank. Not Σ wᵢΔWᵢ: the
 *    products BᵢAⱼ (i ≠ j) appear too, by PEFT's design (peft#3013 was closed unmerged);
 *  - cat: A = [w₁s₁A₁; …], B = [B₁ …], exactly Σ wᵢsᵢBᵢAᵢ at rank Σrᵢ;
 *  - on ΔWᵢ = sᵢBᵢAᵢ (svd, ties_svd, dare_linear_svd, dare_ties_svd, magnitude_prune_svd): the rule with weights wᵢ,
 *    then the best rank-k factorisation B = U_k·diag(S_k), A = V_kᵀ, optionally clamped to a quantile.
 * The ΔW family uses wᵢ once; PEFT 0.18.1 used wᵢsᵢ on ΔWᵢ, applying sᵢ twice (fixed by peft#3111).
 * Not here: the rules themselves (task-arithmetic.ts), reading and writing folders (merge.ts).
 */
import { LorakitError } from '../../errors.ts';
import { mm, selectInPlace, svd, svdOfProduct, svdTop, TorchGenerator, transposeF64 } from '../../linalg/index.ts';
import type { Svd } from '../../linalg/index.ts';
import { combineTensors, type KeepMask, type RuleOptions, type TensorRule } from './task-arithmetic.ts';

/** PEFT's combination types, in its documentation's order. */
export const COMBINATION_TYPES = [
  'svd',
  'linear',
  'cat',
  'ties',
  'ties_svd',
  'dare_ties',
  'dare_linear',
  'dare_ties_svd',
  'dare_linear_svd',
  'magnitude_prune',
  'magnitude_prune_svd',
] as const;

/** One of PEFT's combination types. */
export type CombinationType = (typeof COMBINATION_TYPES)[number];

/** Whether a type factorises the combined ΔW by SVD (its rank is free: svd_rank, default the largest source rank). */
export const isSvdType = (t: CombinationType) => t.endsWith('_svd') || t === 'svd';

/** Whether a type combines A and B separately (every source must have the same rank, which the result keeps). */
export const isFactorType = (t: CombinationType) => !isSvdType(t) && t !== 'cat';

/** The rule a type applies to its tensors (cat has none). */
function ruleOf(t: CombinationType): TensorRule {
  const base = t.replace(/_svd$/, '');
  return (base === 'svd' ? 'linear' : base) as TensorRule;
}

/** One source LoRA at one module. */
export interface ModuleSource {
  /** A [r, in], row-major. */
  a: Float64Array;
  /** B [out, r], row-major. */
  b: Float64Array;
  r: number;
  /** The source's scaling at this module (α/r, α/√r with rsLoRA, with its alpha/rank patterns). */
  scaling: number;
  /** The user's weight of this source. */
  weight: number;
}

/** A module's shape, and whether PEFT holds its ΔW transposed ([in, out]: embeddings, fan_in_fan_out layers). */
export interface ModuleShape {
  out: number;
  in: number;
  transposed: boolean;
}

/** Options of combineModule. */
export interface CombineOptions extends Omit<RuleOptions, 'keep'> {
  /** The rank k of the result (the factors are zero-padded where fewer components exist). */
  rank: number;
  /** Quantile q of the SVD factors' entries: both are clamped to [−v, v], v = quantile(entries, q) (PEFT's svd_clamp). */
  svdClamp?: number;
  /** DARE's keep masks, drawn in PEFT's order (A tensors, then B tensors; or the ΔWᵢ in source order). */
  keep?: KeepMask;
  /**
   * How the ΔW family factorises (default 'auto'): 'auto' takes the SVD of the stacked factors for `svd` (exact,
   * ΔW never formed) and the top-k subspace iteration for the pruned types; 'dense' forms ΔW and runs the full
   * Jacobi SVD (the reference; bench/svd-merge.ts and the tests compare the two).
   */
  svdSolver?: 'auto' | 'dense';
}

/** A merged module: A [rank, in], B [out, rank]. */
export interface CombinedModule {
  a: Float64Array;
  b: Float64Array;
}

/** Keep masks from torch's CPU generator, as torch.bernoulli draws them (after `skip` draws). */
export function bernoulliSource(seed: number, skip = 0): KeepMask {
  const g = new TorchGenerator(seed);
  g.skip(skip);
  return (n, density) => g.bernoulliFloat32(n, density);
}

/** Combines one module's sources with PEFT's `type`. */
export function combineModule(
  type: CombinationType,
  sources: readonly ModuleSource[],
  shape: ModuleShape,
  o: CombineOptions,
): CombinedModule {
  const { out, in: inF } = shape;
  const k = o.rank;
  const a = new Float64Array(k * inF);
  const b = new Float64Array(out * k);
  if (type === 'cat') {
    stackFactors(sources, out, inF, k, a, b);
    return { a, b };
  }
  const rule = ruleOf(type);
  if (isFactorType(type)) {
    const ws = sources.map((s) => s.weight * s.scaling);
    // the sign goes on A only, so that a negative weight negates BA instead of cancelling out
    const wa = ws.map((w) => (w >= 0 ? 1 : -1) * Math.sqrt(Math.abs(w)));
    const wb = ws.map((w) => Math.sqrt(Math.abs(w)));
    return {
      a: combineTensors(
        rule,
        sources.map((s) => s.a),
        wa,
        o,
      ),
      b: combineTensors(
        rule,
        sources.map((s) => s.b),
        wb,
        o,
      ),
    };
  }
  const { u, s, v, k: n } = factoriseDelta(type, sources, shape, o);
  const keep = Math.min(k, n);
  for (let i = 0; i < out; i++) for (let j = 0; j < keep; j++) b[i * k + j] = u[i * n + j] * s[j];
  for (let j = 0; j < keep; j++) for (let c = 0; c < inF; c++) a[j * inF + c] = v[c * n + j];
  if (o.svdClamp !== undefined) clampFactors(a, b, o.svdClamp);
  return { a, b };
}

/**
 * The sources' factors side by side, Σ wᵢsᵢBᵢAᵢ = [B₁ …]·[w₁s₁A₁; …]: A rows and B columns [0, Σrᵢ) of `a`
 * [width, in] and `b` [out, width] (cat's result, and the product whose SVD is `svd`'s).
 */
function stackFactors(
  sources: readonly ModuleSource[],
  out: number,
  inF: number,
  width: number,
  a: Float64Array,
  b: Float64Array,
): void {
  let row = 0;
  for (const s of sources) {
    for (let i = 0; i < s.r * inF; i++) a[row * inF + i] = s.a[i] * s.weight * s.scaling; // rows [row, row + r)
    for (let i = 0; i < out; i++) for (let j = 0; j < s.r; j++) b[i * width + row + j] = s.b[i * s.r + j];
    row += s.r;
  }
}

/**
 * The SVD (at least its top `rank` triplets) of the combined ΔW [out, in]. For `svd` (the linear rule) ΔW =
 * Σ wᵢsᵢBᵢAᵢ = [B₁ …]·[w₁s₁A₁; …] exactly (stackFactors), so its SVD is that of that product; the pruned types
 * form ΔW (pruning acts on its entries) and take its top `rank` triplets only.
 */
function factoriseDelta(
  type: CombinationType,
  sources: readonly ModuleSource[],
  shape: ModuleShape,
  o: CombineOptions,
): Svd {
  const { out, in: inF } = shape;
  const solver = o.svdSolver ?? 'auto';
  const inner = sources.reduce((t, s) => t + s.r, 0);
  if (type === 'svd' && solver === 'auto') {
    const as = new Float64Array(inner * inF);
    const bs = new Float64Array(out * inner);
    stackFactors(sources, out, inF, inner, as, bs);
    return svdOfProduct(bs, as, out, inner, inF);
  }
  // in PEFT's memory layout, so that DARE's draws and top-k ties fall where PEFT's do
  const deltas = sources.map((s) => {
    const d = mm(s.b, s.a, out, s.r, inF); // [out, in]
    for (let i = 0; i < d.length; i++) d[i] *= s.scaling;
    return shape.transposed ? transposeF64(d, out, inF) : d;
  });
  const merged = combineTensors(
    ruleOf(type),
    deltas,
    sources.map((s) => s.weight),
    o,
  );
  const m = shape.transposed ? transposeF64(merged, inF, out) : merged; // [out, in]
  if (solver === 'dense') return svd(m, out, inF);
  // Block Σrᵢ + k: the unpruned ΔW has rank ≤ Σrᵢ, and pruning spreads the rest thinly, so σ_(p+1)/σ_k is small
  // and the iteration converges in 10–17 steps (bench/svd-merge.ts); svdTop goes dense where that block is too big.
  const k = Math.min(o.rank, out, inF);
  const block = Math.min(inner + k, out, inF);
  return svdTop(m, out, inF, k, { block });
}

/** torch.quantile(x, q) (linear interpolation between the order statistics around q·(n − 1)). */
export function quantile(x: ArrayLike<number>, q: number): number {
  const a = Float64Array.from(x);
  const pos = q * (a.length - 1);
  const lo = Math.floor(pos);
  // after the selection a[lo + 1 …] holds the larger values: the next order statistic is their least
  const below = selectInPlace(a, lo);
  let above = below;
  if (lo + 1 < a.length) {
    above = a[lo + 1];
    for (let i = lo + 2; i < a.length; i++) if (a[i] < above) above = a[i];
  }
  return below + (pos - lo) * (above - below);
}

/**
 * PEFT's svd_clamp, in place: v = quantile of all entries of B (= U·S) and A (= Vᵀ) at q, both clamped to [−v, v].
 * The quantile is of signed entries, so it depends on the signs the SVD chose for each component (PEFT's too).
 */
export function clampFactors(a: Float64Array, b: Float64Array, q: number): void {
  if (!(q >= 0 && q <= 1))
    throw new LorakitError('LK_INVALID_ARGUMENT', `svd_clamp must be a quantile in [0, 1], got ${q}`);
  const all = new Float64Array(a.length + b.length);
  all.set(b);
  all.set(a, b.length);
  const hi = quantile(all, q);
  const lo = -hi;
  for (const t of [a, b]) for (let i = 0; i < t.length; i++) t[i] = Math.min(Math.max(t[i], lo), hi);
}
