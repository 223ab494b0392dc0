// svdOfProduct (the SVD of B·A from its factors) against the dense Jacobi `svd` of the formed product: singular
// values to 1e-10 relative, U·S·Vᵀ = B·A, orthonormal U and V, for thin factors (the LoRA merge case), rank-deficient
// factors and an inner size r at or above min(m, n).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Rng, svd, svdOfProduct } from '../../src/linalg/index.ts';
import { gaussian, mul, orthoError, relError, usv } from './helpers.ts';

function check(b: Float64Array, a: Float64Array, m: number, r: number, n: number, what: string) {
  const p = mul(b, a, m, r, n);
  const f = svdOfProduct(b, a, m, r, n);
  const k = Math.min(m, n, r);
  assert.equal(f.k, k, `${what}: k`);
  assert.equal(f.u.length, m * k);
  assert.equal(f.v.length, n * k);
  assert.ok(relError(usv(f.u, f.s, f.v, m, n, k), p) < 1e-12, `${what}: U·S·Vᵀ != B·A`);
  assert.ok(orthoError(f.u, m, k) < 1e-12, `${what}: U not orthonormal`);
  assert.ok(orthoError(f.v, n, k) < 1e-12, `${what}: V not orthonormal`);
  const dense = svd(p, m, n).s; // min(m, n) values, the ones past k being zero (to rounding)
  for (let j = 0; j < k; j++)
    assert.ok(Math.abs(f.s[j] - dense[j]) <= 1e-10 * dense[0], `${what}: σ${j} ${f.s[j]} vs dense ${dense[j]}`);
  for (let j = k; j < dense.length; j++)
    assert.ok(dense[j] <= 1e-12 * dense[0], `${what}: σ${j} of a rank-${k} product`);
  for (let j = 1; j < k; j++) assert.ok(f.s[j] <= f.s[j - 1] && f.s[j] >= 0, `${what}: S not descending`);
  return f;
}

test('svdOfProduct equals the dense svd of B·A for thin factors (tall, wide, square)', () => {
  const rng = new Rng(21);
  for (const [m, r, n] of [
    [60, 6, 45],
    [40, 12, 70],
    [50, 8, 50],
  ])
    check(gaussian(rng, m, r), gaussian(rng, r, n), m, r, n, `[${m}, ${r}]·[${r}, ${n}]`);
});

test('svdOfProduct of rank-deficient factors: zero singular values, U and V still orthonormal', () => {
  const rng = new Rng(22);
  const [m, r, n] = [40, 8, 30];
  // B of rank 3 (columns 3… are combinations of the first 3); A with a zero row: rank(B·A) ≤ 3
  const c = gaussian(rng, 3, r);
  const b = mul(gaussian(rng, m, 3), c, m, 3, r);
  const a = gaussian(rng, r, n);
  a.fill(0, 0, n);
  const f = check(b, a, m, r, n, 'rank 3');
  for (let j = 3; j < r; j++) assert.ok(f.s[j] <= 1e-12 * f.s[0], `σ${j} = ${f.s[j]} of a rank-3 product`);
  check(new Float64Array(m * r), a, m, r, n, 'B = 0'); // all zero: any orthonormal U, V
});

test('svdOfProduct with r ≥ min(m, n) (the core is as large as the smaller side)', () => {
  const rng = new Rng(23);
  for (const [m, r, n] of [
    [10, 14, 25],
    [25, 14, 10],
    [12, 12, 12],
  ])
    check(gaussian(rng, m, r), gaussian(rng, r, n), m, r, n, `[${m}, ${r}]·[${r}, ${n}]`);
});
