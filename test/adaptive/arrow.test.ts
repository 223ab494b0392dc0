// Arrow routing: the prototypes (QR + small SVD, ΔW never formed) equal the top right-singular vectors of the dense
// ΔW from a full SVD, and the routed layer's output equals a float64 host reference of PEFT's Arrow forward (|x·vᵢ|,
// top-k, softmax over the kept ones with temperature, Σ gᵢ·sᵢ·BᵢAᵢx).
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { arrowGraph, poolFromLoras, topRightSingular } from '../../src/adaptive/index.ts';
import { Graph } from '../../src/graph/index.ts';
import { mm, Rng, svd } from '../../src/linalg/index.ts';
import type { LinearModule } from '../../src/nn/index.ts';
import { compile, shutdownRuntime } from '../../src/runtime/index.ts';
import { assertAllclose } from '../helpers.ts';
import { randomLora, TARGETS } from './tiny.ts';

after(shutdownRuntime);

test('prototypes equal the top right-singular vector of the dense ΔW (up to sign)', () => {
  const rng = new Rng(5);
  for (const [r, out, inF] of [
    [1, 7, 5],
    [3, 9, 12],
    [4, 3, 10], // r > out: B has fewer rows than columns
    [6, 20, 4], // r > in
  ]) {
    const a = Float64Array.from(rng.normalArray(r * inF));
    const b = Float64Array.from(rng.normalArray(out * r));
    const v = topRightSingular(a, b, r, inF, out);
    const dense = svd(mm(b, a, out, r, inF), out, inF);
    const ref = Array.from({ length: inF }, (_, j) => dense.v[j * dense.k]);
    const dot = ref.reduce((s, x, j) => s + x * v[j], 0);
    assert.ok(Math.abs(Math.abs(dot) - 1) < 1e-10, `r ${r}, [${out}, ${inF}]: |⟨v, v_dense⟩| = ${Math.abs(dot)}`);
    assertAllclose([Math.hypot(...v)], [1], { rtol: 1e-12 });
  }
});

test('the routed layer equals a float64 host reference of the Arrow forward', async () => {
  const adapters = [randomLora(11, 2, 2), randomLora(12, 3, 0.5), randomLora(13, 2, 1), randomLora(14, 4, 1.5)];
  const pool = poolFromLoras(['a', 'b', 'c', 'd'], adapters);
  const [path, out, inF] = TARGETS[1];
  const N = 7;
  const x = new Rng(3).normalArray(N * inF);
  const w0 = new Rng(4).normalArray(out * inF, 0.2);
  for (const [topK, temperature] of [
    [1, 1],
    [2, 0.5],
    [3, 2],
  ]) {
    const g = new Graph('arrow-layer');
    const ar = arrowGraph(g, pool, { topK, temperature }, 'f64');
    const xin = g.input('x', 'f64', [N, inF]);
    const W = g.constant(Float64Array.from(w0), 'f64', [out, inF]);
    const mod = {
      path,
      inFeatures: inF,
      outFeatures: out,
      weight: W,
      bias: null,
      fanInFanOut: false,
      base: (t) => t.matmul(W.transpose([1, 0])),
    } as LinearModule;
    g.output('y', ar.hooks.linear!(mod, xin));
    const s = await compile(g, { optimization: 'disabled' });
    const y = (await s.run({ ...ar.feeds(), x: Float64Array.from(x) })).y.data as Float64Array;
    await s.dispose();

    // host reference: prototypes from topRightSingular (checked above), the rest from the adapters' own factors
    const protos = adapters.map((ad) => {
      const m = ad.modules.get(path)!;
      return topRightSingular(m.a, m.b, m.r, inF, out);
    });
    const ref = new Float64Array(N * out);
    for (let t = 0; t < N; t++) {
      const xt = Array.from(x.subarray(t * inF, (t + 1) * inF));
      const sims = protos.map((p) => Math.abs(p.reduce((s2, v, j) => s2 + v * xt[j], 0)));
      const kept = sims
        .map((v, i) => [v, i] as const)
        .sort((p, q) => q[0] - p[0])
        .slice(0, topK);
      const mx = kept[0][0] / temperature;
      const e = kept.map(([v]) => Math.exp(v / temperature - mx));
      const z = e.reduce((p, q) => p + q, 0);
      for (let o = 0; o < out; o++) {
        let yo = 0;
        for (let j = 0; j < inF; j++) yo += w0[o * inF + j] * xt[j];
        kept.forEach(([, i], q) => {
          const m = adapters[i].modules.get(path)!;
          for (let rr = 0; rr < m.r; rr++) {
            let ax = 0;
            for (let j = 0; j < inF; j++) ax += m.a[rr * inF + j] * xt[j];
            yo += (e[q] / z) * m.scaling * m.b[o * m.r + rr] * ax;
          }
        });
        ref[t * out + o] = yo;
      }
    }
    assertAllclose(y, ref, { rtol: 1e-9, atol: 1e-10, what: `top_k ${topK}, T ${temperature}` });
  }
});
