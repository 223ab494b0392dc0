// FlyLoRA against independent references: the toy model's logits against a float64 host forward that forms, per
// token, ΔW_t = s·Σ_{i ∈ top-k(A·x + d)} b_i·a_iᵀ from the stored tensors (both routing modes); the load-balancing
// buffer over real training steps against the host rule d ← d + u·sign(mean(c) − c) with the tokens' routings counted
// on the host from each checkpoint's B and d (once per micro-batch under accumulation); the sparse init's row counts
// and scale; no gradient to x through the router; merge and export refused; the saved layout.
// (Gradients of B, save/load, resume and the trainable count against the tensors: test/peft/contract.test.ts.)
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { LorakitError } from '../../../src/errors.ts';
import { Graph, grad, type Tensor } from '../../../src/graph/index.ts';
import { SafetensorsFile } from '../../../src/io/index.ts';
import { Rng } from '../../../src/linalg/index.ts';
import { loadModel } from '../../../src/models/index.ts';
import {
  adaptable,
  exportMerged,
  type FlyLoraConfig,
  flylora,
  type LayerInfo,
  loadAdapter,
  PeftModel,
  paramKey,
  resolveConfig,
  saveAdapter,
} from '../../../src/peft/index.ts';
import { compile } from '../../../src/runtime/index.ts';
import { loadCheckpoint, train } from '../../../src/train/index.ts';
import { assertAllclose } from '../../helpers.ts';
import { IDS, MODULES, toyBase, toyForward, toyTask, toyWeights, V } from '../toy.ts';

const ROOT = new URL('../../../', import.meta.url).pathname;
const TARGETS = ['q_proj', 'c_fc']; // Linear 6→5 (with bias), Linear 5→6, GPT-2 Conv1D 6→4
const BASE = { peft_type: 'FLYLORA', target_modules: TARGETS, r: 6, top_k: 2, lora_alpha: 9, bias_u: 0.05 };
const isLorakitError =
  (code: string, ...parts: string[]) =>
  (e: unknown) =>
    e instanceof LorakitError && e.code === code && parts.every((p) => e.message.includes(p));

/** A FlyLoRA adapter on the toy model with random B and d, so every term of the forward shows. */
async function flyOn(config: Record<string, unknown> = {}): Promise<PeftModel> {
  const peft = new PeftModel(toyBase());
  const a = await peft.addAdapter('default', { ...BASE, ...config }, { seed: 3 });
  const r = new Rng(17);
  for (const l of a.layers.values()) {
    l.values['lora_B.weight'] = r.normalArray(l.values['lora_B.weight'].length, 0.5);
    l.values.lora_topk_bias = r.normalArray(l.values.lora_topk_bias.length, 0.3);
  }
  return peft;
}

async function graphLogits(peft: PeftModel, ids = IDS): Promise<Float32Array> {
  const g = new Graph('flylora-toy');
  const x = g.input('ids', 'i64', [2, 4]);
  g.output('logits', toyForward(g, x, toyWeights(), peft.hooks()).logits);
  return (await (await compile(g, { worker: false })).run({ ids })).logits.data as Float32Array;
}

/** One layer's tensors and the routing settings, as the host reference reads them. */
interface HostLayer {
  A: ArrayLike<number>;
  B: ArrayLike<number>;
  d: ArrayLike<number>;
}
interface HostAdapter {
  r: number;
  k: number;
  s: number;
  magnitude: boolean;
  layers: Map<string, HostLayer>;
}

/** A parsed config as FlyLoRA's (PeftModel holds every method's config as targeting fields + a record). */
const flyConfig = (c: Record<string, unknown>) => c as unknown as FlyLoraConfig;

const hostAdapter = (peft: PeftModel, values?: ReadonlyMap<string, Float32Array>): HostAdapter => {
  const a = peft.get('default');
  const c = flyConfig(a.config);
  const layers = new Map<string, HostLayer>();
  for (const [path, l] of a.layers) {
    const v = (n: string) => values?.get(paramKey('default', path, n)) ?? l.values[n];
    layers.set(path, { A: v('lora_A.weight'), B: v('lora_B.weight'), d: v('lora_topk_bias') });
  }
  return { r: c.r, k: c.top_k, s: c.lora_alpha / c.r, magnitude: c.route_by_magnitude, layers };
};

