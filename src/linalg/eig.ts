// Symmetric eigendecomposition by cyclic Jacobi, and the two r×r solves LoRA-Pro needs on the host: the inverse
// of an SPD matrix with a ridge, (M + δI)⁻¹, and the Sylvester equation P·X + X·Q = C for symmetric PSD P, Q.
// Jacobi rather than tridiagonalisation + QL: for the r ≤ 256 matrices here its O(n³)-per-sweep cost is
// milliseconds, it has no shift strategy to get wrong, and it computes small eigenvalues of SPD matrices to high
// relative accuracy (the relative skip test below never discards an entry that matters relative to its diagonal).
// Not for large or non-symmetric matrices: the input is symmetrised and a clearly non-symmetric one is rejected.
import { LorakitError, internal } from '../errors.ts';
import { EPS, type RealArray, checkMatrix, mm, mmTA, mmTB, toF64 } from './dense.ts';

/** A symmetric eigendecomposition M = V·diag(values)·Vᵀ. */
export interface SymEig {
  /** [n], sorted descending. */
  values: Float64Array;
  /** [n, n] row-major, orthonormal; column i is the eigenvector of values[i]. */
  vectors: Float64Array;
}

const MAX_SWEEPS = 60;

/** Eigenvalues (descending) and eigenvectors (columns) of a symmetric [n, n] matrix, by cyclic Jacobi in float64. */
export function symEig(a: RealArray, n: number): SymEig {
  checkMatrix('symEig', 'M', a, n, n);
  const w = symmetrised('symEig', a, n);
  // vt holds Vᵀ (row i = eigenvector i) so that each rotation touches two contiguous rows.
  const vt = new Float64Array(n * n);
  for (let i = 0; i < n; i++) vt[i * n + i] = 1;
  let frob = 0;
  for (let i = 0; i < n * n; i++) frob += w[i] * w[i];
  // Below this an off-diagonal entry moves no eigenvalue by more than ε²·‖M‖ (relative to the largest): done.
  const floor = EPS * EPS * Math.sqrt(frob);
  for (let sweep = 0; sweep < MAX_SWEEPS; sweep++) {
    let rotated = false;
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = w[p * n + q];
        const app = w[p * n + p],
          aqq = w[q * n + q];
        if (Math.abs(apq) <= floor || Math.abs(apq) <= EPS * Math.sqrt(Math.abs(app)) * Math.sqrt(Math.abs(aqq)))
          continue;
        rotated = true;
        rotate(w, vt, n, p, q);
      }
    }
    if (!rotated) return sorted(w, vt, n);
  }
  return internal(`symEig: Jacobi did not converge in ${MAX_SWEEPS} sweeps for a ${n}×${n} matrix`);
}

/** Options of `spdInverse`. */
export interface SpdInverseOptions {
  /** δ ≥ 0 added to the diagonal before inverting (LoRA-Pro uses 1e-8). */
  ridge?: number;
}

/** (M + δI)⁻¹ [n, n] of a symmetric positive (semi)definite M [n, n], as V·diag(1/(λ + δ))·Vᵀ. */
export function spdInverse(a: RealArray, n: number, opts: SpdInverseOptions = {}): Float64Array {
  const ridge = checkRidge('spdInverse', opts.ridge);
  const { values, vectors } = symEig(a, n);
  const top = Math.abs(values[0]) + ridge;
  const low = values[n - 1] + ridge;
  // A shifted eigenvalue within rounding of zero (relative to the largest) makes the inverse meaningless.
  if (!(low > n * EPS * top))
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `spdInverse: M + δI must be positive definite, but its smallest eigenvalue is ${low} (largest ${top}, ` +
        `δ = ${ridge}); pass a larger ridge`,
    );
  const scaled = new Float64Array(n * n); // V·diag(1/(λ+δ)) [n, n]
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) scaled[i * n + j] = vectors[i * n + j] / (values[j] + ridge);
  return mmTB(scaled, vectors, n, n, n);
}

/** Options of `solveSylvester`. */
export interface SylvesterOptions {
  /** δ ≥ 0 added to every λᵢ + μⱼ (a ridge on P, equivalently on Q). */
  ridge?: number;
}

/**
 * X [p, q] solving P·X + X·Q = C for symmetric PSD P [p, p], Q [q, q] and C [p, q]: with P = Vp·diag(λ)·Vpᵀ and
 * Q = Vq·diag(μ)·Vqᵀ, X = Vp·[(Vpᵀ·C·Vq)ᵢⱼ / (λᵢ + μⱼ + δ)]·Vqᵀ (LoRA-Pro's X step, spec §6).
 */
