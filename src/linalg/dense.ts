// Float64 building blocks shared by the decompositions (qr, eig, svd, rsvd): argument checks, products and
// transposes of row-major matrices. Not a BLAS: every loop here is O(size) or one plain triple loop, meant for the
// small and medium matrices of initialisations; large products go to ONNX Runtime (rsvd.ts).
import { LorakitError } from '../errors.ts';

/** A real matrix or vector as decompositions accept it: float32 (weights) or float64 (host intermediates). */
export type RealArray = Float32Array | Float64Array;

/** Machine epsilon of float64 (2⁻⁵²). */
export const EPS = 2 ** -52;

/** Checks that `a` holds an [m, n] matrix of finite values; `where` names the caller in the error. */
export function checkMatrix(where: string, what: string, a: RealArray, m: number, n: number): void {
  if (!Number.isInteger(m) || !Number.isInteger(n) || m < 1 || n < 1)
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `${where}: dims of ${what} must be positive integers, got [${m}, ${n}]`,
    );
  if (a.length !== m * n)
    throw new LorakitError(
      'LK_SHAPE_MISMATCH',
      `${where}: ${what} should be [${m}, ${n}] (${m * n} values), got ${a.length} values`,
    );
  for (let i = 0; i < a.length; i++) {
    if (!Number.isFinite(a[i]))
      throw new LorakitError(
        'LK_INVALID_ARGUMENT',
        `${where}: ${what} has the non-finite value ${a[i]} at [${Math.floor(i / n)}, ${i % n}]`,
      );
  }
}

/** A float64 copy of `a` (always a copy, so callers may overwrite it). */
export function toF64(a: RealArray): Float64Array {
  return Float64Array.from(a);
}

/** C[m,n] = A[m,k] · B[k,n] in float64 (row-major). */
export function mm(a: RealArray, b: RealArray, m: number, k: number, n: number): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    const ci = i * n;
    for (let p = 0; p < k; p++) {
      const av = a[i * k + p];
      if (av === 0) continue;
      const bp = p * n;
      for (let j = 0; j < n; j++) c[ci + j] += av * b[bp + j];
    }
  }
  return c;
}

/** C[k,n] = A[m,k]ᵀ · B[m,n] in float64, without forming Aᵀ. */
export function mmTA(a: RealArray, b: RealArray, m: number, k: number, n: number): Float64Array {
  const c = new Float64Array(k * n);
  for (let i = 0; i < m; i++) {
    const bi = i * n;
    for (let p = 0; p < k; p++) {
      const av = a[i * k + p];
      if (av === 0) continue;
      const cp = p * n;
      for (let j = 0; j < n; j++) c[cp + j] += av * b[bi + j];
    }
  }
  return c;
}

/** C[m,n] = A[m,k] · B[n,k]ᵀ in float64: each entry is a dot product of two contiguous rows. */
export function mmTB(a: RealArray, b: RealArray, m: number, k: number, n: number): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    const ai = i * k;
    for (let j = 0; j < n; j++) {
      const bj = j * k;
      let s = 0;
      for (let p = 0; p < k; p++) s += a[ai + p] * b[bj + p];
      c[i * n + j] = s;
    }
  }
  return c;
}

/** Transpose of a [m, n] matrix, in float64. */
export function transposeF64(a: RealArray, m: number, n: number): Float64Array {
  const t = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) t[j * m + i] = a[i * n + j];
  return t;
}

/** The identity matrix [n, n]. */
export function eye(n: number): Float64Array {
  const e = new Float64Array(n * n);
  for (let i = 0; i < n; i++) e[i * n + i] = 1;
  return e;
}
