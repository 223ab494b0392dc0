// Symmetric eigendecomposition (Jacobi) against known spectra, the ridge inverse against closed forms and M·M⁻¹ = I,
// and the Sylvester solver against the Kronecker form (I⊗P + Qᵀ⊗I)·vec(X) = vec(C) solved by dense elimination.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, solveSylvester, spdInverse, symEig } from '../../src/linalg/index.ts';
import { LorakitError } from '../../src/errors.ts';
import { assertAllclose } from '../helpers.ts';
import { gaussian, mul, orthoError, orthonormal, relError, tr, usv } from './helpers.ts';

const code = (c: string, re?: RegExp) => (e: unknown) =>
  e instanceof LorakitError && e.code === c && (!re || re.test(e.message));

/** V·diag(λ)·Vᵀ with a random orthonormal V [n, n]. */
function withEigenvalues(rng: Rng, lambda: number[]): Float64Array {
  const n = lambda.length;
  const v = orthonormal(rng, n, n);
  return usv(v, lambda, v, n, n, n);
}

/** Gram matrix Bᵀ·B [k, k] of a random [rows, k] B: symmetric PSD, singular when rows < k. */
function gram(rng: Rng, rows: number, k: number): Float64Array {
  const b = gaussian(rng, rows, k);
  return mul(tr(b, rows, k), b, k, rows, k);
}

/** Solves the dense system M·x = b [n] by Gaussian elimination with partial pivoting (test-only oracle). */
function solveDense(mIn: Float64Array, bIn: Float64Array, n: number): Float64Array {
  const m = Float64Array.from(mIn),
    b = Float64Array.from(bIn);
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(m[r * n + c]) > Math.abs(m[p * n + c])) p = r;
    for (let k = 0; k < n; k++) [m[c * n + k], m[p * n + k]] = [m[p * n + k], m[c * n + k]];
    [b[c], b[p]] = [b[p], b[c]];
    for (let r = c + 1; r < n; r++) {
      const f = m[r * n + c] / m[c * n + c];
      for (let k = c; k < n; k++) m[r * n + k] -= f * m[c * n + k];
      b[r] -= f * b[c];
    }
  }
  const x = new Float64Array(n);
  for (let r = n - 1; r >= 0; r--) {
    let s = b[r];
    for (let k = r + 1; k < n; k++) s -= m[r * n + k] * x[k];
    x[r] = s / m[r * n + r];
  }
  return x;
}

/** X from the Kronecker form: with column-major vec, vec(P·X + X·Q) = (I_q ⊗ P + Qᵀ ⊗ I_p)·vec(X). */
function sylvesterByKronecker(pm: Float64Array, qm: Float64Array, c: Float64Array, p: number, q: number, ridge = 0) {
  const n = p * q;
  const k = new Float64Array(n * n);
  for (let j = 0; j < q; j++)
    for (let i = 0; i < p; i++) {
      const row = j * p + i; // vec index of X[i, j]
      for (let i2 = 0; i2 < p; i2++) k[row * n + j * p + i2] += pm[i * p + i2]; // (P·X)[i, j] = Σ P[i, i2]·X[i2, j]
      for (let j2 = 0; j2 < q; j2++) k[row * n + j2 * p + i] += qm[j2 * q + j]; // (X·Q)[i, j] = Σ X[i, j2]·Q[j2, j]
      k[row * n + row] += ridge;
    }
  const rhs = Float64Array.from({ length: n }, (_, v) => c[(v % p) * q + Math.floor(v / p)]);
  const x = solveDense(k, rhs, n);
  return Float64Array.from({ length: n }, (_, e) => x[(e % q) * p + Math.floor(e / q)]); // back to row-major [p, q]
}

test('symEig recovers a known spectrum (negative and repeated eigenvalues), sorted descending', () => {
  const rng = new Rng(1);
  const lambda = [5, -3, 2, 2, 0, 1e-3, -7, 0.5];
  const m = withEigenvalues(rng, lambda);
  const { values, vectors } = symEig(m, 8);
  assertAllclose(
    values,
    [...lambda].sort((a, b) => b - a),
    { rtol: 0, atol: 1e-13, what: 'eigenvalues' },
  );
  assert.ok(orthoError(vectors, 8, 8) < 1e-14, 'V is not orthonormal');
  assert.ok(relError(usv(vectors, values, vectors, 8, 8, 8), m) < 1e-14, 'V·Λ·Vᵀ != M');
});

