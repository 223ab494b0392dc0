// LoRA-Mixer against independent references: the routed layer (MixtureModel's hook, soft top-k and hard domain
// routing) against a float64 host forward with every ΔW formed explicitly; the router's and the experts' gradients
// of a loss with the routing specialisation term against float64 central differences of the host model; the RSL
// value with both entropy signs against its host formula; the mixture folder round trip and config errors.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { LorakitError } from '../../../src/errors.ts';
import { Graph, grad } from '../../../src/graph/index.ts';
import type { LinearModule } from '../../../src/nn/index.ts';
import {
  expertTerm,
  MixtureModel,
  mixerRoute,
  parseMixtureConfig,
  routingSpecialisationLoss,
  softmax,
  topK,
} from '../../../src/peft/mixture/index.ts';
import { compile } from '../../../src/runtime/index.ts';
import { assertAllclose, randArray } from '../../helpers.ts';

const [E, R, D, O, K] = [3, 2, 5, 4, 2];

interface Host {
  x: Float64Array; // [N, D]
  w0: Float64Array; // [O, D]
  a: Float64Array; // [E, R, D]
  b: Float64Array; // [E, O, R]
  p: Float64Array; // [E, D]
}

/** ΔW_e = s·B_e·A_e [O, D], formed explicitly. */
function deltaW(h: Host, e: number, s: number): Float64Array {
  const dw = new Float64Array(O * D);
  for (let o = 0; o < O; o++)
    for (let i = 0; i < D; i++)
      for (let j = 0; j < R; j++) dw[o * D + i] += s * h.b[(e * O + o) * R + j] * h.a[(e * R + j) * D + i];
  return dw;
}

/** Per row: router probabilities, the top-K set and renormalised weights, y = (W0 + Σ w_e ΔW_e)·x. */
function hostForward(h: Host, s: number, hardExpert: number | null = null) {
  const N = h.x.length / D;
  const y = new Float64Array(N * O);
  const probs: number[][] = [];
  const masks: number[][] = [];
  const dws = Array.from({ length: E }, (_, e) => deltaW(h, e, s));
  for (let n = 0; n < N; n++) {
    const xr = h.x.subarray(n * D, n * D + D);
    const p = softmax(Array.from({ length: E }, (_, e) => xr.reduce((acc, v, i) => acc + v * h.p[e * D + i], 0)));
    const sel = topK(p, K);
    const mask = Array.from({ length: E }, (_, e) => (sel.includes(e) ? 1 : 0));
    const z = sel.reduce((acc, e) => acc + p[e], 0);
    const w = hardExpert === null ? mask.map((m, e) => (m * p[e]) / z) : mask.map((_, e) => (e === hardExpert ? 1 : 0));
    probs.push(Array.from(p));
    masks.push(mask);
    for (let o = 0; o < O; o++) {
      let acc = 0;
      for (let i = 0; i < D; i++) {
        let wi = h.w0[o * D + i];
        for (let e = 0; e < E; e++) wi += w[e] * dws[e][o * D + i];
        acc += wi * xr[i];
      }
      y[n * O + o] = acc;
    }
  }
  return { y, probs, masks };
}

/** RSL on the host: α·Σ p̄_i·f̄_i ± λ·mean_n H(p_n). */
function hostRsl(probs: number[][], masks: number[][], alpha: number, lambda: number, sign: '+' | '-'): number {
  const N = probs.length;
  let bal = 0;
  for (let e = 0; e < E; e++) {
    const pBar = probs.reduce((a, p) => a + p[e], 0) / N;
    const fBar = masks.reduce((a, m) => a + m[e], 0) / (N * K);
    bal += pBar * fBar;
  }
  const H = probs.reduce((a, p) => a - p.reduce((s, v) => s + v * Math.log(v), 0), 0) / N;
  return alpha * bal + (sign === '+' ? lambda * H : -lambda * H);
}

