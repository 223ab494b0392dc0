// FedSmoothLoRA's client algebra (src/federated/fedsmooth.ts) against a float64 host reference that forms every
// matrix densely: truncations against the dense SVD (and Eckart–Young's dropped energy), the gradient-aligned factors
// against the gradient's singular values (sign-free: each singular vector's sign is arbitrary), the round's start
// (backbone W − s·Ŵ_ga plus the initial LoRA) against W + s·W_rm, and the upload against B·A − Ŵ_ga.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LorakitError } from '../../src/errors.ts';
import {
  type Factors,
  combine,
  gradientAligned,
  initFactors,
  product,
  roundMatching,
  shifted,
  truncatedSvd,
  uploadFactors,
} from '../../src/federated/fedsmooth.ts';
import { svd } from '../../src/linalg/index.ts';
import { assertAllclose, randArray } from '../helpers.ts';

let seed = 1;
const factors = (rows: number, cols: number, k: number): Factors => ({
  b: randArray(rows * k, seed++),
  a: randArray(k * cols, seed++),
  rows,
  cols,
  k,
});

/** Dense C = A·B by the textbook triple loop (the reference does not share mm). */
function dense(a: ArrayLike<number>, b: ArrayLike<number>, m: number, k: number, n: number): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += a[i * k + p] * b[p * n + j];
      c[i * n + j] = s;
    }
  return c;
}
const transposed = (x: Float64Array, m: number, n: number) =>
  Float64Array.from({ length: m * n }, (_, i) => x[(i % m) * n + Math.floor(i / m)]);
const prod = (f: Factors) => dense(f.b, f.a, f.rows, f.k, f.cols);
const add = (x: Float64Array, y: ArrayLike<number>, c = 1) => x.map((v, i) => v + c * y[i]);

/** The best rank-r approximation of a dense [m, n] matrix and its singular values. */
function denseTruncation(p: Float64Array, m: number, n: number, r: number) {
  const { u, s, v, k } = svd(p, m, n);
  const out = new Float64Array(m * n);
  for (let j = 0; j < r; j++)
    for (let i = 0; i < m; i++) for (let c = 0; c < n; c++) out[i * n + c] += u[i * k + j] * s[j] * v[c * k + j];
  return { out, s };
}

test('truncatedSvd of a factored product equals the dense truncated SVD, split as B = U√S, A = √S·Vᵀ', () => {
  const f = factors(12, 9, 6);
  const t = truncatedSvd(f, 3);
  const { out, s } = denseTruncation(prod(f), 12, 9, 3);
  assertAllclose(prod(t), out, { rtol: 0, atol: 1e-10, what: 'B_r·A_r' });
  // the split: BᵀB = A·Aᵀ = diag(S_r)
  const btb = dense(transposed(t.b, 12, 3), t.b, 3, 12, 3);
  const aat = dense(t.a, transposed(t.a, 3, 9), 3, 9, 3);
  const diag = Float64Array.from({ length: 9 }, (_, i) => (i % 4 === 0 ? s[i / 4] : 0));
  assertAllclose(btb, diag, { rtol: 0, atol: 1e-10, what: 'BᵀB' });
  assertAllclose(aat, diag, { rtol: 0, atol: 1e-10, what: 'AAᵀ' });
  // Eckart–Young: what the truncation drops carries exactly the trailing singular values' energy
  const dropped = add(prod(f), prod(t), -1).reduce((e, x) => e + x * x, 0);
  const tail = [...s.slice(3)].reduce((e, x) => e + x * x, 0);
  assert.ok(Math.abs(dropped - tail) < 1e-9 * tail, `${dropped} vs ${tail}`);
});

test('truncatedSvd of a product of rank below r pads with zero factors and is exact', () => {
  const f = factors(7, 5, 2);
  const t = truncatedSvd(f, 4);
  assert.equal(t.k, 4);
  assertAllclose(prod(t), prod(f), { rtol: 0, atol: 1e-12, what: 'B·A' });
});

test('combine stacks Σ c_i·B_i·A_i into one product', () => {
  const [f, g] = [factors(6, 4, 2), factors(6, 4, 3)];
  const c = combine([
    { f, c: 0.5 },
    { f: g, c: -2 },
  ]);
  assert.equal(c.k, 5);
  assertAllclose(
    product(c),
    add(
      prod(f).map((x) => 0.5 * x),
      prod(g),
      -2,
    ),
    { rtol: 0, atol: 1e-12 },
  );
});

