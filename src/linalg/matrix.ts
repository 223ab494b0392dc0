// Host-side dense matrix helpers for the small products adapters need between steps (merge deltas, norms,
// initialisations). Row-major Float32Array storage; sums accumulate in float64.
import { LorakitError } from '../errors.ts';

/** C[m,n] = A[m,k] · B[k,n] (row-major). */
export function matmul(a: Float32Array, b: Float32Array, m: number, k: number, n: number): Float32Array {
  if (a.length !== m * k || b.length !== k * n) {
    throw new LorakitError(
      'LK_SHAPE_MISMATCH',
      `matmul: cannot multiply [${m}, ${k}] (${a.length} values) by [${k}, ${n}] (${b.length} values)`,
    );
  }
  const c = new Float32Array(m * n);
  const row = new Float64Array(n);
  for (let i = 0; i < m; i++) {
    row.fill(0);
    for (let p = 0; p < k; p++) {
      const av = a[i * k + p];
      if (av === 0) continue;
      const off = p * n;
      for (let j = 0; j < n; j++) row[j] += av * b[off + j];
    }
    c.set(row, i * n);
  }
  return c;
}

/** Transpose of a [m, n] matrix. */
export function transpose(a: Float32Array, m: number, n: number): Float32Array {
  const t = new Float32Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) t[j * m + i] = a[i * n + j];
  return t;
}

/** L2 norm of each row of a [m, n] matrix. */
export function rowNorms(a: Float32Array, m: number, n: number): Float32Array {
  const out = new Float32Array(m);
  for (let i = 0; i < m; i++) {
    let s = 0;
    for (let j = 0; j < n; j++) s += a[i * n + j] * a[i * n + j];
    out[i] = Math.sqrt(s);
  }
  return out;
}

/** a + s·b, elementwise. */
export function axpy(a: Float32Array, b: Float32Array, s: number): Float32Array {
  if (a.length !== b.length)
    throw new LorakitError('LK_SHAPE_MISMATCH', `axpy: lengths ${a.length} and ${b.length} differ`);
  const out = new Float32Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i] + s * b[i];
  return out;
}
