// The top-k singular triplets of a dense [m, n] matrix in float64 on the host, to a stated residual: the SVD merges
// of pruned ΔW (ties_svd, dare_*_svd, magnitude_prune_svd), which are full rank (pruning destroys the low rank) but
// keep only k ≪ min(m, n) components. The dense `svd` computes all min(m, n) of them (20–65 s for 576×576 here).
//
// Algorithm: subspace iteration with Rayleigh–Ritz on a block of p > k vectors (Saad, "Numerical Methods for Large
// Eigenvalue Problems", 2nd ed., §5.2, applied to AᵀA without forming it). Each iteration:
//   Y = A·V;  Q = qr(Y);  Qᵀ·A = U_c·S·Vᵀ (an SVD of a [p, n] matrix: one QR and p×p Jacobi);  U = Q·U_c
// so Aᵀ·U = V·S holds exactly and the only residual is ‖A·vⱼ − σⱼ·uⱼ‖, read off the next Y = A·V for free. Triplet
// j converges like (σ_(p+1)/σⱼ)^(2·iterations). Stops when every one of the top k has residual ≤ tol·σ₁ (then each
// σⱼ lies within tol·σ₁ of a singular value of A); falls back to the dense `svd` when p is a large fraction of
// min(m, n) (there the dense one is as cheap and exact) or when the iteration has not converged in maxIterations.
// Not randomized SVD's fixed niter (rsvd.ts): that one stops after a set count, whatever the error.
import { LorakitError } from '../errors.ts';
import { type RealArray, checkMatrix, mm, mmTB, transposeF64 } from './dense.ts';
import { qr } from './qr.ts';
import { Rng } from './random.ts';
import { type Svd, svd } from './svd.ts';

/** Options of `svdTop`. */
export interface SvdTopOptions {
  /** Block size p (k ≤ p ≤ min(m, n)); larger converges in fewer, dearer iterations (default max(2k, k + 8)). */
  block?: number;
  /** Convergence: every top-k residual ‖A·vⱼ − σⱼ·uⱼ‖ ≤ tol·σ₁ (default 1e-10). */
  tol?: number;
  /** Iterations before the dense fallback (default 300). */
  maxIterations?: number;
  /**
   * Use the dense `svd` when p > denseFraction·min(m, n) (default 0.15). The dense cost grows as min(m, n)²·max(m, n),
   * the iteration's as m·n·p·iterations: measured on SmolLM2's merged ΔW (bench/svd-merge.ts --pool, p 40, 10–23
   * iterations), dense was 1–3× faster at 192×576 and the iteration 5–10× faster at 576×576.
   */
  denseFraction?: number;
  /** Seed of the Gaussian start block (default 0): results are reproducible. */
  seed?: number;
}

/** The top-k triplets, and how they were found. */
export interface SvdTop extends Svd {
  /** 'subspace' (converged), 'dense' (p too large a fraction) or 'dense-fallback' (not converged). */
  method: 'subspace' | 'dense' | 'dense-fallback';
  /** Subspace iterations run (0 when dense was chosen up front). */
  iterations: number;
  /** Largest top-k residual ‖A·vⱼ − σⱼ·uⱼ‖ / σ₁ at the end (0 for the dense paths). */
  residual: number;
}

/**
 * The top-k singular triplets of an [m, n] matrix: U [m, k], S [k] descending, V [n, k] (V, not Vᵀ), each with
 * ‖A·vⱼ − σⱼ·uⱼ‖ ≤ tol·σ₁ and Aᵀ·uⱼ = σⱼ·vⱼ, U and V orthonormal. Signs are arbitrary.
 */
export function svdTop(a: RealArray, m: number, n: number, k: number, opts: SvdTopOptions = {}): SvdTop {
  checkMatrix('svdTop', 'A', a, m, n);
  const small = Math.min(m, n);
  if (!Number.isInteger(k) || k < 1 || k > small)
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `svdTop: k must be an integer in 1..${small} (min(m, n)) for a [${m}, ${n}] matrix, got ${k}`,
    );
  const p = Math.min(opts.block ?? Math.max(2 * k, k + 8), small);
  if (!Number.isInteger(p) || p < k)
    throw new LorakitError('LK_INVALID_ARGUMENT', `svdTop: block must be an integer ≥ k = ${k}, got ${opts.block}`);
  const tol = opts.tol ?? 1e-10;
  const maxIterations = opts.maxIterations ?? 300;
  if (p > (opts.denseFraction ?? 0.15) * small)
    return { ...truncate(svd(a, m, n), m, n, k), method: 'dense', iterations: 0, residual: 0 };

  let vt: Float64Array = Float64Array.from(new Rng(opts.seed ?? 0).normalArray(p * n)); // Vᵀ [p, n]: rows are the block
  let y = mmTB(a, vt, m, n, p); // A·V [m, p]
  let residual = Number.POSITIVE_INFINITY;
  for (let it = 1; it <= maxIterations; it++) {
    const q = qr(y, m, p).q; // [m, p]
    const qta = mm(transposeF64(q, m, p), a, p, m, n); // Qᵀ·A [p, n]
    const c = svd(qta, p, n); // Qᵀ·A = U_c·S·Vᵀ: u [p, p], v [n, p]
    const u = mm(q, c.u, m, p, p); // Ritz left vectors [m, p]
    vt = transposeF64(c.v, n, p);
    y = mmTB(a, vt, m, n, p); // A·V: the residual now, the next iteration's block after
    residual = 0;
    for (let j = 0; j < k; j++) {
      let r2 = 0;
      for (let i = 0; i < m; i++) r2 += (y[i * p + j] - c.s[j] * u[i * p + j]) ** 2;
      residual = Math.max(residual, Math.sqrt(r2));
    }
    const s1 = c.s[0];
    if (residual <= tol * s1) {
      const out = truncate({ u, s: c.s, v: c.v, k: p }, m, n, k);
      return { ...out, method: 'subspace', iterations: it, residual: s1 > 0 ? residual / s1 : 0 };
    }
  }
  return { ...truncate(svd(a, m, n), m, n, k), method: 'dense-fallback', iterations: maxIterations, residual: 0 };
}

/** The first k triplets of a thin SVD. */
function truncate(f: Svd, m: number, n: number, k: number): Svd {
  const u = new Float64Array(m * k);
  const v = new Float64Array(n * k);
  for (let i = 0; i < m; i++) for (let j = 0; j < k; j++) u[i * k + j] = f.u[i * f.k + j];
  for (let i = 0; i < n; i++) for (let j = 0; j < k; j++) v[i * k + j] = f.v[i * f.k + j];
  return { u, s: f.s.slice(0, k), v, k };
}
