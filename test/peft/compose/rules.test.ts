// The merge rules against float64 host references on small random inputs: each reference is written from the
// definition (TIES: trim, elect, disjoint mean; DARE: Bernoulli keep and 1/p rescale; Eckart–Young for SVD; the
// cross terms of `linear`), DARE's randomness statistically (keep rate, unbiasedness), and k-means / LoRA-LEGO
// against a brute-force search over every assignment.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { mm } from '../../../src/linalg/index.ts';
import {
  assignNearest,
  bernoulliSource,
  combineModule,
  combineTensors,
  disassemble,
  kmeans,
  lego,
  type ModuleSource,
} from '../../../src/peft/compose/index.ts';
import { randArray } from '../../helpers.ts';

const near = (got: ArrayLike<number>, want: ArrayLike<number>, tol: number, what: string) => {
  assert.equal(got.length, want.length, what);
  for (let i = 0; i < got.length; i++)
    assert.ok(Math.abs(got[i] - want[i]) <= tol, `${what}[${i}]: ${got[i]} vs ${want[i]}`);
};

const ts = [randArray(30, 1), randArray(30, 2), randArray(30, 3)];
const ws = [0.8, -0.5, 1.7];

/** The k largest-|·| entries of t by a threshold on the sorted magnitudes (no ties in random data). */
function topK(t: Float64Array, density: number): Float64Array {
  const k = Math.trunc(density * t.length);
  const thr = [...t].map(Math.abs).sort((a, b) => b - a)[k - 1];
  return t.map((v) => (k > 0 && Math.abs(v) >= thr ? v : 0));
}

test('magnitude_prune: Σ wᵢ·topk(tᵢ); ties: trimmed, sign elected by Σ (or by count), mean over agreeing signs', () => {
  const trimmed = ts.map((t) => topK(t, 0.4));
  const want = trimmed[0].map((_, e) => trimmed.reduce((s, t, i) => s + ws[i] * t[e], 0));
  near(combineTensors('magnitude_prune', ts, ws, { density: 0.4 }), want, 1e-15, 'magnitude_prune');
  for (const method of ['total', 'frequency'] as const) {
    const ties = trimmed[0].map((_, e) => {
      const vote = trimmed.reduce((s, t) => s + (method === 'total' ? t[e] : Math.sign(t[e])), 0);
      const elected = vote >= 0 ? 1 : -1;
      const agree = trimmed.map((t, i) => [t[e], i] as const).filter(([v]) => Math.sign(v) === elected);
      return agree.length ? agree.reduce((s, [v, i]) => s + ws[i] * v, 0) / agree.length : 0;
    });
    near(combineTensors('ties', ts, ws, { density: 0.4, signMethod: method }), ties, 1e-15, `ties ${method}`);
  }
  // density 1 prunes nothing; density 0 keeps nothing
  near(combineTensors('magnitude_prune', ts, ws, { density: 1 }), combineTensors('linear', ts, ws), 0, 'density 1');
  assert.ok(combineTensors('ties', ts, ws, { density: 0 }).every((v) => v === 0));
});

test('DARE: exact for given masks, keep rate = density within 4σ, kept entries ×1/p, unbiased over seeds', () => {
  const masks = ts.map((_, i) => Uint8Array.from(randArray(30, 10 + i), (v) => (v > 0 ? 1 : 0)));
  let call = 0;
  const keep = () => masks[call++];
  const want = ts[0].map((_, e) => ts.reduce((s, t, i) => s + (ws[i] * t[e] * masks[i][e]) / 0.25, 0));
  near(combineTensors('dare_linear', ts, ws, { density: 0.25, keep }), want, 1e-14, 'dare_linear with masks');

  const n = 200_000;
  const big = randArray(n, 7);
  const p = 0.3;
  const out = combineTensors('dare_linear', [big], [1], { density: p, keep: bernoulliSource(11) });
  let kept = 0;
  for (let i = 0; i < n; i++) {
    if (out[i] === 0) continue;
    kept++;
    assert.equal(out[i], big[i] / p);
  }
  const sigma = Math.sqrt((p * (1 - p)) / n);
  assert.ok(Math.abs(kept / n - p) < 4 * sigma, `keep rate ${kept / n}`);

  // E[dare(t)] = t: the mean over 2000 seeds is within 5 standard errors of t, entry by entry
  const t = randArray(8, 3);
  const sum = new Float64Array(8);
  const draws = 2000;
  for (let s = 0; s < draws; s++) {
    const d = combineTensors('dare_linear', [t], [1], { density: p, keep: bernoulliSource(s) });
    d.forEach((v, i) => (sum[i] += v));
  }
  t.forEach((v, i) => {
    const se = Math.abs(v) * Math.sqrt((1 - p) / p / draws);
    assert.ok(Math.abs(sum[i] / draws - v) < 5 * se + 1e-12, `entry ${i}: mean ${sum[i] / draws}, want ${v}`);
  });
});