/** The k ranks a token routes to: the k largest scores, equal scores by lower rank (ONNX TopK's order). */
function routed(score: number[], k: number): number[] {
  return score
    .map((v, i) => ({ v, i }))
    .sort((p, q) => q.v - p.v || p.i - q.i)
    .slice(0, k)
    .map((p) => p.i);
}

/**
 * The toy model in float64 on the host. An adapted layer adds ΔW_t·x_t per token, with ΔW_t = s·Σ_{i∈S_t} B[:, i]·A[i, :]
 * formed densely [out, in] and S_t = top-k of A·x_t + d (of |A·x_t + d| when `magnitude`); `counts` collects |{t: i ∈ S_t}|.
 */
function hostLogits(ids: BigInt64Array, ad: HostAdapter | null, counts?: Map<string, Float64Array>): Float64Array {
  const w = toyWeights();
  const N = ids.length;
  const linear = (x: Float64Array, path: string, inn: number, out: number, conv1d = false) => {
    const m = MODULES.find((q) => q.path === path)!;
    const W = w.get(m.weightName)!;
    const b = m.kind !== 'embedding' && m.biasName ? w.get(m.biasName)! : null;
    const l = ad?.layers.get(path);
    const y = new Float64Array(N * out);
    for (let n = 0; n < N; n++) {
      const xn = x.subarray(n * inn, (n + 1) * inn);
      const dW = new Float64Array(out * inn); // ΔW_t [out, in]
      if (l && ad) {
        const a = Array.from({ length: ad.r }, (_, i) => xn.reduce((acc, xj, j) => acc + l.A[i * inn + j] * xj, 0));
        const score = a.map((v, i) => (ad.magnitude ? Math.abs(v + l.d[i]) : v + l.d[i]));
        for (const i of routed(score, ad.k)) {
          if (counts) {
            if (!counts.has(path)) counts.set(path, new Float64Array(ad.r));
            counts.get(path)![i]++;
          }
          for (let o = 0; o < out; o++)
            for (let j = 0; j < inn; j++) dW[o * inn + j] += ad.s * l.B[o * ad.r + i] * l.A[i * inn + j];
        }
      }
      for (let o = 0; o < out; o++) {
        let s = b ? b[o] : 0;
        for (let j = 0; j < inn; j++) s += xn[j] * ((conv1d ? W[j * out + o] : W[o * inn + j]) + dW[o * inn + j]);
        y[n * out + o] = s;
      }
    }
    return y;
  };
  const [emb, q0, q1, fc, head] = MODULES;
  const E = w.get(emb.weightName)!;
  const D = emb.kind === 'embedding' ? emb.dim : 0;
  const h = new Float64Array(N * D);
  for (let n = 0; n < N; n++) for (let j = 0; j < D; j++) h[n * D + j] = E[Number(ids[n]) * D + j];
  const dims = (m: (typeof MODULES)[number]) => (m.kind === 'embedding' ? [0, 0] : [m.inFeatures, m.outFeatures]);
  const a0 = linear(h, q0.path, ...(dims(q0) as [number, number])).map(Math.tanh);
  const a1 = linear(a0, q1.path, ...(dims(q1) as [number, number]));
  const a2 = linear(a1, fc.path, ...(dims(fc) as [number, number]), true).map(Math.tanh);
  return linear(a2, head.path, ...(dims(head) as [number, number]));
}

for (const magnitude of [false, true]) {
  test(`logits equal the host's per-token ΔW_t restricted to the routed ranks (route_by_magnitude ${magnitude})`, async () => {
    const peft = await flyOn({ route_by_magnitude: magnitude });
    const got = await graphLogits(peft);
    const ad = hostAdapter(peft);
    assertAllclose(got, hostLogits(IDS, ad), { atol: 2e-5, rtol: 2e-5, what: 'FlyLoRA logits vs host' });
    // the comparison can tell routings apart: the other selection rule, or all r ranks (plain LoRA), differ
    const other = hostLogits(IDS, { ...ad, magnitude: !magnitude });
    const dense = hostLogits(IDS, { ...ad, k: ad.r });
    for (const [what, ref] of [
      ['the other routing rule', other],
      ['all ranks', dense],
    ] as const)
      assert.ok(
        got.some((v, i) => Math.abs(v - ref[i]) > 1e-3),
        `${what} gives other logits`,
      );
  });
}

