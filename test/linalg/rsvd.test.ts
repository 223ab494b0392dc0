// Randomized SVD: torch.svd_lowrank reproduced from its own sketch (fixture), agreement with the exact SVD where
// the spectrum has a gap, the power-iteration error decreasing towards the Eckart–Young optimum where it has none,
// and the ONNX Runtime products agreeing with the host ones.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Rng, svd, svdLowrank } from '../../src/linalg/index.ts';
import { LorakitError } from '../../src/errors.ts';
import { assertAllclose } from '../helpers.ts';
import { alignSigns, frob, orthoError, relError, subspaceGap, tr, usv, withSpectrum } from './helpers.ts';

const fixture = JSON.parse(readFileSync(new URL('../fixtures/linalg/torch.json', import.meta.url), 'utf8'));
const code = (c: string, re?: RegExp) => (e: unknown) =>
  e instanceof LorakitError && e.code === c && (!re || re.test(e.message));

for (const c of fixture.svd_lowrank) {
  test(`svdLowrank reproduces torch.svd_lowrank from the same sketch: ${c.name} [${c.m}, ${c.n}], q ${c.q}`, async () => {
    const f64 = c.dtype === 'float64';
    const a = (f64 ? Float64Array : Float32Array).from(c.a.flat() as number[]);
    const omega = Float64Array.from(c.omega.flat() as number[]);
    // float64: torch and lorakit differ only in rounding; float32: torch's products round to float32.
    const tol = f64 ? 1e-12 : 5e-6;
    for (const engine of ['host', 'ort'] as const) {
      const r = await svdLowrank(a, c.m, c.n, { q: c.q, niter: c.niter, omega, engine });
      const what = `${c.name} (${engine})`;
      assertAllclose(r.s, c.s, { rtol: tol, atol: 0, what: `${what}: S` });
      // The final small SVD's signs are LAPACK's choice; everything else (QR signs included) matches.
      assertAllclose(alignSigns(r.u, c.u.flat(), c.m, c.q), c.u.flat(), { rtol: 0, atol: tol, what: `${what}: U` });
      assertAllclose(alignSigns(r.v, c.v.flat(), c.n, c.q), c.v.flat(), { rtol: 0, atol: tol, what: `${what}: V` });
    }
  });
}

test('with a spectral gap the top-r singular triplets agree with the exact SVD (tall and wide)', async () => {
  const rng = new Rng(1);
  const r = 6;
  const s0 = [10, 9, 8, 7, 6, 5, ...Array.from({ length: 34 }, (_, i) => 0.05 / (i + 1))];
  for (const [m, n] of [
    [120, 40],
    [40, 120],
  ]) {
    const { a } = withSpectrum(rng, m, n, s0);
    const exact = svd(a, m, n);
    const k = exact.k;
    const approx = await svdLowrank(a, m, n, { q: r, niter: 2, rng: new Rng(7), engine: 'host' });
    assert.equal(approx.k, r);
    assertAllclose(approx.s, exact.s.subarray(0, r), { rtol: 1e-6, atol: 0, what: `[${m}, ${n}] top S` });
    assert.ok(orthoError(approx.u, m, r) < 1e-13 && orthoError(approx.v, n, r) < 1e-13, 'U or V not orthonormal');
    assert.ok(subspaceGap(approx.u, r, exact.u, k, m, r) < 1e-6, `[${m}, ${n}]: left subspaces differ`);
    assert.ok(subspaceGap(approx.v, r, exact.v, k, n, r) < 1e-6, `[${m}, ${n}]: right subspaces differ`);
  }
});

test('without a gap the error shrinks with niter towards the Eckart–Young optimum and never beats it', async () => {
  const rng = new Rng(2);
  const [m, n, q] = [80, 60, 8];
  const s0 = Array.from({ length: 60 }, (_, i) => 1 / (i + 1)); // slow decay: σ9/σ8 = 0.89
  const { a } = withSpectrum(rng, m, n, s0);
  const optimal = Math.sqrt(s0.slice(q).reduce((t, x) => t + x * x, 0)); // ‖A − A_q‖_F for the best rank-q A_q
  const errors: number[] = [];
  for (const niter of [0, 1, 2, 4, 8]) {
    const f = await svdLowrank(a, m, n, { q, niter, rng: new Rng(3), engine: 'host' });
    const approx = usv(f.u, f.s, f.v, m, n, q);
    errors.push(frob(Float64Array.from(a, (x, i) => x - approx[i])));
  }
  for (const e of errors) assert.ok(e >= optimal * (1 - 1e-12), `error ${e} below the optimum ${optimal}`);
  for (let i = 1; i < errors.length; i++)
    assert.ok(errors[i] < errors[i - 1], `error grew with more iterations: ${errors.map((e) => e.toFixed(5))}`);
  assert.ok(errors[0] > 1.05 * optimal, 'niter 0 is already optimal: the test matrix has too easy a spectrum');
  assert.ok(errors[4] < 1.01 * optimal, `niter 8 is ${errors[4] / optimal}× the optimum`);
});

test('ORT products equal the host products in float64, and float32 weights run in float32 on ORT', async () => {
  const rng = new Rng(4);
  for (const [m, n] of [
    [300, 260],
    [260, 300],
  ]) {
    const { a } = withSpectrum(rng, m, n, [5, 4, 3, 2, 1, 0.5, 0.25, 0.1]);
    const opts = () => ({ q: 5, niter: 3, rng: new Rng(9) }); // a fresh Rng each time: drawing advances it
    const host = await svdLowrank(a, m, n, { ...opts(), engine: 'host' });
    const ort = await svdLowrank(a, m, n, { ...opts(), engine: 'ort' });
    assertAllclose(ort.s, host.s, { rtol: 1e-12, atol: 0, what: `[${m}, ${n}] S` });
    assert.ok(relError(ort.u, host.u) < 1e-10 && relError(ort.v, host.v) < 1e-10, 'ORT and host vectors differ');
    const f32 = await svdLowrank(Float32Array.from(a), m, n, opts()); // m·n > 65,536: 'auto' picks ORT, float32
    assertAllclose(f32.s, host.s, { rtol: 1e-5, atol: 0, what: `[${m}, ${n}] float32 S` });
  }
});

test('the same seed gives the same result; the default sketch is seeded', async () => {
  const rng = new Rng(5);
  const { a } = withSpectrum(rng, 30, 20, [3, 2, 1, 0.5]);
  const x = await svdLowrank(a, 30, 20, { q: 3 });
  const y = await svdLowrank(a, 30, 20, { q: 3 });
  assert.deepEqual(x, y);
  const z = await svdLowrank(tr(a, 30, 20), 20, 30, { q: 3 });
  assertAllclose(z.s, x.s, { rtol: 1e-12, atol: 0, what: 'S of Aᵀ' });
});

test('svdLowrank rejects a bad q, niter or sketch shape with lorakit errors', async () => {
  const a = new Float64Array(12);
  await assert.rejects(svdLowrank(a, 3, 4, { q: 4 }), code('LK_INVALID_ARGUMENT', /q must be an integer in 1..3/));
  await assert.rejects(svdLowrank(a, 3, 4, { q: 2, niter: -1 }), code('LK_INVALID_ARGUMENT', /niter/));
  await assert.rejects(
    svdLowrank(a, 3, 4, { q: 2, omega: new Float64Array(8) }),
    code('LK_SHAPE_MISMATCH', /omega should be \[3, 2\]/),
  );
});