const OUT = 6;
const IN = 5;
const src = (seed: number, r: number, scaling: number, weight: number): ModuleSource => ({
  a: randArray(r * IN, seed),
  b: randArray(OUT * r, seed + 100),
  r,
  scaling,
  weight,
});
const srcs = [src(1, 2, 2, 0.7), src(2, 2, 0.5, -1.2), src(3, 2, 4, 0.3)];
const deltaSum = (ss: readonly ModuleSource[]) => {
  const m = new Float64Array(OUT * IN);
  for (const s of ss) mm(s.b, s.a, OUT, s.r, IN).forEach((v, e) => (m[e] += s.weight * s.scaling * v));
  return m;
};
const shape = { out: OUT, in: IN, transposed: false };

test('cat is exact (BA = Σ wᵢsᵢBᵢAᵢ); linear has the cross terms Σᵢⱼ √|wᵢsᵢ|·sign(wⱼsⱼ)√|wⱼsⱼ|·BᵢAⱼ', () => {
  const cat = combineModule('cat', srcs, shape, { rank: 6 });
  near(mm(cat.b, cat.a, OUT, 6, IN), deltaSum(srcs), 1e-12, 'cat');
  const lin = combineModule('linear', srcs, shape, { rank: 2 });
  const want = new Float64Array(OUT * IN);
  for (const si of srcs) {
    for (const sj of srcs) {
      const wj = sj.weight * sj.scaling;
      const c = Math.sqrt(Math.abs(si.weight * si.scaling)) * Math.sign(wj) * Math.sqrt(Math.abs(wj));
      mm(si.b, sj.a, OUT, 2, IN).forEach((v, e) => (want[e] += c * v));
    }
  }
  near(mm(lin.b, lin.a, OUT, 2, IN), want, 1e-12, 'linear');
});

test('svd: exact at rank ≥ rank(Σ wᵢΔWᵢ); truncated, the residual is orthogonal to the kept row space', () => {
  const m = deltaSum(srcs); // rank 5 (= min(6, 5)) in general
  const full = combineModule('svd', srcs, shape, { rank: 5 });
  near(mm(full.b, full.a, OUT, 5, IN), m, 1e-12, 'svd full');
  const t = combineModule('svd', srcs, shape, { rank: 2 });
  const res = mm(t.b, t.a, OUT, 2, IN).map((v, e) => m[e] - v);
  // (M − BA)·Aᵀ = 0 and A·Aᵀ = I (Eckart–Young: the best rank-2 approximation keeps the top right singular vectors)
  for (let i = 0; i < OUT; i++)
    for (let j = 0; j < 2; j++) {
      let s = 0;
      for (let e = 0; e < IN; e++) s += res[i * IN + e] * t.a[j * IN + e];
      assert.ok(Math.abs(s) < 1e-12);
    }
  const padded = combineModule('svd', srcs, shape, { rank: 7 }); // past min(out, in): zero components
  near(mm(padded.b, padded.a, OUT, 7, IN), m, 1e-12, 'svd rank 7');
});

test('svd types: the factored solvers (stacked-factor SVD, top-k subspace iteration) give the dense SVD rank-k BA', () => {
  // block Σr + k = 20 ≤ 0.15·min(out, in): the pruned types take svdTop's subspace path, not its dense fallback
  const [out, inF, r, k] = [160, 140, 4, 4];
  const big = (seed: number, scaling: number, weight: number): ModuleSource => ({
    a: randArray(r * inF, seed),
    b: randArray(out * r, seed + 100),
    r,
    scaling,
    weight,
  });
  const ss = [big(11, 2, 0.7), big(12, 0.5, -1.2), big(13, 4, 0.3), big(14, 1, 0.9)];
  for (const type of ['svd', 'ties_svd', 'dare_linear_svd', 'dare_ties_svd', 'magnitude_prune_svd'] as const) {
    for (const transposed of [false, true]) {
      const o = { rank: k, density: 0.5 };
      const fast = combineModule(type, ss, { out, in: inF, transposed }, { ...o, keep: bernoulliSource(7) });
      const dense = combineModule(
        type,
        ss,
        { out, in: inF, transposed },
        { ...o, keep: bernoulliSource(7), svdSolver: 'dense' },
      );
      const want = mm(dense.b, dense.a, out, k, inF);
      const scale = want.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      near(mm(fast.b, fast.a, out, k, inF), want, 1e-8 * scale, `${type}${transposed ? ' transposed' : ''}`);
    }
  }
});

