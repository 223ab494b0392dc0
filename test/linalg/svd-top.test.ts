// svdTop (top-k triplets by subspace iteration) against the dense Jacobi `svd` on matrices of known spectrum:
// decaying, flat, clustered (inside the top k, with a gap after it), low rank plus a tail (the pruned ΔW of a
// merge), tall and wide. Checked: the top-k values to 1e-9·σ₁, both residuals ‖A·v − σ·u‖ and ‖Aᵀ·u − σ·v‖ to the
// stated 1e-10·σ₁, orthonormality, and the rank-k product U·S·Vᵀ against the dense one where the gap σ_k > σ_(k+1)
// makes it unique; then the dense paths (k a large fraction of min(m, n), and no convergence in maxIterations).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Rng, svd, svdTop } from '../../src/linalg/index.ts';
import { gaussian, mul, orthoError, relError, tr, usv, withSpectrum } from './helpers.ts';

function residuals(
  a: Float64Array,
  m: number,
  n: number,
  f: { u: Float64Array; s: Float64Array; v: Float64Array },
  k: number,
) {
  const av = mul(a, f.v, m, n, k); // [m, k]
  const atu = mul(tr(a, m, n), f.u, n, m, k); // [n, k]
  let worst = 0;
  for (let j = 0; j < k; j++) {
    let r1 = 0;
    let r2 = 0;
    for (let i = 0; i < m; i++) r1 += (av[i * k + j] - f.s[j] * f.u[i * k + j]) ** 2;
    for (let i = 0; i < n; i++) r2 += (atu[i * k + j] - f.s[j] * f.v[i * k + j]) ** 2;
    worst = Math.max(worst, Math.sqrt(r1), Math.sqrt(r2));
  }
  return worst;
}

function check(a: Float64Array, m: number, n: number, k: number, what: string, unique = true) {
  const f = svdTop(a, m, n, k, { denseFraction: 1 }); // the iteration, whatever its cost against dense
  const d = svd(a, m, n);
  assert.equal(f.k, k);
  assert.equal(f.method, 'subspace', `${what}: took the ${f.method} path`);
  const s1 = d.s[0];
  for (let j = 0; j < k; j++)
    assert.ok(Math.abs(f.s[j] - d.s[j]) <= 1e-9 * s1, `${what}: σ${j} ${f.s[j]} vs dense ${d.s[j]}`);
  const res = residuals(a, m, n, f, k);
  assert.ok(res <= 1.01e-10 * s1, `${what}: residual ${res / s1}·σ₁`);
  assert.ok(orthoError(f.u, m, k) < 1e-12 && orthoError(f.v, n, k) < 1e-12, `${what}: not orthonormal`);
  if (unique) {
    const top = (u: Float64Array, v: Float64Array, ku: number) =>
      usv(
        Float64Array.from({ length: m * k }, (_, e) => u[Math.floor(e / k) * ku + (e % k)]),
        d.s.slice(0, k),
        Float64Array.from({ length: n * k }, (_, e) => v[Math.floor(e / k) * ku + (e % k)]),
        m,
        n,
        k,
      );
    const err = relError(usv(f.u, f.s, f.v, m, n, k), top(d.u, d.v, d.k));
    assert.ok(err < 1e-8, `${what}: rank-${k} product differs from the dense one by ${err}`);
  }
  return f;
}

test('svdTop: decaying spectra, tall and wide', () => {
  const rng = new Rng(31);
  for (const [m, n] of [
    [150, 120],
    [90, 160],
  ]) {
    const s = Array.from({ length: Math.min(m, n) }, (_, i) => 10 * 0.85 ** i);
    check(withSpectrum(rng, m, n, s).a, m, n, 6, `[${m}, ${n}] decaying`);
  }
});

test('svdTop: a flat spectrum (every direction singular) gives σ = 1 and zero residuals', () => {
  const rng = new Rng(32);
  const [m, n] = [120, 100];
  const f = check(withSpectrum(rng, m, n, new Array(n).fill(1)).a, m, n, 5, 'flat', false);
  assert.ok(f.iterations <= 2, `flat: ${f.iterations} iterations`);
});

test('svdTop: clustered values inside the top k, a gap after it, a slowly decaying tail', () => {
  const rng = new Rng(33);
  const [m, n] = [140, 130];
  const head = [5, 5 * (1 - 1e-9), 5 * (1 - 2e-9), 3, 3 * (1 - 1e-9)];
  const s = [...head, ...Array.from({ length: n - head.length }, (_, i) => 1.5 * 0.99 ** i)];
  check(withSpectrum(rng, m, n, s).a, m, n, head.length, 'clustered');
});

test('svdTop: a pruned low-rank sum (the ΔW of ties_svd: rank 24 masked at density 0.5) at k = 8', () => {
  const rng = new Rng(34);
  const [m, n, r] = [160, 128, 24];
  const a = mul(gaussian(rng, m, r), gaussian(rng, r, n), m, r, n);
  for (let e = 0; e < a.length; e++) if (rng.next() < 0.5) a[e] = 0;
  check(a, m, n, 8, 'pruned');
});

test('svdTop: dense svd when the block is a large fraction of min(m, n), or when the iteration does not converge', () => {
  const rng = new Rng(35);
  const [m, n] = [40, 30];
  const a = gaussian(rng, m, n);
  const d = svd(a, m, n);
  const big = svdTop(a, m, n, 10);
  assert.equal(big.method, 'dense');
  assert.deepEqual(big.s, d.s.slice(0, 10));
  const s = Array.from({ length: 100 }, (_, i) => 1 - 1e-3 * i); // σ_(p+1)/σ_k ≈ 0.99: slow
  const slow = withSpectrum(rng, 120, 100, s).a;
  const f = svdTop(slow, 120, 100, 4, { maxIterations: 3 });
  assert.equal(f.method, 'dense-fallback');
  assert.equal(f.iterations, 3);
  assert.deepEqual(f.s, svd(slow, 120, 100).s.slice(0, 4));
  assert.throws(() => svdTop(a, m, n, 0), /k must be an integer in 1\.\.30/);
  assert.throws(() => svdTop(a, m, n, 31), /k must be an integer/);
});
