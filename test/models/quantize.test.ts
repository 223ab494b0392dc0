// Training adapters on a quantized base (models/quantize.ts) on the toy model: which layers are quantized, the
// adapter's gradients through the integer kernels against float64 finite differences of the dequantized base, and
// the adapter trained that way saving as an ordinary PEFT folder that loads on the float base.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Graph, grad } from '../../src/graph/index.ts';
import { quantizeBase } from '../../src/models/index.ts';
import { dequantize } from '../../src/nn/index.ts';
import { PeftModel, loadAdapter } from '../../src/peft/index.ts';
import { compile } from '../../src/runtime/index.ts';
import { train } from '../../src/train/index.ts';
import { centralDifferences } from '../helpers.ts';
import { IDS, LABELS, MODULES, toyBase, toyLoss, toyTask, toyWeights } from '../peft/toy.ts';

const CONFIG = { r: 2, lora_alpha: 3, target_modules: ['q_proj', 'c_fc'], init_lora_weights: false };
const read = async (n: string) => Float32Array.from(toyWeights().get(n)!);

test('the Linears and Conv1Ds of the blocks are quantized; the embedding and the output head are not', async () => {
  for (const mode of ['int8', 'q4'] as const) {
    const qb = await quantizeBase(MODULES, read, mode);
    const names = ['model.layers.0.q_proj.weight', 'model.layers.1.q_proj.weight', 'model.layers.1.c_fc.weight'];
    assert.deepEqual([...qb.weights.keys()].sort(), names.sort());
    // (the toy's 6-wide inputs pad the 32-blocks, so the quantized form is larger here: nothing to check)
  }
});

test('quantizeBase reads the next weight while quantizing one, in module order; a failed read is its error', async () => {
  // each weight handed out records when the quantizer first reads an entry of it: the read of the next weight must
  // start before that, and only once the previous read was taken
  const order: string[] = [];
  const touched = new Set<string>();
  const aheadOfQuantizing: boolean[] = [];
  let inFlight = 0;
  const tracked = async (n: string) => {
    const prev = order.at(-1);
    if (prev !== undefined) aheadOfQuantizing.push(!touched.has(prev));
    order.push(n);
    assert.equal(++inFlight, 1, 'one read at a time');
    await new Promise((r) => setTimeout(r, 2));
    inFlight--;
    const w = await read(n);
    return new Proxy(w, {
      get: (t, k) => {
        if (typeof k === 'string' && /^\d+$/.test(k)) touched.add(n);
        const v = Reflect.get(t, k);
        return typeof v === 'function' ? v.bind(t) : v;
      },
    });
  };
  const qb = await quantizeBase(MODULES, tracked, 'int8');
  assert.deepEqual(order, [...qb.weights.keys()], 'each weight read once, in the order of the result');
  assert.ok(aheadOfQuantizing.length > 0 && aheadOfQuantizing.every(Boolean), `${aheadOfQuantizing}`);
  const plain = await quantizeBase(MODULES, read, 'int8');
  for (const [n, q] of plain.weights) assert.deepEqual(qb.weights.get(n), q, n);
  // the second read fails while the first weight is quantized: that error, no unhandled rejection
  const failing = async (n: string) => {
    if (n === order[1]) throw new Error(`cannot read ${n}`);
    return read(n);
  };
  await assert.rejects(quantizeBase(MODULES, failing, 'int8'), new RegExp(`cannot read ${order[1]}`));
});