function hostValues(seed: number, N: number): Host {
  return {
    x: randArray(N * D, seed),
    w0: randArray(O * D, seed + 1),
    a: randArray(E * R * D, seed + 2),
    b: randArray(E * O * R, seed + 3),
    p: randArray(E * D, seed + 4, -2, 2),
  };
}

test('router and expert gradients of loss + RSL against float64 central differences (both entropy signs)', async () => {
  const N = 6;
  const h = hostValues(1, N);
  const c = randArray(N * O, 9);
  const [s, alpha, lambda] = [1.5, 0.3, 0.2];
  for (const sign of ['+', '-'] as const) {
    const g = new Graph('mixer-grad');
    const x = g.input('x', 'f64', [N, D]);
    const w0 = g.input('w0', 'f64', [O, D]);
    const a = g.input('a', 'f64', [E, R, D]);
    const b = g.input('b', 'f64', [E, O, R]);
    const p = g.input('p', 'f64', [E, D]);
    const route = mixerRoute(x, p, K);
    const y = x
      .matmul(w0.T)
      .add(expertTerm(x, route.weights, { a, b, router: p }, { experts: E, r: R, in: D, out: O }, s));
    const rsl = routingSpecialisationLoss(route.p, route.mask, { alpha, lambda, entropySign: sign, topK: K });
    const loss = y
      .mul(g.constant(c, 'f64', [N, O]))
      .sum()
      .add(rsl.value);
    g.output('y', y);
    g.output('rsl', rsl.value);
    const [dp, db, da] = grad(loss, [p, b, a]);
    g.output('dp', dp);
    g.output('db', db);
    g.output('da', da);
    const sess = await compile(g, { worker: false });
    const out = await sess.run({
      x: { data: h.x, shape: [N, D] },
      w0: { data: h.w0, shape: [O, D] },
      a: { data: h.a, shape: [E, R, D] },
      b: { data: h.b, shape: [E, O, R] },
      p: { data: h.p, shape: [E, D] },
    });
    await sess.dispose();
    const ref = hostForward(h, s);
    assertAllclose(out.y.data as Float64Array, ref.y, { rtol: 1e-12, atol: 1e-12, what: 'forward' });
    assertAllclose(out.rsl.data as Float64Array, [hostRsl(ref.probs, ref.masks, alpha, lambda, sign)], {
      rtol: 1e-12,
      what: `RSL (${sign})`,
    });
    const hostLoss = () => {
      const r = hostForward(h, s);
      return r.y.reduce((acc, v, i) => acc + v * c[i], 0) + hostRsl(r.probs, r.masks, alpha, lambda, sign);
    };
    for (const [name, v, got] of [
      ['router', h.p, out.dp],
      ['B', h.b, out.db],
      ['A', h.a, out.da],
    ] as const) {
      const step = 1e-6;
      const fd = Float64Array.from(v, (v0, k) => {
        v[k] = v0 + step;
        const lp = hostLoss();
        v[k] = v0 - step;
        const lm = hostLoss();
        v[k] = v0;
        return (lp - lm) / (2 * step);
      });
      assertAllclose(got.data as Float64Array, fd, { rtol: 1e-6, atol: 1e-8, what: `d${name} (${sign})` });
    }
  }
});

function linear(g: Graph, path: string, w0: Float64Array): LinearModule {
  const weight = g.constant(Float32Array.from(w0), 'f32', [O, D]);
  return {
    path,
    inFeatures: D,
    outFeatures: O,
    weight,
    bias: null,
    fanInFanOut: false,
    base: (x) => x.matmul(weight.T),
    inputGrad: (dy) => dy.matmul(weight),
    inputRows: (ids) => weight.gather(ids, 0),
  };
}