/** The host rule applied to a buffer in float32, as the graph computes it: d + fround(u)·sign(N·k/r − c). */
function hostNextBias(d: ArrayLike<number>, counts: Float64Array, k: number, u: number): Float32Array {
  const total = counts.reduce((x, y) => x + y, 0);
  const mean = total / counts.length;
  assert.equal(total % k, 0, 'every token routes to k ranks');
  return Float32Array.from(d, (di, i) => Math.fround(di + Math.sign(mean - counts[i]) * Math.fround(u)));
}

/** The ids of toyTask's micro-batch `i` (its generator draws 8 ids, then 8 labels). */
function batchIds(i: number): BigInt64Array {
  const r = new Rng(1000 + i);
  return BigInt64Array.from({ length: 8 }, () => BigInt(Math.floor(r.next() * V)));
}

const biasKey = (path: string) => paramKey('default', path, 'lora_topk_bias');

test('each training step moves d by u·sign(mean(c) − c) of its routing counts; checkpoints hold d', async () => {
  const config = { ...BASE, top_k: 2, bias_u: 0.05 };
  const fresh = async () => {
    const peft = new PeftModel(toyBase());
    await peft.addAdapter('default', config, { seed: 3 });
    return peft;
  };
  const peft = await fresh();
  // step 0: the initial values (training hands its final values back to `peft` when it saves)
  let before: ReadonlyMap<string, Float32Array> = new Map([
    ...peft.trainableValues('default'),
    ...peft.stateValues('default'),
  ]);
  const dir = mkdtempSync(join(tmpdir(), 'lk-flylora-'));
  const steps = 3;
  await train(toyTask(peft, 'default'), {
    outputDir: dir,
    steps,
    lr: 0.05,
    seed: 5,
    checkpointEvery: 1,
    keepCheckpoints: steps,
    progress: 'none',
    plot: false, // loss.svg (Vega, at every checkpoint) is plot.test.ts's concern
  });
  let moved = 0;
  for (let t = 1; t <= steps; t++) {
    const after = (await loadCheckpoint(join(dir, `checkpoint-${t}`))).params;
    // the routing of step t is the forward of micro-batch t−1 with the values before the step (B moves upper inputs)
    const ad = hostAdapter(peft, before);
    const counts = new Map<string, Float64Array>();
    hostLogits(batchIds(t - 1), ad, counts);
    for (const [path, l] of ad.layers) {
      const want = hostNextBias(l.d, counts.get(path)!, ad.k, config.bias_u);
      assert.deepEqual(after.get(biasKey(path)), want, `d of ${path} after step ${t}`);
      moved += want.filter((v, i) => v !== l.d[i]).length;
    }
    before = after;
  }
  assert.ok(moved > 0, 'the buffers moved');
});

test('under gradient accumulation d moves once per micro-batch, in order (the official forward updates every call)', async () => {
  const peft = new PeftModel(toyBase());
  await peft.addAdapter('default', BASE, { seed: 3 });
  let ad = hostAdapter(peft); // before training: the final save hands the trained values back to `peft`
  const dir = mkdtempSync(join(tmpdir(), 'lk-flylora-'));
  const r = await train(toyTask(peft, 'default'), {
    outputDir: dir,
    steps: 1,
    lr: 0.05,
    seed: 5,
    gradientAccumulation: 2,
    progress: 'none',
    plot: false,
  });
  // B = 0 before the step, so both micro-batches route on the base model's inputs; only d changes between them
  for (const mb of [0, 1]) {
    const counts = new Map<string, Float64Array>();
    hostLogits(batchIds(mb), ad, counts);
    const layers = new Map(
      [...ad.layers].map(([p, l]) => [p, { ...l, d: hostNextBias(l.d, counts.get(p)!, ad.k, BASE.bias_u) }]),
    );
    ad = { ...ad, layers };
  }
  for (const [path, l] of ad.layers) assert.deepEqual(r.params.get(biasKey(path)), l.d, `d of ${path}`);
});

