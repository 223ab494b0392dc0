// CMA-ES on known quadratics f(x) = (x − x*)ᵀH(x − x*): it reaches x* (whose value 0 is known), its learned
// covariance approaches the inverse Hessian up to a scale (the property covariance adaptation is built for), box
// bounds hold, and the search is deterministic in its seed.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cmaes } from '../../src/adaptive/index.ts';
import { mm, qr, symEig } from '../../src/linalg/index.ts';
import { randArray } from '../helpers.ts';

const n = 5;
/** H = Q·diag(λ)·Qᵀ with a random rotation Q and condition number 100. */
function hessian(): Float64Array {
  const q = qr(randArray(n * n, 4), n, n).q;
  const lam = [1, 3, 10, 30, 100];
  const h = new Float64Array(n * n);
  for (let i = 0; i < n; i++)
    for (let j = 0; j < n; j++) for (let k = 0; k < n; k++) h[i * n + j] += q[i * n + k] * lam[k] * q[j * n + k];
  return h;
}
const H = hessian();
const xStar = [0.3, -0.7, 1.1, 0.2, -0.4];
const f = (x: Float64Array) => {
  let s = 0;
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) s += (x[i] - xStar[i]) * H[i * n + j] * (x[j] - xStar[j]);
  return s;
};

test('CMA-ES reaches the minimum of an ill-conditioned rotated quadratic', async () => {
  const r = await cmaes(f, new Float64Array(n), { sigma: 0.5, budget: 4000, seed: 1 });
  assert.ok(r.f < 1e-10, `f = ${r.f}`);
  for (let i = 0; i < n; i++) assert.ok(Math.abs(r.x[i] - xStar[i]) < 1e-5, `x[${i}] = ${r.x[i]}`);
  // the best value never gets worse across generations
  for (let g = 1; g < r.history.length; g++) assert.ok(r.history[g] <= r.history[g - 1]);
});

test('CMA-ES learns a covariance close to a multiple of the inverse Hessian', async () => {
  const r = await cmaes(f, new Float64Array(n), { sigma: 0.5, budget: 1500, seed: 2 });
  // the condition number of C^½·H·C^½ is 1 when C ∝ H⁻¹; it is 100 (H's own) for the initial C = I
  const e = symEig(r.covariance, n);
  const half = new Float64Array(n * n); // C^½ = V·diag(√λ)·Vᵀ
  for (let i = 0; i < n; i++)
    for (let j = 0; j < n; j++)
      for (let k = 0; k < n; k++)
        half[i * n + j] += e.vectors[i * n + k] * Math.sqrt(e.values[k]) * e.vectors[j * n + k];
  const m = mm(mm(half, H, n, n, n), half, n, n, n);
  const ev = symEig(m, n).values;
  const cond = ev[0] / ev[n - 1];
  assert.ok(cond < 5, `condition number of C^½HC^½ = ${cond} (H's is 100)`);
});

test('CMA-ES keeps evaluated points in the box and is deterministic in its seed', async () => {
  const seen: number[] = [];
  const g = (x: Float64Array) => {
    seen.push(...x);
    return f(x);
  };
  const a = await cmaes(g, new Float64Array(n), { lower: -0.5, upper: 0.5, budget: 300, seed: 3 });
  assert.ok(seen.every((v) => v >= -0.5 && v <= 0.5));
  assert.equal(a.evaluations, 300);
  // the constrained optimum has x₂ at its bound 0.5 (x*₂ = 1.1 lies outside)
  assert.ok(a.x[2] > 0.45, `x[2] = ${a.x[2]}`);
  const b = await cmaes(f, new Float64Array(n), { lower: -0.5, upper: 0.5, budget: 300, seed: 3 });
  assert.deepEqual([...b.x], [...a.x]);
});
