// Test-side matrix helpers for the linalg tests, written with naive loops so they share no code with src/linalg:
// random orthonormal bases, matrices with a prescribed spectrum, orthonormality and reconstruction errors.
import { qr, type Rng } from '../../src/linalg/index.ts';

/** C[m,n] = A[m,k]·B[k,n], naive triple loop. */
export function mul(a: ArrayLike<number>, b: ArrayLike<number>, m: number, k: number, n: number): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += a[i * k + p] * b[p * n + j];
      c[i * n + j] = s;
    }
  return c;
}

/** Transpose of [m, n]. */
export function tr(a: ArrayLike<number>, m: number, n: number): Float64Array {
  const t = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) t[j * m + i] = a[i * n + j];
  return t;
}

/** Gaussian [m, n] matrix from a seeded Rng. */
export function gaussian(rng: Rng, m: number, n: number): Float64Array {
  return Float64Array.from(rng.normalArray(m * n));
}

/** A random [m, k] matrix with orthonormal columns (k ≤ m). */
export function orthonormal(rng: Rng, m: number, k: number): Float64Array {
  return qr(gaussian(rng, m, k), m, k).q;
}

/** U0·diag(s)·V0ᵀ [m, n] with random orthonormal U0 [m, k], V0 [n, k], k = s.length. */
export function withSpectrum(rng: Rng, m: number, n: number, s: readonly number[]) {
  const k = s.length;
  const u0 = orthonormal(rng, m, k),
    v0 = orthonormal(rng, n, k);
  return { a: usv(u0, Float64Array.from(s), v0, m, n, k), u0, v0 };
}

/** U·diag(s)·Vᵀ [m, n] from U [m, k], s [k], V [n, k]. */
export function usv(u: ArrayLike<number>, s: ArrayLike<number>, v: ArrayLike<number>, m: number, n: number, k: number) {
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let t = 0;
      for (let c = 0; c < k; c++) t += u[i * k + c] * s[c] * v[j * k + c];
      out[i * n + j] = t;
    }
  return out;
}

/** max |QᵀQ − I| for Q [m, k]. */
export function orthoError(q: ArrayLike<number>, m: number, k: number): number {
  let e = 0;
  for (let a = 0; a < k; a++)
    for (let b = 0; b < k; b++) {
      let s = 0;
      for (let i = 0; i < m; i++) s += q[i * k + a] * q[i * k + b];
      e = Math.max(e, Math.abs(s - (a === b ? 1 : 0)));
    }
  return e;
}

/** max |a − b| / max |b| (b ≠ 0), or max |a − b| when b is zero. */
export function relError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let e = 0,
    big = 0;
  for (let i = 0; i < b.length; i++) {
    e = Math.max(e, Math.abs(a[i] - b[i]));
    big = Math.max(big, Math.abs(b[i]));
  }
  return big > 0 ? e / big : e;
}

/** Frobenius norm. */
export function frob(a: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * a[i];
  return Math.sqrt(s);
}

/** ‖U·Uᵀ − W·Wᵀ‖_F for the first r columns of U [m, ku] and W [m, kw]: the distance of the two subspaces. */
export function subspaceGap(u: ArrayLike<number>, ku: number, w: ArrayLike<number>, kw: number, m: number, r: number) {
  let s = 0;
  for (let i = 0; i < m; i++)
    for (let j = 0; j < m; j++) {
      let d = 0;
      for (let c = 0; c < r; c++) d += u[i * ku + c] * u[j * ku + c] - w[i * kw + c] * w[j * kw + c];
      s += d * d;
    }
  return Math.sqrt(s);
}

/** Flips the sign of each column of x [rows, k] so that it best matches the same column of ref (for sign-free compare). */
export function alignSigns(x: ArrayLike<number>, ref: ArrayLike<number>, rows: number, k: number): Float64Array {
  const out = Float64Array.from(x);
  for (let c = 0; c < k; c++) {
    let d = 0;
    for (let i = 0; i < rows; i++) d += x[i * k + c] * ref[i * k + c];
    if (d < 0) for (let i = 0; i < rows; i++) out[i * k + c] = -out[i * k + c];
  }
  return out;
}
