// Exact thin SVD (QR-preconditioned one-sided Jacobi): reconstruction, orthonormal U and V, singular values of
// matrices built with a known spectrum, PEFT's shapes (m > n, m < n), rank deficiency and an independent check of
// S² against the eigenvalues of AᵀA.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pinv, Rng, svd, symEig } from '../../src/linalg/index.ts';
import { LorakitError } from '../../src/errors.ts';
import { assertAllclose } from '../helpers.ts';
import { alignSigns, gaussian, mul, orthoError, relError, tr, usv, withSpectrum } from './helpers.ts';

function checkSvd(a: ArrayLike<number>, m: number, n: number, tol = 1e-13) {
  const f = svd(a as Float64Array, m, n);
  const k = Math.min(m, n);
  assert.equal(f.k, k);
  assert.equal(f.u.length, m * k);
  assert.equal(f.s.length, k);
  assert.equal(f.v.length, n * k);
  assert.ok(relError(usv(f.u, f.s, f.v, m, n, k), a) < tol, `[${m}, ${n}]: U·S·Vᵀ != A`);
  assert.ok(orthoError(f.u, m, k) < tol, `[${m}, ${n}]: U not orthonormal (${orthoError(f.u, m, k)})`);
  assert.ok(orthoError(f.v, n, k) < tol, `[${m}, ${n}]: V not orthonormal (${orthoError(f.v, n, k)})`);
  for (let i = 1; i < k; i++) assert.ok(f.s[i] <= f.s[i - 1] && f.s[i] >= 0, `S not descending at ${i}`);
  return f;
}

test('svd recovers a known spectrum and its singular vectors for tall, wide and square shapes', () => {
  const rng = new Rng(1);
  for (const [m, n] of [
    [40, 12],
    [12, 40],
    [16, 16],
  ]) {
    const k = Math.min(m, n);
    const s0 = Array.from({ length: k }, (_, i) => 10 * 0.6 ** i); // 10 … 10·0.6^(k−1): distinct, wide range
    const { a, u0, v0 } = withSpectrum(rng, m, n, s0);
    const f = checkSvd(a, m, n);
    assertAllclose(f.s, s0, { rtol: 0, atol: 1e-13 * s0[0], what: `[${m}, ${n}] singular values` });
    // Distinct singular values fix each singular vector up to sign.
    assertAllclose(alignSigns(f.u, u0, m, k), u0, { rtol: 0, atol: 1e-9, what: `[${m}, ${n}] U` });
    assertAllclose(alignSigns(f.v, v0, n, k), v0, { rtol: 0, atol: 1e-9, what: `[${m}, ${n}] V` });
  }
});

test('svd of PEFT-like shapes: float32 weights [out, in] with out > in and out < in', () => {
  const rng = new Rng(2);
  for (const [m, n] of [
    [96, 32],
    [32, 96],
  ]) {
    const a = rng.normalArray(m * n, 0.02);
    checkSvd(a, m, n, 1e-12);
  }
});

test('svd: S² equals the eigenvalues of AᵀA (an independent Jacobi computation)', () => {
  const rng = new Rng(3);
  const [m, n] = [30, 9];
  const a = gaussian(rng, m, n);
  const s = svd(a, m, n).s;
  const eig = symEig(mul(tr(a, m, n), a, n, m, n), n).values;
  assertAllclose(
    Float64Array.from(s, (x) => x * x),
    eig,
    { rtol: 1e-12, atol: 1e-12, what: 'S² vs eig(AᵀA)' },
  );
});

test('svd of a rank-deficient matrix: zero singular values and still orthonormal U and V', () => {
  const rng = new Rng(4);
  const [m, n, rank] = [20, 10, 3];
  const { a } = withSpectrum(rng, m, n, [3, 2, 1]);
  const f = checkSvd(a, m, n);
  assertAllclose(f.s.subarray(0, rank), [3, 2, 1], { rtol: 0, atol: 1e-14 });
  for (let i = rank; i < n; i++) assert.ok(f.s[i] < 1e-14, `s[${i}] = ${f.s[i]}`);
  // Exactly zero columns give exactly zero singular values: their singular vectors come from the completion.
  const z = gaussian(rng, 8, 6);
  for (let i = 0; i < 8; i++) for (const c of [1, 4]) z[i * 6 + c] = 0;
  const fz = checkSvd(z, 8, 6);
  assert.equal(fz.s[4], 0);
  assert.equal(fz.s[5], 0);
  const zero = checkSvd(new Float64Array(15), 5, 3);
  assert.ok(zero.s.every((x) => x === 0));
});

test('svd of a 1-column and a 1-row matrix', () => {
  const col = new Float64Array([3, 0, -4]);
  const f = checkSvd(col, 3, 1);
  assertAllclose(f.s, [5], { rtol: 1e-15, atol: 0 });
  const row = checkSvd(col, 1, 3);
  assertAllclose(row.s, [5], { rtol: 1e-15, atol: 0 });
});

test('svd reports bad input with lorakit errors', () => {
  const isCode = (c: string) => (e: unknown) => e instanceof LorakitError && e.code === c;
  assert.throws(() => svd(new Float64Array(5), 2, 3), isCode('LK_SHAPE_MISMATCH'));
  assert.throws(() => svd(new Float64Array([1, Number.NaN]), 1, 2), isCode('LK_INVALID_ARGUMENT'));
});

test('pinv satisfies the four Moore–Penrose conditions on full-rank and rank-deficient matrices; tiny σ are cut', () => {
  const rng = new Rng(7);
  for (const [m, n, rank] of [
    [5, 5, 5],
    [6, 4, 4],
    [4, 7, 2],
    [5, 5, 3],
  ]) {
    const s0 = Array.from({ length: Math.min(m, n) }, (_, i) => (i < rank ? 3 * 0.5 ** i : 0));
    const { a } = withSpectrum(rng, m, n, s0);
    const p = pinv(a, m, n, 1e-10);
    const ap = mul(a, p, m, n, m); // A·A⁺ [m, m]
    const pa = mul(p, a, n, m, n); // A⁺·A [n, n]
    assertAllclose(mul(ap, a, m, m, n), a, { atol: 1e-12, rtol: 0, what: `[${m}, ${n}] rank ${rank}: A·A⁺·A = A` });
    assertAllclose(mul(pa, p, n, n, m), p, { atol: 1e-12, rtol: 0, what: `A⁺·A·A⁺ = A⁺` });
    assertAllclose(ap, tr(ap, m, m), { atol: 1e-12, rtol: 0, what: 'A·A⁺ symmetric' });
    assertAllclose(pa, tr(pa, n, n), { atol: 1e-12, rtol: 0, what: 'A⁺·A symmetric' });
  }
  // a singular value below rtol·σ₁ is treated as zero (torch.linalg.pinv's cutoff): the inverse stays bounded
  const { a } = withSpectrum(rng, 3, 3, [1, 0.5, 1e-9]);
  const big = pinv(a, 3, 3, 0).reduce((x, v) => Math.max(x, Math.abs(v)), 0);
  const cut = pinv(a, 3, 3, 1e-6).reduce((x, v) => Math.max(x, Math.abs(v)), 0);
  assert.ok(big > 1e8 && cut < 3, `without the cutoff ${big}, with it ${cut}`);
});