test('gradientAligned takes components r..2r−1 for B and 0..r−1 for A, scaled by out^¼/√γ', () => {
  const [out, inp, r, gamma] = [10, 8, 2, 16];
  const g = randArray(out * inp, 99);
  const ga = gradientAligned(g, out, inp, r, gamma);
  const { s } = svd(g, out, inp);
  const scale = out ** 0.25 / Math.sqrt(gamma);
  for (let j = 0; j < r; j++) {
    // A's row j is scale·v_j: ‖G·a_j‖ = scale·σ_j; B's column j is scale·u_(r+j): ‖Gᵀ·b_j‖ = scale·σ_(r+j)
    const aj = ga.a.slice(j * inp, (j + 1) * inp);
    const bj = Float64Array.from({ length: out }, (_, i) => ga.b[i * r + j]);
    const gaNorm = Math.hypot(...dense(g, aj, out, inp, 1));
    const gtb = Math.hypot(...dense(bj, g, 1, out, inp));
    assert.ok(Math.abs(gaNorm - scale * s[j]) < 1e-9, `‖G·a_${j}‖ = ${gaNorm}`);
    assert.ok(Math.abs(gtb - scale * s[r + j]) < 1e-9, `‖Gᵀ·b_${j}‖ = ${gtb}`);
    assert.ok(Math.abs(Math.hypot(...aj) - scale) < 1e-12 && Math.abs(Math.hypot(...bj) - scale) < 1e-12);
  }
  assert.throws(
    () => gradientAligned(g, out, inp, 5, gamma),
    (e) => e instanceof LorakitError && e.code === 'LK_CONFIG_INVALID' && e.message.includes('2r ≤ 8'),
  );
});

test('round-matching restores where the client left off: W + s·(start LoRA) = W_prev + s·(its last upload)', () => {
  const [out, inp, r, s] = [9, 7, 3, 2];
  const w0 = Float32Array.from(randArray(out * inp, 5));
  const merged = factors(out, inp, 6);
  const last = factors(out, inp, r); // the client's previous upload
  // a global LoRA whose difference to the upload has rank ≤ r (B_s = B_c·D, A_s = A_c), so nothing is truncated
  const d = [0.3, -1.2, 0.7];
  const global: Factors = { ...last, b: last.b.map((x, i) => x * d[i % r]) };
  const wPrev = add(Float64Array.from(w0), prod(merged), s); // the backbone the client trained on last round
  const w = shifted(w0, [
    { f: merged, c: s },
    { f: global, c: s },
  ]);
  assertAllclose(w, add(wPrev, prod(global), s), { rtol: 0, atol: 1e-5, what: 'W = W0 + s·(M + G_s)' });
  const rm = roundMatching(last, global, 1)!;
  const init = initFactors(null, rm, r)!;
  const start = add(Float64Array.from(w), prod(init), s);
  assertAllclose(start, add(wPrev, prod(last), s), { rtol: 0, atol: 1e-5, what: 'start' });
  // ζ scales it; no previous upload (a new or restarted client) or ζ = 0: nothing to match
  assertAllclose(
    product(roundMatching(last, global, 0.5)!),
    add(prod(last), prod(global), -1).map((x) => x / 2),
    {
      rtol: 0,
      atol: 1e-12,
    },
  );
  assert.equal(roundMatching(null, global, 1), null);
  assert.equal(roundMatching(last, global, 0), null);
  assert.equal(initFactors(null, null, r), null);
});

test('with Ŵ_ga the start is W − s·Ŵ_ga + s·trunc_r(Ŵ_ga + W_rm), the upload trunc_r(B·A − Ŵ_ga)', () => {
  const [out, inp, r, s] = [10, 8, 2, 2];
  const w = Float32Array.from(randArray(out * inp, 7));
  const ga = gradientAligned(randArray(out * inp, 8), out, inp, r, 64);
  const rm = roundMatching(factors(out, inp, r), factors(out, inp, r), 0.8)!;
  const init = initFactors(ga, rm, r)!;
  const target = add(prod(ga), prod(rm));
  assertAllclose(prod(init), denseTruncation(target, out, inp, r).out, { rtol: 0, atol: 1e-10, what: 'init' });
  const base = shifted(w, [{ f: ga, c: -s }]);
  assertAllclose(base, add(Float64Array.from(w), prod(ga), -s), { rtol: 0, atol: 1e-6, what: 'W − s·Ŵ_ga' });
  // only Ŵ_ga alone (round 1): the start is exactly W, the function does not move
  const alone = initFactors(ga, null, r)!;
  assertAllclose(add(Float64Array.from(base), prod(alone), s), w, { rtol: 0, atol: 1e-6, what: 'round-1 start' });
  const trained = factors(out, inp, r);
  const up = uploadFactors(trained, ga, r);
  const diff = add(prod(trained), prod(ga), -1);
  assertAllclose(prod(up), denseTruncation(diff, out, inp, r).out, { rtol: 0, atol: 1e-10, what: 'upload' });
  assertAllclose(prod(uploadFactors(trained, null, r)), prod(trained), { rtol: 0, atol: 1e-10 });
});