test('the routed layer (MixtureModel hook): soft top-k and hard domain routing against host-formed ΔW', async () => {
  const [B, T] = [2, 3];
  const path = 'model.layers.1.self_attn.q_proj';
  const cfg = parseMixtureConfig({ method: 'lora_mixer', num_experts: E, r: R, top_k: K, lora_alpha: 3 }, 'test');
  const mix = MixtureModel.create(cfg, [
    { kind: 'linear', path, inFeatures: D, outFeatures: O, weightName: `${path}.weight`, biasName: null },
    {
      kind: 'linear',
      path: 'model.layers.1.mlp.up_proj',
      inFeatures: D,
      outFeatures: O,
      weightName: 'u',
      biasName: null,
    },
  ]);
  assert.deepEqual(
    mix.modules.map((m) => m.path),
    [path],
    'LoRA-Mixer targets the attention projections by default',
  );
  const h = hostValues(20, B * T);
  mix.values.set(`${path}.experts_A`, Float32Array.from(h.a));
  mix.values.set(`${path}.experts_B`, Float32Array.from(h.b));
  mix.values.set(`${path}.router`, Float32Array.from(h.p));
  // float32 copies of what the graph sees, for the host reference
  const h32: Host = {
    ...h,
    x: Float64Array.from(Float32Array.from(h.x)),
    a: Float64Array.from(Float32Array.from(h.a)),
  };
  h32.b = Float64Array.from(Float32Array.from(h.b));
  h32.p = Float64Array.from(Float32Array.from(h.p));
  h32.w0 = Float64Array.from(Float32Array.from(h.w0));
  const domains = [2, 0]; // window 0 → expert 2, window 1 → expert 0
  for (const mode of ['soft', 'hard'] as const) {
    const g = new Graph('mixer-layer');
    const mg = mix.build(g, mode);
    const x = g.input('x', 'f32', [B, T, D]);
    g.output('y', mg.hooks.linear!(linear(g, path, h.w0), x));
    const sess = await compile(g, { worker: false });
    const feeds: Record<string, Float32Array> = Object.fromEntries(mix.values);
    feeds.x = Float32Array.from(h.x);
    if (mode === 'hard') feeds['mixture.route'] = Float32Array.from([0, 0, 1, 1, 0, 0]);
    const y = (await sess.run(feeds)).y.data as Float32Array;
    await sess.dispose();
    let expected: Float64Array;
    if (mode === 'soft') expected = hostForward(h32, 3 / R).y;
    else {
      expected = new Float64Array(B * T * O);
      for (let b = 0; b < B; b++) {
        const rows = { ...h32, x: h32.x.subarray(b * T * D, (b + 1) * T * D) };
        expected.set(hostForward(rows, 3 / R, domains[b]).y, b * T * O);
      }
    }
    assertAllclose(y, expected, { rtol: 1e-4, atol: 1e-5, what: `${mode} forward` });
  }
});

test('mixture folders round-trip; configs are strict', async () => {
  const cfg = parseMixtureConfig({ method: 'lora_mixer', num_experts: 2, r: 2, top_k: 1, entropy_sign: '-' }, 't');
  const mods = [
    { kind: 'linear' as const, path: 'm.q_proj', inFeatures: 3, outFeatures: 4, weightName: 'w', biasName: null },
  ];
  const mix = MixtureModel.create(cfg, mods);
  mix.values.set('m.q_proj.experts_B', Float32Array.from(randArray(2 * 4 * 2, 5)));
  const dir = mkdtempSync(join(tmpdir(), 'mixture-'));
  await mix.save(dir, 'models/demo-base');
  const back = await MixtureModel.load(dir);
  assert.deepEqual(back.config, mix.config);
  assert.deepEqual(back.modules, mix.modules);
  for (const [n, v] of mix.values) assert.deepEqual(back.values.get(n), v, n);
  const json = JSON.parse(readFileSync(join(dir, 'mixture_config.json'), 'utf8'));
  assert.equal(json.mixture_type, 'LORA_MIXER');
  assert.equal(mix.activatedParams(), 1 * 2 * (3 + 4));
  assert.deepEqual(mix.totalParams(), { experts: 2 * 2 * 7, router: 2 * 3 });

  const err = (raw: unknown) => {
    try {
      parseMixtureConfig(raw, 'run.yaml');
    } catch (e) {
      return e as LorakitError;
    }
    assert.fail('no error');
  };
  assert.match(err({ method: 'remix', topk: 2 }).message, /run\.yaml.*topk/);
  assert.match(err({ method: 'remix', top_k: 5, num_experts: 4 }).message, /top_k 5 must not exceed num_experts 4/);
  assert.match(err({ method: 'remix', samples: 1 }).message, /samples/);
  assert.equal(err({ method: 'moe' }).code, 'LK_CONFIG_INVALID');
});

