// Thin Householder QR of a row-major [m, n] matrix, plain or with column pivoting, in float64 on the host.
// Used by OLoRA (B = Q of W0[:, :r]), by randomized SVD (re-orthonormalising thin [m, q] blocks) and by svd.ts
// (QR preconditioning). Not blocked and not parallel: it is O(m·n·k) scalar work, fine for the thin and medium
// matrices of initialisations, not a replacement for LAPACK on 4096² (use rsvd.ts there).
//
// Reflectors follow LAPACK's dlarfg convention (H = I − τ·v·vᵀ with v₀ = 1, β = −sign(α)·‖x‖, τ = 0 when the
// column below the diagonal is already zero), so Q and R agree with torch.linalg.qr / numpy.linalg.qr column for
// column, signs included, up to rounding. That matters for OLoRA, whose B = Q[:, :r] is compared with PEFT's.
//
// Rank-deficient input. Householder QR never breaks down: A = Q·R holds and Q has orthonormal columns whatever the
// rank. But where column j of A depends on earlier columns, R[j, j] ≈ 0 and Q's column j is an arbitrary unit
// direction (decided by rounding) orthogonal to the earlier ones — the same as LAPACK, so as PEFT. `qrPivoted`
// is the fallback that reveals the rank: it picks the column of largest remaining norm at each step, so
// |R[0,0]| ≥ |R[1,1]| ≥ … and the first `rank` columns of Q span the range of A. For OLoRA with a rank-deficient
// W0[:, :r], `qrPivoted(W0, m, n, { steps: r })` gives r orthonormal columns spanning the r most independent
// columns of W0 (O(m·n·r)), with R = Qᵀ·W0[:, perm].
import { LorakitError } from '../errors.ts';
import { EPS, type RealArray, checkMatrix, transposeF64 } from './dense.ts';

/** A thin QR factorisation A = Q·R: q [m, k] with orthonormal columns, r [k, n] upper trapezoidal, k = min(m, n). */
export interface Qr {
  q: Float64Array;
  r: Float64Array;
  k: number;
}

/** A pivoted QR A[:, perm] = Q·R (or its first `steps` columns of Q and rows of R), with the numerical rank. */
export interface PivotedQr extends Qr {
  /** [n]: column j of R (and of A·P) is column perm[j] of A. */
  perm: Int32Array;
  /** Number of diagonal entries of R with |R[i,i]| > tol·|R[0,0]| (0 for a zero matrix). */
  rank: number;
}

/** Options of `qrPivoted`. */
export interface PivotedQrOptions {
  /** Stop after this many Householder steps (1 ≤ steps ≤ min(m, n)); Q is then [m, steps], R [steps, n]. */
  steps?: number;
  /** Relative tolerance of the rank decision (default max(m, n)·ε, as numpy.linalg.matrix_rank). */
  tol?: number;
}

// Internally the working copy is column-major (column c at w[c·m … c·m + m)), as LAPACK's: every reflector is
// built from and applied to contiguous columns, which for the thin [4096, 16] blocks of randomized SVD is several
// times faster than row-major loops whose inner length would be 16.

/** Thin Householder QR of an [m, n] matrix (any m, n): Q [m, k], R [k, n], k = min(m, n), LAPACK's signs. */
export function qr(a: RealArray, m: number, n: number): Qr {
  checkMatrix('qr', 'A', a, m, n);
  const k = Math.min(m, n);
  const w = transposeF64(a, m, n); // column-major A
  const tau = new Float64Array(k);
  for (let j = 0; j < k; j++) reflect(w, m, n, j, tau);
  return { q: formQ(w, m, tau, k), r: upperRows(w, m, n, k), k };
}

/**
 * Householder QR with column pivoting (LAPACK dgeqp3's choice: the largest remaining column norm, with its norm
 * down-dating and recomputation), for rank-deficient input. Returns Q [m, steps], R [steps, n], perm and rank.
 */
export function qrPivoted(a: RealArray, m: number, n: number, opts: PivotedQrOptions = {}): PivotedQr {
  checkMatrix('qrPivoted', 'A', a, m, n);
  const k = opts.steps ?? Math.min(m, n);
  if (!Number.isInteger(k) || k < 1 || k > Math.min(m, n))
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `qrPivoted: steps must be an integer in 1..${Math.min(m, n)} for a [${m}, ${n}] matrix, got ${k}`,
    );
  const w = transposeF64(a, m, n);
  const tau = new Float64Array(k);
  const perm = Int32Array.from({ length: n }, (_, i) => i);
  // vn1: current norm of each column's remaining part; vn2: its value when last computed exactly.
  const vn1 = new Float64Array(n);
  for (let c = 0; c < n; c++) vn1[c] = norm(w, c * m, m);
  const vn2 = Float64Array.from(vn1);
  const tol3z = Math.sqrt(EPS);
  for (let j = 0; j < k; j++) {
    let p = j;
    for (let c = j + 1; c < n; c++) if (vn1[c] > vn1[p]) p = c;
    if (p !== j) {
      const col = w.slice(j * m, j * m + m);
      w.copyWithin(j * m, p * m, p * m + m);
      w.set(col, p * m);
      [perm[j], perm[p]] = [perm[p], perm[j]];
      vn1[p] = vn1[j];
      vn2[p] = vn2[j];
    }
    reflect(w, m, n, j, tau);
    // Down-date the remaining norms by the entry just moved into row j; recompute when cancellation would leave
    // fewer than half the digits (dlaqp2's test).
    for (let c = j + 1; c < n; c++) {
      if (vn1[c] === 0) continue;
      const ratio = Math.abs(w[c * m + j]) / vn1[c];
      const temp = Math.max(0, 1 - ratio * ratio);
      const temp2 = temp * (vn1[c] / vn2[c]) ** 2;
      if (temp2 <= tol3z) {
        vn1[c] = j + 1 < m ? norm(w, c * m + j + 1, m - j - 1) : 0;
        vn2[c] = vn1[c];
      } else vn1[c] *= Math.sqrt(temp);
    }
  }
  const r = upperRows(w, m, n, k);
  const t = opts.tol ?? Math.max(m, n) * EPS;
  const r00 = Math.abs(r[0]);
  let rank = 0;
  while (rank < k && r00 > 0 && Math.abs(r[rank * n + rank]) > t * r00) rank++;
  return { q: formQ(w, m, tau, k), r, k, perm, rank };
}

