// Exact thin SVD A = U·diag(S)·Vᵀ of a row-major [m, n] matrix in float64 on the host: PiSSA's "pissa" init,
// LoRA-Squeeze's r×r core and the small [q, n] factor at the end of randomized SVD (rsvd.ts). Not for 4096² weights
// (O(m·n·min(m,n)) scalar work): use svdLowrank there.
//
// Algorithm: one-sided (Hestenes) Jacobi with QR preconditioning (Drmač & Veselić, "New fast and accurate Jacobi
// SVD algorithm", SIMAX 2008): A·P = Q·R by pivoted Householder QR, then Jacobi rotations orthogonalise the columns
// of Rᵀ. Chosen over Golub–Kahan bidiagonalisation + implicit-shift QR because
//  - it is short and has no shift/deflation/splitting logic to get subtly wrong (dbdsqr's corner cases);
//  - it is accurate: U, V orthonormal to ~√n·ε, and small singular values to high relative accuracy where the
//    column scaling allows (Demmel & Veselić 1992), where Golub–Kahan guarantees only ε·‖A‖ absolute;
//  - the QR step makes it cheap where it matters: a tall [m, n] input costs one QR plus Jacobi on n×n, and Jacobi
//    on Rᵀ of a pivoted R converges in a few sweeps (R is graded), so it is within a small factor of Golub–Kahan.
// The price is that cost grows with the number of sweeps (≈ 5–8 for random matrices): bench/linalg.ts measures it.
//
// Result convention: V is returned, not Vᵀ (as torch.svd_lowrank), columns ordered by descending singular value.
// Columns belonging to exactly-zero singular values are completed to an orthonormal basis, so U and V always have
// orthonormal columns. Signs are whatever the algorithm gives (LAPACK's are not reproduced).
import { internal } from '../errors.ts';
import { EPS, type RealArray, checkMatrix, mmTB, transposeF64 } from './dense.ts';
import { orthogonalComplement, qrPivoted } from './qr.ts';

/** A thin SVD A ≈ U·diag(S)·Vᵀ: u [m, k], s [k] descending and ≥ 0, v [n, k] (V, not Vᵀ), k ≤ min(m, n). */
export interface Svd {
  u: Float64Array;
  s: Float64Array;
  v: Float64Array;
  k: number;
}

const MAX_SWEEPS = 60;

/** Exact thin SVD of an [m, n] matrix (any shape): U [m, k], S [k] descending, V [n, k], k = min(m, n). */
export function svd(a: RealArray, m: number, n: number): Svd {
  checkMatrix('svd', 'A', a, m, n);
  if (m >= n) return svdTall(a, m, n);
  const t = svdTall(transposeF64(a, m, n), n, m); // Aᵀ = U'·S·V'ᵀ  ⇒  A = V'·S·U'ᵀ
  return { u: t.v, s: t.s, v: t.u, k: t.k };
}

/**
 * The Moore–Penrose pseudo-inverse A⁺ [n, m] of an [m, n] matrix, from its exact SVD: V·diag(1/σ)·Uᵀ over the
 * singular values above `rtol`·σ₁ (torch.linalg.pinv's rule; its default rtol is max(m, n)·ε of the input's dtype,
 * which callers pass: ε₃₂ for float32 weights). NLoRA's optional Nyström core.
 */
export function pinv(a: RealArray, m: number, n: number, rtol: number): Float64Array {
  const { u, s, v, k } = svd(a, m, n);
  const cut = rtol * s[0];
  const out = new Float64Array(n * m);
  for (let j = 0; j < k; j++) {
    if (!(s[j] > cut)) continue;
    const inv = 1 / s[j];
    for (let row = 0; row < n; row++) {
      const vr = v[row * k + j] * inv;
      if (vr === 0) continue;
      for (let col = 0; col < m; col++) out[row * m + col] += vr * u[col * k + j]; // (V·Σ⁻¹·Uᵀ)[row, col]
    }
  }
  return out;
}

/** SVD of a tall [m, n] (m ≥ n) matrix: A·P = Q·R, Rᵀ·W = Y (orthogonal columns), so A = (Q·W)·Σ·(P·Y·Σ⁻¹)ᵀ. */
function svdTall(a: RealArray, m: number, n: number): Svd {
  const { q, r, perm } = qrPivoted(a, m, n); // q [m, n], r [n, n]
  // Column c of X = Rᵀ is row c of R: stored as rows, each rotation works on two contiguous rows.
  const x = r;
  const wt = new Float64Array(n * n); // row c = column c of the accumulated rotation W
  for (let i = 0; i < n; i++) wt[i * n + i] = 1;
  jacobi(x, wt, n);
  const norms = new Float64Array(n);
  for (let c = 0; c < n; c++) norms[c] = Math.sqrt(dot(x, c * n, x, c * n, n));
  const order = Array.from({ length: n }, (_, i) => i).sort((i, j) => norms[j] - norms[i]);
  const s = Float64Array.from(order, (c) => norms[c]);
  // Left: U = Q·W (W orthogonal, so U is orthonormal with no division by σ).
  const wSorted = new Float64Array(n * n);
  order.forEach((c, dst) => wSorted.set(wt.subarray(c * n, c * n + n), dst * n));
  const u = mmTB(q, wSorted, m, n, n); // [m, n]·[n, n]ᵀ
  // Right: V = P·(columns of Y normalised). Zero columns (σ = 0, or too small to normalise) get a completion.
  const y = new Float64Array(n * n); // [n, n], column dst = unit right singular vector, rows in R's column order
  const tiny = s[0] * 1e-150;
  let good = 0;
  for (let dst = 0; dst < n; dst++) {
    if (!(s[dst] > tiny)) break;
    const c = order[dst];
    for (let l = 0; l < n; l++) y[l * n + dst] = x[c * n + l] / s[dst];
    good++;
  }
  if (good < n) complete(y, n, good);
  const v = new Float64Array(n * n);
  for (let l = 0; l < n; l++) v.set(y.subarray(l * n, l * n + n), perm[l] * n);
  return { u, s, v, k: n };
}