test('pool LoRA folders as experts: ReMix averages its k active ΔW, LoRA-Mixer weights them to sum 1', async () => {
  const { readLora } = await import('../../../src/peft/compose/index.ts');
  const { loadModel } = await import('../../../src/models/index.ts');
  const model = await loadModel('test/fixtures/models/llama');
  const modules = model.modules();
  await model.close();
  const dirs = ['t1', 't2'].map((n) => `test/fixtures/compose/adapters/${n}`);
  const loras = await Promise.all(dirs.map(readLora));
  const path = [...loras[0].modules.keys()].find((p) => p.endsWith('q_proj'))!;
  const configs = [
    { method: 'remix', target_modules: ['q_proj', 'v_proj'], num_experts: 2, r: 4, top_k: 2, lora_alpha: 5 },
    { method: 'lora_mixer', target_modules: ['q_proj', 'v_proj'], num_experts: 2, r: 4, top_k: 2, lora_alpha: 3 },
  ];
  for (const raw of configs) {
    const mix = MixtureModel.create(parseMixtureConfig(raw, 'test'), modules);
    await mix.plugLoraFolders(dirs);
    const m = mix.modules.find((x) => x.path === path)!;
    const [N, Din, Dout] = [3, m.in, m.out];
    const xv = randArray(N * Din, 31);
    const g = new Graph('plugged');
    const mg = mix.build(g, raw.method === 'remix' ? 'top_k' : 'soft');
    const x = g.input('x', 'f32', [1, N, Din]);
    const zero = g.constant(new Float32Array(Dout * Din), 'f32', [Dout, Din]);
    const lin: LinearModule = {
      path,
      inFeatures: Din,
      outFeatures: Dout,
      weight: zero,
      bias: null,
      fanInFanOut: false,
      base: (t) => t.matmul(zero.T),
      inputGrad: (dy) => dy.matmul(zero),
      inputRows: (ids) => zero.gather(ids, 0),
    };
    g.output('y', mg.hooks.linear!(lin, x));
    const sess = await compile(g, { worker: false });
    const feeds: Record<string, Float32Array> = Object.fromEntries(mix.values);
    feeds.x = Float32Array.from(xv);
    const y = (await sess.run(feeds)).y.data as Float32Array;
    await sess.dispose();
    // the host: ΔW_i = s_i·B_i·A_i from the folders; ReMix: (ΔW_1 + ΔW_2)/2; LoRA-Mixer: p_1·ΔW_1 + p_2·ΔW_2
    const P = mix.values.get(`${path}.router`)!;
    const expected = new Float64Array(N * Dout);
    for (let n = 0; n < N; n++) {
      const xr = Array.from(Float32Array.from(xv.subarray(n * Din, (n + 1) * Din)));
      const p = softmax([0, 1].map((e) => xr.reduce((acc, v, i) => acc + v * P[e * Din + i], 0)));
      const w = raw.method === 'remix' ? [0.5, 0.5] : [p[0], p[1]];
      for (const [e, lora] of loras.entries()) {
        const src = lora.modules.get(path)!;
        for (let o = 0; o < Dout; o++) {
          let acc = 0;
          for (let j = 0; j < src.r; j++) {
            let ax = 0;
            for (let i = 0; i < Din; i++) ax += src.a[j * Din + i] * xr[i];
            acc += src.b[o * src.r + j] * ax;
          }
          expected[n * Dout + o] += w[e] * src.scaling * acc;
        }
      }
    }
    assertAllclose(y, expected, { rtol: 1e-4, atol: 1e-5, what: `${raw.method} with pool experts` });
  }
});
