// ReMix against independent references: the RLOO router-gradient estimator's exact expectation (every M-tuple of
// ordered selections enumerated) against the closed-form gradient of E_J[L(J)] on a toy categorical distribution
// (and that gradient against float64 central differences); log Q and its gradient against finite differences;
// Gumbel-top-k sampling without replacement, on the host and in the graph, against Q(J) by a chi-square test; the
// graph's surrogate gradient against the host RLOO formula; the routed layer (through MixtureModel's hook) against a
// float64 host forward with ΔW formed explicitly, sampled and top-k; the effective support size.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Graph, grad } from '../../../src/graph/index.ts';
import { Rng } from '../../../src/linalg/index.ts';
import type { LinearModule } from '../../../src/nn/index.ts';
import {
  effectiveSupport,
  gradLogProbOrdered,
  gumbelArray,
  logProbOrdered,
  MixtureModel,
  orderedSelections,
  parseMixtureConfig,
  remixRoute,
  remixSurrogate,
  rlooGradient,
  sampleWithoutReplacement,
  softmax,
  topK,
} from '../../../src/peft/mixture/index.ts';
import { compile } from '../../../src/runtime/index.ts';
import { assertAllclose, randArray } from '../../helpers.ts';

const Z = [0.3, -0.8, 1.1, 0.2]; // toy router logits, n = 4
const K = 2;
const SEL = orderedSelections(Z.length, K); // 12 ordered selections
// an arbitrary loss per unordered set (the SFT loss does not see the order)
const setLoss = (s: readonly number[]) => Math.sin(1 + 3 * Math.min(...s) + 7 * Math.max(...s));

/** E_J[L(J)] = Σ_J Q(J; z)·L(J), enumerated. */
function expectedLoss(z: readonly number[]): number {
  const q = softmax(z);
  return SEL.reduce((s, J) => s + Math.exp(logProbOrdered(q, J)) * setLoss(J), 0);
}

/** The closed-form gradient Σ_J L(J)·Q(J)·∇ log Q(J). */
function closedForm(z: readonly number[]): Float64Array {
  const q = softmax(z);
  const g = new Float64Array(z.length);
  for (const J of SEL) {
    const w = Math.exp(logProbOrdered(q, J)) * setLoss(J);
    gradLogProbOrdered(z, J).forEach((v, i) => {
      g[i] += w * v;
    });
  }
  return g;
}

function central(f: (z: number[]) => number, z: readonly number[], h = 1e-6): Float64Array {
  return Float64Array.from(z, (_, i) => {
    const zp = [...z],
      zm = [...z];
    zp[i] += h;
    zm[i] -= h;
    return (f(zp) - f(zm)) / (2 * h);
  });
}

test('Q(J) sums to 1 over ordered selections; ∇ log Q and the closed-form gradient match central differences', () => {
  const q = softmax(Z);
  assertAllclose([SEL.reduce((s, J) => s + Math.exp(logProbOrdered(q, J)), 0)], [1], { atol: 1e-14 });
  for (const J of SEL) {
    const fd = central((z) => logProbOrdered(softmax(z), J), Z);
    assertAllclose(gradLogProbOrdered(Z, J), fd, { rtol: 1e-7, atol: 1e-8, what: `∇ log Q(${J})` });
  }
  assertAllclose(closedForm(Z), central(expectedLoss, Z), { rtol: 1e-7, atol: 1e-9, what: '∇ E[L]' });
});

test('the RLOO estimator is unbiased: its exact expectation over all M-tuples is the closed-form gradient', () => {
  const q = softmax(Z);
  const truth = closedForm(Z);
  for (const M of [2, 3]) {
    const mean = new Float64Array(Z.length);
    const tuple = (prefix: number[][]) => {
      if (prefix.length === M) {
        const p = prefix.reduce((s, J) => s * Math.exp(logProbOrdered(q, J)), 1);
        const est = rlooGradient(
          prefix.map(setLoss),
          prefix.map((J) => gradLogProbOrdered(Z, J)),
        );
        est.forEach((v, i) => {
          mean[i] += p * v;
        });
        return;
      }
      for (const J of SEL) tuple([...prefix, J]);
    };
    tuple([]);
    assertAllclose(mean, truth, { rtol: 1e-10, atol: 1e-12, what: `E[RLOO], M = ${M}` });
  }
  // the baseline matters: a constant shift of every loss leaves the estimate unchanged
  const Js = [SEL[0], SEL[5], SEL[9]];
  const grads = Js.map((J) => gradLogProbOrdered(Z, J));
  assertAllclose(
    rlooGradient(Js.map(setLoss), grads),
    rlooGradient(
      Js.map((J) => setLoss(J) + 10),
      grads,
    ),
    { atol: 1e-12 },
  );
});

