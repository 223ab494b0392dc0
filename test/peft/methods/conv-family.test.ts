// The conv LoRA/DoRA family of the SAH U-Net paper (lora_c, conv_lora, cp_lora, dora_c, conv_dora, cp_dora) on one
// Conv2d with every geometry argument in play (3×3 kernel, stride 2, padding 2, dilation 2), against a float64 host
// reference: ΔW formed explicitly from each method's formula with this file's own loops, the adapted kernel
// (W0 + ΔW, or DoRA's m ⊙ (W0 + ΔW)/‖W0 + ΔW‖) run through a host convolution. The unmerged graph, the merged
// weights, and the DoRA forms' factor gradients (the norm held constant, DoRA §4.3, by finite differences of the host
// reference) are compared with it. The contract test covers identity at init, merge == unmerged, save/load, resume.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LorakitError } from '../../../src/errors.ts';
import { Graph, grad } from '../../../src/graph/index.ts';
import { Rng } from '../../../src/linalg/index.ts';
import { type Conv2dInfo, createContext, WeightSource } from '../../../src/nn/index.ts';
import { type AdaptableBase, PeftModel } from '../../../src/peft/index.ts';
import { compile } from '../../../src/runtime/index.ts';
import { assertAllclose } from '../../helpers.ts';

const [CIN, COUT, K, N, H, W] = [3, 4, 3, 2, 7, 6];
const GEO = {
  stride: [2, 2] as [number, number],
  padding: [2, 2] as [number, number],
  dilation: [2, 2] as [number, number],
};

function convModule(groups = 1): Conv2dInfo {
  return {
    kind: 'conv2d',
    path: 'net.conv',
    inChannels: CIN * groups,
    outChannels: COUT * groups,
    kernel: [K, K],
    ...GEO,
    groups,
    weightName: 'net.conv.weight',
    biasName: 'net.conv.bias',
  };
}

const rng = new Rng(21);
const W0 = rng.normalArray(COUT * CIN * K * K, 0.4); // [out, in, k, k]
const BIAS = rng.normalArray(COUT, 0.1);
const X = rng.normalArray(N * CIN * H * W, 1); // [N, in, H, W]
const weights = new Map([
  ['net.conv.weight', W0],
  ['net.conv.bias', BIAS],
]);
const base: AdaptableBase = {
  modules: [convModule()],
  outputHead: null,
  readWeight: async (n) => Float32Array.from(weights.get(n)!),
};
const outSize = (n: number) => Math.floor((n + 2 * GEO.padding[0] - GEO.dilation[0] * (K - 1) - 1) / GEO.stride[0]) + 1;
const [OH, OW] = [outSize(H), outSize(W)];

/** Host float64 conv of X with kernel w [out, in, k, k] and the bias, [N, out, OH, OW]. */
function hostConv(w: ArrayLike<number>): Float64Array {
  const y = new Float64Array(N * COUT * OH * OW);
  for (let n = 0; n < N; n++)
    for (let o = 0; o < COUT; o++)
      for (let a = 0; a < OH; a++)
        for (let b = 0; b < OW; b++) {
          let s = BIAS[o];
          for (let c = 0; c < CIN; c++)
            for (let p = 0; p < K; p++)
              for (let q = 0; q < K; q++) {
                const [r, t] = [a * 2 - 2 + 2 * p, b * 2 - 2 + 2 * q]; // stride 2, padding 2, dilation 2
                if (r < 0 || r >= H || t < 0 || t >= W) continue;
                s += X[((n * CIN + c) * H + r) * W + t] * w[((o * CIN + c) * K + p) * K + q];
              }
          y[((n * COUT + o) * OH + a) * OW + b] = s;
        }
  return y;
}

type Values = Record<string, ArrayLike<number>>;
const S = 6 / 2; // lora_alpha / r