/**
 * An orthonormal basis [m, m − g] of the complement of the span of g orthonormal columns `b` [m, g]: the trailing
 * columns of the full Q of b. svd.ts uses it to complete singular vectors of zero singular values.
 */
export function orthogonalComplement(b: Float64Array, m: number, g: number): Float64Array {
  const w = transposeF64(b, m, g);
  const tau = new Float64Array(g);
  for (let j = 0; j < g; j++) reflect(w, m, g, j, tau);
  const c = m - g;
  const out = new Float64Array(m * c); // column-major [m, c]; column t starts as e_(g+t)
  for (let t = 0; t < c; t++) out[t * m + g + t] = 1;
  for (let j = g - 1; j >= 0; j--) for (let t = 0; t < c; t++) applyReflector(w, m, j, tau[j], out, t);
  return transposeF64(out, c, m);
}

/** Euclidean norm of w[from … from + len): one plain pass, and a scaled one only where squares over/underflow. */
function norm(w: Float64Array, from: number, len: number): number {
  let s = 0;
  for (let i = from; i < from + len; i++) s += w[i] * w[i];
  if (s > 1e-290 && s < 1e290) return Math.sqrt(s);
  let scale = 0;
  for (let i = from; i < from + len; i++) scale = Math.max(scale, Math.abs(w[i]));
  if (scale === 0) return 0;
  const inv = 1 / scale;
  s = 0;
  for (let i = from; i < from + len; i++) {
    const x = w[i] * inv;
    s += x * x;
  }
  return scale * Math.sqrt(s);
}

/**
 * Householder step j on the column-major w [m, n] (in place): zeroes column j below the diagonal, stores v there
 * (v₀ = 1 implied) and β on the diagonal, and applies H = I − τ·v·vᵀ to columns j+1…n−1. τ goes to tau[j].
 */
function reflect(w: Float64Array, m: number, n: number, j: number, tau: Float64Array): void {
  const cj = j * m;
  const alpha = w[cj + j];
  const xnorm = j + 1 < m ? norm(w, cj + j + 1, m - j - 1) : 0;
  if (xnorm === 0) {
    tau[j] = 0; // already upper triangular here: H = I, as dlarfg
    return;
  }
  const beta = (alpha >= 0 ? -1 : 1) * Math.hypot(alpha, xnorm);
  tau[j] = (beta - alpha) / beta;
  const inv = 1 / (alpha - beta);
  for (let i = j + 1; i < m; i++) w[cj + i] *= inv;
  w[cj + j] = beta;
  for (let c = j + 1; c < n; c++) applyReflector(w, m, j, tau[j], w, c);
}

/**
 * Applies H_j (v in column j of the column-major w, rows j+1…, v₀ = 1) to column c of the column-major target t
 * (columns of length m): t_c ← t_c − τ·v·(vᵀ·t_c), rows j… only.
 */
function applyReflector(w: Float64Array, m: number, j: number, tau: number, t: Float64Array, c: number): void {
  if (tau === 0) return;
  const vj = j * m,
    tc = c * m;
  let s = t[tc + j];
  for (let i = j + 1; i < m; i++) s += w[vj + i] * t[tc + i];
  s *= tau;
  t[tc + j] -= s;
  for (let i = j + 1; i < m; i++) t[tc + i] -= s * w[vj + i];
}

/** Q [m, k] (row-major) = H_0·H_1·…·H_(k−1)·I[:, :k], accumulated backwards as dorg2r (H_j leaves columns < j). */
function formQ(w: Float64Array, m: number, tau: Float64Array, k: number): Float64Array {
  const q = new Float64Array(m * k); // column-major while accumulating
  for (let j = 0; j < k; j++) q[j * m + j] = 1;
  for (let j = k - 1; j >= 0; j--) for (let c = j; c < k; c++) applyReflector(w, m, j, tau[j], q, c);
  return transposeF64(q, k, m);
}

/** The first k rows of the upper triangle of the column-major w [m, n], as row-major R [k, n]. */
function upperRows(w: Float64Array, m: number, n: number, k: number): Float64Array {
  const r = new Float64Array(k * n);
  for (let i = 0; i < k; i++) for (let c = i; c < n; c++) r[i * n + c] = w[c * m + i];
  return r;
}