/** Chi-square statistic of `counts` of the ordered selections against Q(J)·n. */
function chiSquare(counts: Map<string, number>, q: Float64Array, n: number): number {
  let chi = 0;
  for (const J of SEL) {
    const e = n * Math.exp(logProbOrdered(q, J));
    const o = counts.get(J.join()) ?? 0;
    chi += ((o - e) * (o - e)) / e;
  }
  return chi;
}
// χ² with 11 degrees of freedom: P(χ² > 31.26) = 0.001
const CHI_11_P001 = 31.26;

test('Gumbel-top-k samples ordered selections with probability Q(J) (host and graph, chi-square)', async () => {
  const q = softmax(Z);
  const n = 20000;
  const rng = new Rng(7);
  const host = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const key = sampleWithoutReplacement(q, K, rng).join();
    host.set(key, (host.get(key) ?? 0) + 1);
  }
  assert.ok(chiSquare(host, q, n) < CHI_11_P001, `host χ² ${chiSquare(host, q, n)}`);

  // the graph: one input row repeated n times (x = e₀, router column 0 = the logits), fresh noise per row
  const g = new Graph('remix-sample');
  const x = g.input('x', 'f32', [n, 2]);
  const router = g.input('router', 'f32', [4, 2]);
  const noise = g.input('noise', 'f32', [n, 4]);
  const r = remixRoute(x, router, K, noise);
  g.output('idx', r.indices);
  const s = await compile(g, { worker: false });
  const xs = new Float32Array(2 * n).map((_, i) => (i % 2 === 0 ? 1 : 0));
  const out = await s.run({
    x: { data: xs, shape: [n, 2] },
    router: { data: Float32Array.from([Z[0], 0, Z[1], 0, Z[2], 0, Z[3], 0]), shape: [4, 2] },
    noise: { data: gumbelArray(new Rng(8), 4 * n), shape: [n, 4] },
  });
  await s.dispose();
  const idx = out.idx.data as BigInt64Array;
  const graph = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const key = `${idx[2 * i]},${idx[2 * i + 1]}`;
    graph.set(key, (graph.get(key) ?? 0) + 1);
  }
  assert.ok(chiSquare(graph, q, n) < CHI_11_P001, `graph χ² ${chiSquare(graph, q, n)}`);
});

test('the graph surrogate: log Q per row, and a router gradient equal to the host RLOO estimate', async () => {
  const [M, B, D, E, k] = [3, 2, 5, 4, 2];
  const N = M * B;
  const xv = randArray(N * D, 1);
  const pv = randArray(E * D, 2);
  const nv = Float64Array.from(gumbelArray(new Rng(3), N * E));
  const Lv = randArray(N, 4, 1, 2); // losses that do not depend on the router (as the SFT loss under a fixed routing)
  const g = new Graph('remix-rloo');
  const x = g.input('x', 'f64', [N, D]);
  const router = g.input('router', 'f64', [E, D]);
  const noise = g.input('noise', 'f64', [N, E]);
  const L = g.input('L', 'f64', [M, B]);
  const r = remixRoute(x, router, k, noise);
  const loss = remixSurrogate(L, r.logQ!.reshape([M, B]));
  g.output('idx', r.indices);
  g.output('logQ', r.logQ!);
  g.output('loss', loss);
  g.output('dP', grad(loss, [router])[0]);
  const s = await compile(g, { worker: false });
  const out = await s.run({
    x: { data: xv, shape: [N, D] },
    router: { data: pv, shape: [E, D] },
    noise: { data: nv, shape: [N, E] },
    L: { data: Lv, shape: [M, B] },
  });
  await s.dispose();
  const idx = out.idx.data as BigInt64Array;
  const expected = new Float64Array(E * D);
  for (let b = 0; b < B; b++) {
    const losses: number[] = [];
    const grads: Float64Array[] = [];
    for (let m = 0; m < M; m++) {
      const row = m * B + b;
      const xr = xv.subarray(row * D, row * D + D);
      const z = Array.from({ length: E }, (_, e) => xr.reduce((a, v, i) => a + v * pv[e * D + i], 0));
      const sel = topK(
        softmax(z).map((v, e) => Math.log(v) + nv[row * E + e]),
        k,
      );
      assert.deepEqual(sel, [Number(idx[row * k]), Number(idx[row * k + 1])], `row ${row}: the Gumbel-top-k selection`);
      assertAllclose([(out.logQ.data as Float64Array)[row]], [logProbOrdered(softmax(z), sel)], { rtol: 1e-12 });
      // ∇_P log Q = (∂ log Q/∂z) ⊗ x
      const dz = gradLogProbOrdered(z, sel);
      grads.push(Float64Array.from({ length: E * D }, (_, j) => dz[Math.floor(j / D)] * xr[j % D]));
      losses.push(Lv[row]);
    }
    rlooGradient(losses, grads).forEach((v, j) => {
      expected[j] += v / B;
    });
  }
  assertAllclose(out.loss.data as Float64Array, [Lv.reduce((a, v) => a + v, 0) / N], { rtol: 1e-12 });
  assertAllclose(out.dP.data as Float64Array, expected, { rtol: 1e-9, atol: 1e-12, what: 'router gradient' });
});