/**
 * One-sided cyclic Jacobi on the n rows of x [n, n] (each a column of Rᵀ): rotates pairs until every pair is
 * orthogonal to tol = √n·ε relative to their norms (LAPACK dgesvj's test), applying the same rotations to wt.
 */
function jacobi(x: Float64Array, wt: Float64Array, n: number): void {
  const tol = Math.sqrt(n) * EPS;
  const nrm = new Float64Array(n); // squared row norms, recomputed each sweep, down-dated within it
  for (let sweep = 0; sweep < MAX_SWEEPS; sweep++) {
    for (let c = 0; c < n; c++) nrm[c] = dot(x, c * n, x, c * n, n);
    let rotated = false;
    for (let i = 0; i < n - 1; i++) {
      pivotLargest(x, wt, nrm, i, n);
      for (let j = i + 1; j < n; j++) {
        const a = nrm[i],
          b = nrm[j];
        if (a === 0 || b === 0) continue;
        const g = dot(x, i * n, x, j * n, n);
        if (Math.abs(g) <= tol * Math.sqrt(a) * Math.sqrt(b)) continue;
        rotated = true;
        // tan θ is the smaller root of t² + 2ζt − 1 = 0, ζ = (b − a)/(2g): it makes the rotated pair orthogonal.
        const zeta = (b - a) / (2 * g);
        const t =
          Math.abs(zeta) > 1e150 ? 0.5 / zeta : (zeta >= 0 ? 1 : -1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const cs = 1 / Math.sqrt(1 + t * t),
          sn = cs * t;
        rot(x, i * n, j * n, n, cs, sn);
        rot(wt, i * n, j * n, n, cs, sn);
        // ‖xᵢ'‖² = a − t·g, ‖xⱼ'‖² = b + t·g; recompute when the down-date cancels most digits.
        const na = a - t * g,
          nb = b + t * g;
        nrm[i] = na > 0.05 * a ? na : dot(x, i * n, x, i * n, n);
        nrm[j] = nb > 0.05 * b ? nb : dot(x, j * n, x, j * n, n);
      }
    }
    if (!rotated) return;
  }
  internal(`svd: one-sided Jacobi did not converge in ${MAX_SWEEPS} sweeps for an ${n}×${n} factor`);
}

function dot(a: Float64Array, ia: number, b: Float64Array, ib: number, len: number): number {
  let s0 = 0,
    s1 = 0;
  let k = 0;
  for (; k + 1 < len; k += 2) {
    s0 += a[ia + k] * b[ib + k];
    s1 += a[ia + k + 1] * b[ib + k + 1];
  }
  if (k < len) s0 += a[ia + k] * b[ib + k];
  return s0 + s1;
}

/** Rows i, j of x ← (c·xᵢ − s·xⱼ, s·xᵢ + c·xⱼ). */
function rot(x: Float64Array, i: number, j: number, len: number, c: number, s: number): void {
  for (let k = 0; k < len; k++) {
    const a = x[i + k],
      b = x[j + k];
    x[i + k] = c * a - s * b;
    x[j + k] = s * a + c * b;
  }
}

/** Fills columns good…n−1 of y [n, n] (whose first `good` columns are orthonormal) with an orthonormal completion. */
function complete(y: Float64Array, n: number, good: number): void {
  const basis = new Float64Array(n * good);
  for (let l = 0; l < n; l++) for (let c = 0; c < good; c++) basis[l * good + c] = y[l * n + c];
  const rest = orthogonalComplement(basis, n, good); // [n, n − good]
  const extra = n - good;
  if (rest.length !== n * extra) internal('svd: completion has the wrong size');
  for (let l = 0; l < n; l++) for (let c = 0; c < extra; c++) y[l * n + good + c] = rest[l * extra + c];
}

/** de Rijk's pivoting: swaps the remaining row of largest norm into row i (≈ one sweep fewer on random input). */
function pivotLargest(x: Float64Array, wt: Float64Array, nrm: Float64Array, i: number, n: number): void {
  let p = i;
  for (let c = i + 1; c < n; c++) if (nrm[c] > nrm[p]) p = c;
  if (p === i) return;
  for (const z of [x, wt]) {
    for (let k = 0; k < n; k++) {
      const t = z[i * n + k];
      z[i * n + k] = z[p * n + k];
      z[p * n + k] = t;
    }
  }
  [nrm[i], nrm[p]] = [nrm[p], nrm[i]];
}