export function solveSylvester(
  pm: RealArray,
  qm: RealArray,
  c: RealArray,
  p: number,
  q: number,
  opts: SylvesterOptions = {},
): Float64Array {
  const ridge = checkRidge('solveSylvester', opts.ridge);
  checkMatrix('solveSylvester', 'C', c, p, q);
  const ep = symEig(pm, p),
    eq = symEig(qm, q);
  const top = Math.abs(ep.values[0]) + Math.abs(eq.values[0]) + ridge;
  const ct = mm(mmTA(ep.vectors, c, p, p, q), eq.vectors, p, q, q); // Vpᵀ·C·Vq [p, q]
  for (let i = 0; i < p; i++) {
    for (let j = 0; j < q; j++) {
      const d = ep.values[i] + eq.values[j] + ridge;
      // P and Q PSD make every d ≥ δ; one within rounding of zero means both are singular in the same pair.
      if (!(d > (p + q) * EPS * top))
        throw new LorakitError(
          'LK_INVALID_ARGUMENT',
          `solveSylvester: λ${i}(P) + μ${j}(Q) + δ = ${d} is not positive (largest ${top}); P and Q must be PSD ` +
            `and not both singular, or pass a ridge δ > 0`,
        );
      ct[i * q + j] /= d;
    }
  }
  return mmTB(mm(ep.vectors, ct, p, p, q), eq.vectors, p, q, q);
}

/** (M + Mᵀ)/2 as a float64 copy; throws if M is visibly not symmetric (beyond float32 rounding of its entries). */
function symmetrised(where: string, a: RealArray, n: number): Float64Array {
  let big = 0;
  for (let i = 0; i < n * n; i++) big = Math.max(big, Math.abs(a[i]));
  const w = toF64(a);
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      const x = a[i * n + j],
        y = a[j * n + i];
      if (Math.abs(x - y) > 1e-6 * big)
        throw new LorakitError(
          'LK_INVALID_ARGUMENT',
          `${where}: M must be symmetric, but M[${i}, ${j}] = ${x} and M[${j}, ${i}] = ${y}`,
        );
      w[i * n + j] = w[j * n + i] = (x + y) / 2;
    }
  }
  return w;
}

/**
 * One Jacobi rotation in the (p, q) plane: w ← Jᵀ·w·J zeroes w[p, q], and rows p, q of Vᵀ rotate alike.
 * t = tan θ is the smaller root of t² + 2ζt − 1 = 0, ζ = (a_qq − a_pp)/(2a_pq) (Rutishauser), so |θ| ≤ π/4.
 */
function rotate(w: Float64Array, vt: Float64Array, n: number, p: number, q: number): void {
  const apq = w[p * n + q];
  const zeta = (w[q * n + q] - w[p * n + p]) / (2 * apq);
  const t = Math.abs(zeta) > 1e150 ? 0.5 / zeta : (zeta >= 0 ? 1 : -1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
  const c = 1 / Math.sqrt(1 + t * t),
    s = c * t;
  // Rows p, q of w (then columns, by symmetry): w'[p,k] = c·w[p,k] − s·w[q,k], w'[q,k] = s·w[p,k] + c·w[q,k].
  const rp = p * n,
    rq = q * n;
  for (let k = 0; k < n; k++) {
    if (k === p || k === q) continue;
    const x = w[rp + k],
      y = w[rq + k];
    const nx = c * x - s * y,
      ny = s * x + c * y;
    w[rp + k] = nx;
    w[k * n + p] = nx;
    w[rq + k] = ny;
    w[k * n + q] = ny;
  }
  w[rp + p] -= t * apq;
  w[rq + q] += t * apq;
  w[rp + q] = 0;
  w[rq + p] = 0;
  for (let k = 0; k < n; k++) {
    const x = vt[rp + k],
      y = vt[rq + k];
    vt[rp + k] = c * x - s * y;
    vt[rq + k] = s * x + c * y;
  }
}

/** Diagonal of w as eigenvalues (descending) and the matching rows of Vᵀ as columns of V. */
function sorted(w: Float64Array, vt: Float64Array, n: number): SymEig {
  const order = Array.from({ length: n }, (_, i) => i).sort((i, j) => w[j * n + j] - w[i * n + i]);
  const values = new Float64Array(n);
  const vectors = new Float64Array(n * n);
  order.forEach((src, dst) => {
    values[dst] = w[src * n + src];
    for (let k = 0; k < n; k++) vectors[k * n + dst] = vt[src * n + k];
  });
  return { values, vectors };
}

function checkRidge(where: string, ridge = 0): number {
  if (!(ridge >= 0) || !Number.isFinite(ridge))
    throw new LorakitError('LK_INVALID_ARGUMENT', `${where}: ridge must be a finite number ≥ 0, got ${ridge}`);
  return ridge;
}