/** A Linear module of the test: W0 [out, in] as a constant, base(x) = x·W0ᵀ. */
function linear(g: Graph, path: string, w0: Float64Array, inF: number, outF: number): LinearModule {
  const weight = g.constant(Float32Array.from(w0), 'f32', [outF, inF]);
  return {
    path,
    inFeatures: inF,
    outFeatures: outF,
    weight,
    bias: null,
    fanInFanOut: false,
    base: (x) => x.matmul(weight.T),
    inputGrad: (dy) => dy.matmul(weight),
    inputRows: (ids) => weight.gather(ids, 0),
  };
}

test('the routed layer (MixtureModel hook) vs a float64 host forward with ΔW formed, sampled and top-k', async () => {
  const [B, T, D, O] = [2, 3, 6, 5];
  const path = 'model.layers.0.mlp.up_proj';
  const cfg = parseMixtureConfig({ method: 'remix', num_experts: 4, r: 2, top_k: 2, lora_alpha: 3 }, 'test');
  const mix = MixtureModel.create(cfg, [
    { kind: 'linear', path, inFeatures: D, outFeatures: O, weightName: `${path}.weight`, biasName: null },
  ]);
  mix.values.set(`${path}.experts_B`, Float32Array.from(randArray(4 * O * 2, 11))); // nonzero experts
  mix.values.set(`${path}.router`, Float32Array.from(randArray(4 * D, 12, -2, 2)));
  const w0 = randArray(O * D, 13);
  const xv = Float32Array.from(randArray(B * T * D, 14));
  const nv = gumbelArray(new Rng(15), B * T * 4);
  const omega = 3 / (2 * 2);
  for (const mode of ['sample', 'top_k'] as const) {
    const g = new Graph('remix-layer');
    const mg = mix.build(g, mode);
    const x = g.input('x', 'f32', [B, T, D]);
    g.output('y', mg.hooks.linear!(linear(g, path, w0, D, O), x));
    const s = await compile(g, { worker: false });
    const feeds: Record<string, Float32Array | { data: Float32Array; shape: number[] }> = Object.fromEntries(
      mix.values,
    );
    feeds.x = xv;
    if (mode === 'sample') feeds[mg.noise[0].name] = nv;
    const y = (await s.run(feeds)).y.data as Float32Array;
    await s.dispose();
    const A = mix.values.get(`${path}.experts_A`)!;
    const Bm = mix.values.get(`${path}.experts_B`)!;
    const P = mix.values.get(`${path}.router`)!;
    const expected = new Float64Array(B * T * O);
    for (let n = 0; n < B * T; n++) {
      const xr = Array.from(xv.subarray(n * D, n * D + D));
      const z = [0, 1, 2, 3].map((e) => xr.reduce((a, v, i) => a + v * P[e * D + i], 0));
      const q = softmax(z);
      const sel =
        mode === 'sample'
          ? topK(
              q.map((v, e) => Math.log(v) + nv[n * 4 + e]),
              2,
            )
          : topK(q, 2);
      // W = W0 + ω·Σ_{e ∈ sel} B_e·A_e, formed explicitly
      const W = Float64Array.from(w0);
      for (const e of sel)
        for (let o = 0; o < O; o++)
          for (let i = 0; i < D; i++)
            for (let j = 0; j < 2; j++) W[o * D + i] += omega * Bm[(e * O + o) * 2 + j] * A[(e * 2 + j) * D + i];
      for (let o = 0; o < O; o++) expected[n * O + o] = xr.reduce((a, v, i) => a + v * W[o * D + i], 0);
    }
    assertAllclose(y, expected, { rtol: 1e-4, atol: 1e-5, what: `${mode} forward` });
  }
});

test('effective support size: k equal weights give k, one expert gives 1, ‖π‖₁²/‖π‖₂² otherwise', () => {
  assert.equal(effectiveSupport([0, 1, 0, 1]), 2);
  assert.equal(effectiveSupport([0, 0.25, 0, 0]), 1);
  assertAllclose([effectiveSupport([0.5, 0.3, 0.2])], [1 / (0.25 + 0.09 + 0.04)], { rtol: 1e-14 });
});