test('symEig: every column is an eigenvector (M·vᵢ = λᵢ·vᵢ) for random symmetric matrices up to 64×64', () => {
  const rng = new Rng(2);
  for (const n of [1, 2, 5, 64]) {
    const g = gaussian(rng, n, n);
    const m = Float64Array.from(g, (_, i) => g[i] + g[(i % n) * n + Math.floor(i / n)]); // G + Gᵀ
    const { values, vectors } = symEig(m, n);
    const mv = mul(m, vectors, n, n, n);
    const lv = Float64Array.from(vectors, (x, i) => x * values[i % n]);
    assert.ok(relError(mv, lv) < 1e-13 * n, `n = ${n}: M·V != V·Λ`);
    assert.ok(orthoError(vectors, n, n) < 1e-13, `n = ${n}: V not orthonormal`);
    for (let i = 1; i < n; i++) assert.ok(values[i] <= values[i - 1], 'not sorted descending');
  }
});

test('symEig symmetrises float32 input and rejects a clearly non-symmetric matrix', () => {
  const m = new Float32Array([2, 1, 1, 2]);
  assertAllclose(symEig(m, 2).values, [3, 1], { rtol: 0, atol: 1e-15 });
  assert.throws(() => symEig(new Float64Array([1, 2, 3, 4]), 2), code('LK_INVALID_ARGUMENT', /M\[0, 1\] = 2/));
  assert.throws(() => symEig(new Float64Array([1, Number.POSITIVE_INFINITY, 0, 1]), 2), /non-finite/);
});

test('spdInverse matches the 2×2 closed form and inverts SPD matrices (M·M⁻¹ = I)', () => {
  // [[a, b], [b, c]]⁻¹ = [[c, −b], [−b, a]] / (ac − b²)
  const [a, b, c] = [4, 1.5, 2];
  const det = a * c - b * b;
  assertAllclose(spdInverse(new Float64Array([a, b, b, c]), 2), [c / det, -b / det, -b / det, a / det], {
    rtol: 1e-14,
    atol: 0,
  });
  const rng = new Rng(3);
  const n = 12;
  const m = gram(rng, 30, n);
  const inv = spdInverse(m, n);
  const eye = Float64Array.from({ length: n * n }, (_, i) => (i % (n + 1) === 0 ? 1 : 0));
  assertAllclose(mul(m, inv, n, n, n), eye, { rtol: 0, atol: 1e-12, what: 'M·M⁻¹' });
});

test('spdInverse with a ridge inverts M + δI, also for a singular PSD M (LoRA-Pro’s BᵀB at B of low rank)', () => {
  const rng = new Rng(4);
  const n = 8,
    ridge = 1e-3;
  const m = gram(rng, 3, n); // rank 3
  assert.throws(() => spdInverse(m, n), code('LK_INVALID_ARGUMENT', /pass a larger ridge/));
  const inv = spdInverse(m, n, { ridge });
  const shifted = Float64Array.from(m, (x, i) => (i % (n + 1) === 0 ? x + ridge : x));
  const eye = Float64Array.from({ length: n * n }, (_, i) => (i % (n + 1) === 0 ? 1 : 0));
  assertAllclose(mul(shifted, inv, n, n, n), eye, { rtol: 0, atol: 1e-10, what: '(M + δI)·inv' });
  assertAllclose(spdInverse(new Float64Array(4), 2, { ridge: 0.5 }), [2, 0, 0, 2], { rtol: 1e-15, atol: 0 });
  assert.throws(() => spdInverse(m, n, { ridge: -1 }), code('LK_INVALID_ARGUMENT', /ridge/));
});

test('solveSylvester agrees with the Kronecker system solved by elimination and leaves a tiny residual', () => {
  const rng = new Rng(5);
  for (const [p, q, rowsP, rowsQ, ridge] of [
    [3, 4, 10, 10, 0],
    [5, 5, 2, 9, 0], // P singular (rank 2), Q SPD
    [4, 2, 1, 1, 1e-2], // both singular: only the ridge makes it solvable
  ]) {
    const pm = gram(rng, rowsP, p),
      qm = gram(rng, rowsQ, q);
    const c = gaussian(rng, p, q);
    const x = solveSylvester(pm, qm, c, p, q, { ridge });
    const ref = sylvesterByKronecker(pm, qm, c, p, q, ridge);
    assert.ok(relError(x, ref) < 1e-10, `[${p}, ${q}]: X differs from the Kronecker solution`);
    const lhs = mul(pm, x, p, p, q);
    const xq = mul(x, qm, p, q, q);
    const residual = Float64Array.from(lhs, (v, i) => v + xq[i] + ridge * x[i]);
    assert.ok(relError(residual, c) < 1e-12, `[${p}, ${q}]: ‖PX + XQ + δX − C‖ too large`);
  }
});

test('solveSylvester rejects a pair of singular P and Q without a ridge, naming the fix', () => {
  const rng = new Rng(6);
  const pm = gram(rng, 1, 3),
    qm = gram(rng, 1, 3);
  assert.throws(() => solveSylvester(pm, qm, gaussian(rng, 3, 3), 3, 3), code('LK_INVALID_ARGUMENT', /ridge δ > 0/));
  assert.throws(() => solveSylvester(pm, qm, new Float64Array(4), 3, 3), code('LK_SHAPE_MISMATCH'));
});