/** The lowest inertia over every assignment of n points to k non-empty clusters. */
function bruteForce(x: Float64Array, n: number, d: number, k: number) {
  let best = Infinity;
  let bestAssign: number[] = [];
  const a = new Array(n).fill(0);
  const total = k ** n;
  for (let code = 0; code < total; code++) {
    let c = code;
    for (let i = 0; i < n; i++) {
      a[i] = c % k;
      c = Math.floor(c / k);
    }
    if (new Set(a).size < k) continue;
    let inertia = 0;
    for (let j = 0; j < k; j++) {
      const members = a.flatMap((v, i) => (v === j ? [i] : []));
      for (let e = 0; e < d; e++) {
        const mean = members.reduce((s, i) => s + x[i * d + e], 0) / members.length;
        for (const i of members) inertia += (x[i * d + e] - mean) ** 2;
      }
    }
    if (inertia < best) [best, bestAssign] = [inertia, [...a]];
  }
  return { inertia: best, assign: bestAssign };
}

test('k-means reaches the brute-force optimum on small instances, and its result is a Lloyd fixed point', () => {
  for (const [seed, n, k] of [
    [1, 8, 3],
    [2, 9, 2],
    [3, 7, 4],
  ]) {
    const d = 3;
    const x = randArray(n * d, seed);
    const km = kmeans(x, n, d, k, { seed, restarts: 10 });
    const bf = bruteForce(x, n, d, k);
    assert.ok(Math.abs(km.inertia - bf.inertia) < 1e-12, `seed ${seed}: ${km.inertia} vs optimum ${bf.inertia}`);
    assert.deepEqual([...assignNearest(x, n, km.centroids, k, d).assign], [...km.assign]);
  }
});

test('LoRA-LEGO equals a host reference built on the brute-force clustering of the units', () => {
  const k = 3;
  const ss = [src(4, 3, 2, 0.6), src(5, 3, 1, -0.9)];
  const { u, n } = disassemble(ss, OUT, IN);
  const d = OUT + IN;
  // every unit reassembles its source: Σ over a source's units of b·aᵀ = wsBA
  for (let t = 0; t < 2; t++) {
    const m = new Float64Array(OUT * IN);
    for (let i = 3 * t; i < 3 * t + 3; i++)
      for (let o = 0; o < OUT; o++) for (let e = 0; e < IN; e++) m[o * IN + e] += u[i * d + o] * u[i * d + OUT + e];
    const s = ss[t];
    near(
      m,
      mm(s.b, s.a, OUT, 3, IN).map((v) => v * s.weight * s.scaling),
      1e-12,
      `units of source ${t}`,
    );
  }
  const bf = bruteForce(u, n, d, k);
  const ref = { a: new Float64Array(k * IN), b: new Float64Array(OUT * k) };
  const gamma = Math.sqrt(3 / k); // mean source rank 3
  for (let j = 0; j < k; j++) {
    const members = bf.assign.flatMap((v, i) => (v === j ? [i] : []));
    const mu = Array.from({ length: d }, (_, e) => members.reduce((s, i) => s + u[i * d + e], 0) / members.length);
    const meanNorm = members.reduce((s, i) => s + Math.hypot(...u.subarray(i * d, i * d + d)), 0) / members.length;
    const scale = meanNorm / Math.hypot(...mu);
    for (let o = 0; o < OUT; o++) ref.b[o * k + j] = mu[o] * scale * gamma;
    for (let e = 0; e < IN; e++) ref.a[j * IN + e] = mu[OUT + e] * scale;
  }
  const got = lego(ss, OUT, IN, { rank: k, restarts: 10 });
  // clusters are unordered: compare the products
  near(mm(got.b, got.a, OUT, k, IN), mm(ref.b, ref.a, OUT, k, IN), 1e-12, 'lego');
  // k = all units, no reweighting: every unit is its own cluster, so LEGO is exactly cat
  const all = lego(ss, OUT, IN, { rank: 6, outputReweighting: 'none', parameterReweighting: false });
  near(mm(all.b, all.a, OUT, 6, IN), deltaSum(ss), 1e-12, 'lego k = n');
});