test('graphs that do not train the adapter hold d constant (no buffer update is recorded)', () => {
  return flyOn().then((peft) => {
    for (const opts of [{}, { train: 'default' }]) {
      const g = new Graph('flylora-bind');
      const binding = peft.bind(opts);
      toyForward(g, g.input('ids', 'i64', [2, 4]), toyWeights(), binding.hooks);
      assert.equal(binding.bufferUpdates().length, 'train' in opts ? 3 : 0, JSON.stringify(opts));
    }
  });
});

test('the sparse A keeps in // (r // k) entries per row (or ⌊in·ρ⌋) drawn N(0, 1/r²); B and d start at 0', async () => {
  const layer: LayerInfo = {
    path: 'l',
    kind: 'linear',
    inFeatures: 256,
    outFeatures: 8,
    conv: null,
    layerIndex: null,
    weightShape: [8, 256],
    weightDtype: 'F32',
    readWeight: async () => new Float32Array(8 * 256),
  };
  const initOf = async (extra: Record<string, unknown>) => {
    const c = flyConfig(resolveConfig({ peft_type: 'FLYLORA', target_modules: ['l'], ...extra }, 'test').config);
    const ctx = { layer, settings: undefined, config: c, rng: new Rng(1), shared: {}, readBase: layer.readWeight };
    return { c, v: (await flylora.init(ctx)).values };
  };
  for (const [extra, perRow] of [
    [{}, 64], // r 32, k 8: 256 // 4
    [{ r: 16, top_k: 2 }, 32], // 256 // 8
    [{ sparsity_ratio: 0.1 }, 25], // ⌊25.6⌋
  ] as const) {
    const { c, v } = await initOf(extra);
    const A = v['lora_A.weight'];
    const rows = Array.from({ length: c.r }, (_, i) => A.subarray(i * 256, (i + 1) * 256));
    for (const row of rows) assert.equal(row.filter((x) => x !== 0).length, perRow, JSON.stringify(extra));
    const supports = new Set(rows.map((row) => row.map((x) => (x !== 0 ? 1 : 0)).join('')));
    assert.equal(supports.size, c.r, 'every row picks its own columns');
    const nz = A.filter((x) => x !== 0);
    const std = Math.sqrt(nz.reduce((s, x) => s + x * x, 0) / nz.length);
    assert.ok(Math.abs(std * c.r - 1) < 0.1, `std ${std} ≈ 1/r = ${1 / c.r}`);
    assert.ok(v['lora_B.weight'].every((x) => x === 0) && v.lora_topk_bias.every((x) => x === 0));
  }
  const { v } = await initOf({ init_lora_weights: 'gaussian' });
  assert.ok(
    v['lora_A.weight'].every((x) => x !== 0),
    'gaussian: a dense A',
  );
});

test('the router sends no gradient to x (the official no_grad): dy/dx is the base layer alone', async () => {
  const peft = await flyOn();
  const l = peft.get('default').layers.get('model.layers.1.q_proj')!;
  const [inn, out] = [l.info.inFeatures, l.info.outFeatures];
  const W0 = toyWeights().get('model.layers.1.q_proj.weight')!;
  const g = new Graph('flylora-dx');
  const x = g.input('x', 'f64', [3, inn]);
  const W = g.constant(W0, 'f32', [out, inn]).cast('f64');
  const p = Object.fromEntries(l.specs.map((s) => [s.name, g.constant(l.values[s.name], 'f32', s.shape).cast('f64')]));
  let next: Tensor | null = null;
  const y = flylora.forward({
    layer: l.info,
    settings: undefined,
    config: flyConfig(peft.get('default').config),
    x,
    y: x.matmul(W.T),
    weight: W,
    bias: null,
    p,
    shared: {},
    inputs: {},
    dropout: (t) => t,
    setState: (name, t) => {
      assert.equal(name, 'lora_topk_bias');
      next = t;
    },
  });
  assert.deepEqual(next!.shape, [6]);
  const R = g.constant(new Rng(4).normalArray(3 * out), 'f32', [3, out]).cast('f64');
  g.output('dx', grad(y.mul(R).sum(), [x])[0]);
  g.output('delta', y.sub(x.matmul(W.T)));
  const X = new Rng(5).normalArray(3 * inn);
  const res = await (await compile(g, { worker: false })).run({ x: Float64Array.from(X) });
  const Rv = new Rng(4).normalArray(3 * out);
  const want = new Float64Array(3 * inn); // R·W0
  for (let n = 0; n < 3; n++)
    for (let j = 0; j < inn; j++) for (let o = 0; o < out; o++) want[n * inn + j] += Rv[n * out + o] * W0[o * inn + j];
  assertAllclose(res.dx.data as Float64Array, want, { atol: 1e-12, rtol: 1e-12, what: 'dy/dx' });
  assert.ok(
    (res.delta.data as Float64Array).some((v) => Math.abs(v) > 1e-3),
    'the adapter changes y',
  );
});