for (const mode of ['int8', 'q4'] as const) {
  // Tolerance: every gradient passes through at most 3 quantized forward products and 3 quantized input-gradient
  // products (two q_proj and c_fc). Each has an error of at most 1/255 of Σ|a||B̃| (test/graph/ops/quant.test.ts,
  // bounds (1) and (2)), i.e. ≤ 1/255 of the scale of its output; tanh is 1-Lipschitz. To first order that is
  // 6/255 ≈ 2.4 % of the gradient's scale (its largest entry); q4's backward adds its int8 copy's rounding, ≤ 1/128
  // of each row's largest weight. So: 3 % for int8, 4 % for q4, of each tensor's largest entry.
  const tol = mode === 'int8' ? 0.03 : 0.04;
  test(`${mode} base: the adapter's gradients through integer kernels match float64 finite differences of W̃`, async () => {
    const peft = new PeftModel(toyBase());
    await peft.addAdapter('default', CONFIG, { seed: 3 });
    const qb = await quantizeBase(MODULES, read, mode);

    // the step as it trains: float32, the frozen Linears through DynamicQuantizeMatMul / MatMulNBits
    const g = new Graph('quantized-grad');
    const { loss, binding } = toyLoss(g, peft, 'default', { training: false, quantized: qb.weights });
    const handles = binding.trainables();
    grad(
      loss,
      handles.map((h) => h.tensor),
    ).forEach((d, i) => g.output(`d${i}`, d));
    g.output('loss', loss);
    const ops = new Set(g.liveNodes().map((n) => n.op));
    assert.ok(ops.has(mode === 'int8' ? 'DynamicQuantizeMatMul' : 'MatMulNBits'), [...ops].join(' '));
    const floats = g.liveInitializers().filter((i) => i.tensor.dtype === 'f32' && i.tensor.rank === 2);
    assert.deepEqual(
      floats.map((i) => i.tensor.name).filter((n) => /q_proj|c_fc/.test(n)),
      [],
      'no float copy of a quantized weight is in the graph',
    );
    const s = await compile(g, { worker: false });
    const values = peft.trainableValues('default');
    const out = await s.run({ ids: IDS, labels: LABELS, ...Object.fromEntries(values) });
    await s.dispose();

    // the reference: the same adapter on the float64 model whose weights are W̃, by finite differences
    const deq = toyWeights();
    for (const [name, q] of qb.weights) {
      const m = MODULES.find((x) => x.weightName === name)!;
      const w = dequantize(q); // [out, in]
      if (m.kind === 'conv1d') {
        const t = new Float32Array(w.length); // the Conv1D stores [in, out]
        for (let o = 0; o < q.out; o++) for (let i = 0; i < q.in; i++) t[i * q.out + o] = w[o * q.in + i];
        deq.set(name, t);
      } else deq.set(name, w);
    }
    const g64 = new Graph('dequantized-f64');
    const ref = toyLoss(g64, peft, 'default', { training: false, dtype: 'f64', paramDtype: 'f64', weights: deq });
    g64.output('loss', ref.loss);
    const s64 = await compile(g64, { worker: false, optimization: 'disabled' });
    const v64 = new Map([...values].map(([k, v]) => [k, Float64Array.from(v)]));
    const feeds = () => ({ ids: IDS, labels: LABELS, ...Object.fromEntries(v64) });
    for (const [i, h] of handles.entries()) {
      const numeric = await centralDifferences(
        v64.get(h.tensor.name)!,
        1e-6,
        async () => (await s64.run(feeds(), ['loss'])).loss.data[0] as number,
      );
      const got = out[`d${i}`].data as Float32Array;
      const scale = Math.max(...numeric.map(Math.abs));
      const worst = Math.max(...got.map((v, k) => Math.abs(v - numeric[k])));
      assert.ok(scale > 0, `${h.tensor.name}: the gradient is not zero`);
      assert.ok(worst <= tol * scale, `${h.tensor.name}: worst error ${worst} > ${tol} × ${scale}`);
    }
    await s64.dispose();
  });
}

test('an adapter trained on an int8 base saves as a PEFT folder that loads on the float base, values unchanged', async () => {
  const peft = new PeftModel(toyBase());
  await peft.addAdapter('default', CONFIG, { seed: 3 });
  const before = new Map([...peft.trainableValues('default')].map(([k, v]) => [k, Float32Array.from(v)]));
  const qb = await quantizeBase(MODULES, read, 'int8');
  const dir = mkdtempSync(join(tmpdir(), 'lk-quantized-'));
  await train(toyTask(peft, 'default', { quantized: qb.weights }), {
    outputDir: dir,
    steps: 3,
    lr: 0.05,
    seed: 5,
    progress: 'none',
    plot: false,
  });
  const trained = peft.trainableValues('default');
  assert.ok(
    [...trained].some(([k, v]) => v.some((x, i) => x !== before.get(k)![i])),
    'training moved the adapter',
  );
  const config = JSON.parse(readFileSync(join(dir, 'final', 'adapter_config.json'), 'utf8'));
  assert.equal(config.peft_type, 'LORA');
  assert.ok(!JSON.stringify(config).includes('quant'), 'nothing about the quantized base is in adapter_config.json');
  const loaded = new PeftModel(toyBase());
  const { unused } = await loadAdapter(loaded, join(dir, 'final'), 'default');
  assert.deepEqual(unused, []);
  for (const [k, v] of loaded.trainableValues('default')) assert.deepEqual(v, trained.get(k), k);
});