/** ΔW [out, in, k, k] of each factorisation, from its paper's formula. */
const DELTA: Record<string, (p: Values, r: number) => Float64Array> = {
  // LoRA-C: ΔW[o, i, h, w] = s·Σ_j B[o, j]·A[j, i, h, w]
  matrix(p, r) {
    const d = new Float64Array(COUT * CIN * K * K);
    for (let o = 0; o < COUT; o++)
      for (let e = 0; e < CIN * K * K; e++) {
        for (let j = 0; j < r; j++)
          d[o * CIN * K * K + e] += S * p['lora_B.weight'][o * r + j] * p['lora_A.weight'][j * CIN * K * K + e];
      }
    return d;
  },
  // loralib: the (out·k)×(in·k) product B·A, its memory read as [out, in, k, k]
  loralib(p, r) {
    const [rows, cols, inner] = [COUT * K, CIN * K, r * K];
    const d = new Float64Array(COUT * CIN * K * K);
    for (let o = 0; o < COUT; o++)
      for (let i = 0; i < CIN; i++)
        for (let h = 0; h < K; h++)
          for (let w = 0; w < K; w++) {
            const flat = ((o * CIN + i) * K + h) * K + w;
            const [row, col] = [Math.floor(flat / cols), flat % cols];
            assert.ok(row < rows);
            let s = 0;
            for (let j = 0; j < inner; j++) s += p.lora_B[row * inner + j] * p.lora_A[j * cols + col];
            d[flat] = S * s;
          }
    return d;
  },
  // CP: ΔW[o, i, h, w] = s·Σ_j U_o[o, j]·U_i[i, j]·U_h[h, j]·U_w[w, j]
  cp(p, r) {
    const d = new Float64Array(COUT * CIN * K * K);
    for (let o = 0; o < COUT; o++)
      for (let i = 0; i < CIN; i++)
        for (let h = 0; h < K; h++)
          for (let w = 0; w < K; w++)
            for (let j = 0; j < r; j++)
              d[((o * CIN + i) * K + h) * K + w] +=
                S * p.cp_out[o * r + j] * p.cp_in[i * r + j] * p.cp_h[h * r + j] * p.cp_w[w * r + j];
    return d;
  },
};

/** The adapted kernel: W0 + ΔW, or with DoRA m ⊙ (W0 + ΔW)/n, n = ‖W0 + ΔW‖ per output channel (or `norm`). */
function adaptedKernel(p: Values, fact: string, dora: boolean, norm?: Float64Array): Float64Array {
  const d = DELTA[fact](p, 2);
  const v = Float64Array.from(d, (x, k) => x + W0[k]);
  if (!dora) return v;
  const per = CIN * K * K;
  for (let o = 0; o < COUT; o++) {
    let n = 0;
    for (let e = 0; e < per; e++) n += v[o * per + e] ** 2;
    const f = p.lora_magnitude_vector[o] / (norm ? norm[o] : Math.sqrt(n));
    for (let e = 0; e < per; e++) v[o * per + e] *= f;
  }
  return v;
}

const METHODS = [
  ['lora_c', 'matrix', false],
  ['conv_lora', 'loralib', false],
  ['cp_lora', 'cp', false],
  ['dora_c', 'matrix', true],
  ['conv_dora', 'loralib', true],
  ['cp_dora', 'cp', true],
] as const;

/** A perturbed adapter of `name` (every factor nonzero, m away from ‖W0‖). */
async function adapter(name: string) {
  const peft = new PeftModel(base);
  await peft.addAdapter(
    'default',
    { peft_type: name.toUpperCase(), r: 2, lora_alpha: 6, target_modules: ['conv'] },
    { seed: 4 },
  );
  const r = new Rng(9);
  const values = new Map(
    [...peft.trainableValues('default')].map(([k, v]) => [k, Float32Array.from(v, (x) => x + 0.3 * r.normal())]),
  );
  peft.setValues('default', values);
  return peft;
}

/** Host values of the adapter's layer, by ParamSpec name. */
const layerValues = (peft: PeftModel): Values => peft.get('default').layers.get('net.conv')!.values;

/** The layer's output through lorakit's graph (hooks, and merged weights as overrides). */
async function graphOutput(peft: PeftModel): Promise<Float32Array> {
  const g = new Graph('conv-family');
  const x = g.input('x', 'f32', [N, CIN, H, W]);
  const overrides = new Map(weights);
  for (const [k, v] of peft.weightOverrides()) overrides.set(k, v);
  const ws = new WeightSource(g, null, { overrides });
  const ctx = createContext({ graph: g, weights: ws, modules: [convModule()], config: {}, hooks: peft.hooks() });
  g.output('y', ctx.conv2d('net.conv', x));
  return (await (await compile(g, { worker: false })).run({ x: X })).y.data as Float32Array;
}