test('merge and export are refused with LK_UNSUPPORTED, leaving the adapter applied unmerged', async () => {
  const peft = await flyOn();
  const before = await graphLogits(peft);
  await assert.rejects(peft.merge(), isLorakitError('LK_UNSUPPORTED', 'flylora', 'cannot be merged', 'top-k'));
  assert.deepEqual(peft.merged, []);
  assert.deepEqual(await graphLogits(peft), before);
  const model = await loadModel(join(ROOT, 'test/fixtures/models/llama'));
  try {
    const lp = new PeftModel(adaptable(model));
    await lp.addAdapter('default', { peft_type: 'FLYLORA', target_modules: ['q_proj'], r: 4, top_k: 2 });
    const out = join(mkdtempSync(join(tmpdir(), 'lk-flylora-')), 'merged');
    await assert.rejects(exportMerged(model, lp, out), isLorakitError('LK_UNSUPPORTED', 'cannot be merged'));
    assert.ok(!existsSync(out), 'no folder is written');
  } finally {
    await model.close();
  }
});

test('saved layout: lora_A.weight, lora_B.weight and the buffer lora_topk_bias per layer; config FLYLORA', async () => {
  const peft = await flyOn({ route_by_magnitude: true });
  const dir = mkdtempSync(join(tmpdir(), 'lk-flylora-'));
  await saveAdapter(peft, 'default', dir);
  const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
  assert.equal(cfg.peft_type, 'FLYLORA');
  assert.deepEqual([cfg.r, cfg.top_k, cfg.lora_alpha, cfg.bias_u, cfg.route_by_magnitude], [6, 2, 9, 0.05, true]);
  const st = await SafetensorsFile.open(join(dir, 'adapter_model.safetensors'));
  const paths = ['model.layers.0.q_proj', 'model.layers.1.q_proj', 'model.layers.1.c_fc'];
  const want = paths.flatMap((p) =>
    ['lora_A.weight', 'lora_B.weight', 'lora_topk_bias'].map((n) => `base_model.model.${p}.${n}`),
  );
  assert.deepEqual([...st.names()].sort(), want.sort());
  assert.deepEqual(st.info('base_model.model.model.layers.1.c_fc.lora_A.weight').shape, [6, 6]); // [r, in]
  assert.deepEqual(st.info('base_model.model.model.layers.1.c_fc.lora_B.weight').shape, [4, 6]); // [out, r]
  await st.close();
  const loaded = new PeftModel(toyBase());
  assert.deepEqual((await loadAdapter(loaded, dir)).unused, []);
  for (const p of paths)
    for (const n of ['lora_A.weight', 'lora_topk_bias'])
      assert.deepEqual(loaded.get('default').layers.get(p)!.values[n], peft.get('default').layers.get(p)!.values[n]);
  assert.deepEqual(await graphLogits(loaded), await graphLogits(peft));
});

test('configs: top_k above r and a layer narrower than r // top_k are refused, naming the field or the layer', async () => {
  const peft = new PeftModel(toyBase());
  await assert.rejects(
    peft.addAdapter('a', { ...BASE, r: 4, top_k: 5 }),
    isLorakitError('LK_CONFIG_INVALID', 'top_k = 5', 'r = 4'),
  );
  // r // k = 8 > 6 inputs of layer 0's q_proj (the first targeted): the official p = in // (r // k) is 0 there
  await assert.rejects(
    peft.addAdapter('b', { ...BASE, r: 16, top_k: 2 }),
    isLorakitError('LK_CONFIG_INVALID', 'model.layers.0.q_proj', 'sparsity_ratio'),
  );
  await peft.addAdapter('c', { ...BASE, r: 16, top_k: 2, sparsity_ratio: 0.5 }); // p = ⌊in/2⌋ instead
});