for (const [name, fact, dora] of METHODS) {
  test(`${name}: unmerged and merged outputs equal the float64 dense reference with ΔW formed explicitly`, async () => {
    const peft = await adapter(name);
    const want = hostConv(adaptedKernel(layerValues(peft), fact, dora));
    assert.ok(
      want.some((v, i) => Math.abs(v - hostConv(W0)[i]) > 1e-2),
      'the adapter changes the output',
    );
    assertAllclose(await graphOutput(peft), want, { atol: 1e-4, rtol: 1e-4, what: 'unmerged' });
    await peft.merge();
    const merged = peft.weightOverrides().get('net.conv.weight')!;
    assertAllclose(merged, adaptedKernel(layerValues(peft), fact, dora), { atol: 1e-5, rtol: 1e-5, what: 'merged W' });
    assertAllclose(await graphOutput(peft), want, { atol: 1e-4, rtol: 1e-4, what: 'merged' });
  });
}

for (const [name, fact] of METHODS.filter(([, , d]) => d)) {
  test(`${name}: factor gradients are the derivative with the norm held constant (DoRA §4.3), by finite differences`, async () => {
    const peft = await adapter(name);
    const p = layerValues(peft);
    const g = new Graph('conv-family-grad');
    const x = g.input('x', 'f32', [N, CIN, H, W]);
    const gy = new Rng(5).normalArray(N * COUT * OH * OW, 1); // loss = Σ y·G
    const binding = peft.bind({ train: 'default' });
    const ctx = createContext({
      graph: g,
      weights: new WeightSource(g, null, { overrides: weights }),
      modules: [convModule()],
      config: {},
      hooks: binding.hooks,
    });
    const loss = ctx
      .conv2d('net.conv', x)
      .mul(g.constant(gy, 'f32', [N, COUT, OH, OW]))
      .sum();
    const handles = binding.trainables();
    grad(
      loss,
      handles.map((h) => h.tensor),
    ).forEach((d, i) => g.output(`d${i}`, d));
    const feeds = Object.fromEntries([...peft.trainableValues('default')]);
    const out = await (await compile(g, { worker: false })).run({ x: X, ...feeds });
    // the norm at the current values, held fixed while the factors move
    const v = adaptedKernel(p, fact, false);
    const per = CIN * K * K;
    const norm = Float64Array.from({ length: COUT }, (_, o) =>
      Math.sqrt(v.slice(o * per, (o + 1) * per).reduce((s, e) => s + e * e, 0)),
    );
    const hostLoss = (q: Values) => hostConv(adaptedKernel(q, fact, true, norm)).reduce((s, y, i) => s + y * gy[i], 0);
    for (const [i, h] of handles.entries()) {
      const spec = Object.keys(p).find((k) => h.tensor.name.startsWith(`net.conv.${k}#`));
      assert.ok(spec, `${h.tensor.name} is a tensor of the layer`);
      const theta = Float64Array.from(p[spec]);
      const numeric = theta.map((_, k) => {
        const eps = 1e-5;
        const at = (d: number) => {
          const t = Float64Array.from(theta);
          t[k] += d;
          return hostLoss({ ...p, [spec]: t });
        };
        return (at(eps) - at(-eps)) / (2 * eps);
      });
      assertAllclose(out[`d${i}`].data as Float32Array, numeric, { atol: 2e-3, rtol: 2e-3, what: `d/d ${spec}` });
    }
  });
}

test('the conv family refuses a grouped Conv2d, naming the layer', async () => {
  const grouped: AdaptableBase = {
    modules: [convModule(2)],
    outputHead: null,
    readWeight: async () => new Float32Array(COUT * 2 * CIN * K * K),
  };
  for (const [name] of METHODS) {
    await assert.rejects(
      new PeftModel(grouped).addAdapter('x', { peft_type: name.toUpperCase(), r: 2, target_modules: ['conv'] }),
      (e: unknown) => e instanceof LorakitError && e.code === 'LK_UNSUPPORTED' && e.message.includes('net.conv'),
    );
  }
});

test('trainable counts: CP-LoRA is R·(out + in + kh + kw), far below LoRA-C and convLoRA at one rank', async () => {
  const count = async (name: string) => {
    const peft = new PeftModel(base);
    await peft.addAdapter('default', { peft_type: name.toUpperCase(), r: 2, target_modules: ['conv'] });
    return [...peft.trainableValues('default').values()].reduce((n, v) => n + v.length, 0);
  };
  assert.equal(await count('cp_lora'), 2 * (COUT + CIN + K + K));
  assert.equal(await count('lora_c'), 2 * CIN * K * K + COUT * 2);
  assert.equal(await count('conv_lora'), 2 * K * (CIN * K + COUT * K));
  assert.equal(await count('cp_dora'), 2 * (COUT + CIN + K + K) + COUT);
});
