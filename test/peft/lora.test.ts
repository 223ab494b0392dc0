// LoRA and DoRA through the shared PeftModel on a toy model with every layer kind: identity at init, merge
// equals unmerged, exact unmerge, gradients against finite differences, save/load, multiple adapters, errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Graph, crossEntropy, type Tensor } from '../../src/graph/index.ts';
import { compile } from '../../src/runtime/index.ts';
import { PeftModel, saveAdapter, loadAdapter, paramKey } from '../../src/peft/index.ts';
import { SafetensorsFile } from '../../src/io/index.ts';
import { LorakitError } from '../../src/errors.ts';
import { toyBase, toyWeights, toyForward, IDS, MODULES, V } from './toy.ts';
import { assertAllclose } from '../helpers.ts';

const ALL = ['embed_tokens', 'q_proj', 'c_fc'];

async function logits(peft: PeftModel | null, weights = toyWeights()): Promise<Float32Array> {
  const g = new Graph('toy');
  const ids = g.input('ids', 'i64', [2, 4]);
  const w = new Map(weights);
  if (peft) for (const [k, v] of peft.weightOverrides()) w.set(k, v);
  g.output('logits', toyForward(g, ids, w, peft ? peft.hooks() : {}).logits);
  const s = await compile(g, { worker: false });
  return (await s.run({ ids: IDS })).logits.data as Float32Array;
}

async function peftWith(
  config: Record<string, unknown>,
  name = 'default',
  peft = new PeftModel(toyBase()),
): Promise<PeftModel> {
  await peft.addAdapter(name, { target_modules: ALL, ...config }, { seed: 7 });
  return peft;
}

test('a freshly initialised LoRA (B = 0; embeddings A = 0) leaves the output unchanged', async () => {
  assertAllclose(await logits(await peftWith({ r: 4 })), await logits(null), { atol: 0, rtol: 0 });
});

test('a freshly initialised DoRA (m = ‖W0‖) leaves the output unchanged', async () => {
  assertAllclose(
    await logits(await peftWith({ r: 2, use_dora: true, target_modules: ['q_proj', 'c_fc'] })),
    await logits(null),
    { atol: 1e-5, rtol: 1e-5 },
  );
});

for (const [name, cfg] of [
  [
    'LoRA with rank/alpha patterns and rsLoRA',
    { r: 4, lora_alpha: 8, use_rslora: true, rank_pattern: { 'layers\\.1\\.q_proj': 2 }, alpha_pattern: { c_fc: 3 } },
  ],
  ['DoRA on Linear and Conv1D', { r: 3, use_dora: true, target_modules: ['q_proj', 'c_fc'] }],
] as const) {
  test(`${name}: merged equals unmerged, and unmerge restores the base exactly`, async () => {
    const peft = await peftWith({ ...cfg, init_lora_weights: false });
    const base = await logits(null);
    const unmerged = await logits(peft);
    assert.ok(
      unmerged.some((v, i) => Math.abs(v - base[i]) > 1e-3),
      'a random adapter must change the output',
    );
    await peft.merge();
    assert.deepEqual(peft.merged, ['default']);
    assertAllclose(await logits(peft), unmerged, { atol: 1e-5, rtol: 1e-5, what: 'merged vs unmerged' });
    peft.unmerge();
    peft.disable();
    assertAllclose(await logits(peft), base, { atol: 0, rtol: 0, what: 'after unmerge + disable' });
  });
}

test('several adapters: active ones are summed in order, disable gives the base model', async () => {
  const peft = await peftWith({ r: 2, init_lora_weights: false }, 'a');
  await peftWith({ r: 3, init_lora_weights: false, target_modules: ['q_proj'] }, 'b', peft);
  const both = await logits(peft);
  peft.setActive('a');
  const a = await logits(peft);
  assert.ok(both.some((v, i) => Math.abs(v - a[i]) > 1e-4));
  await peft.merge(['a']);
  peft.setActive('a', 'b');
  assertAllclose(await logits(peft), both, { atol: 1e-5, rtol: 1e-5, what: 'a merged + b unmerged' });
  peft.disable();
  assertAllclose(await logits(peft), await logits(null), { atol: 0, rtol: 0 });
  assert.throws(() => peft.setActive('zzz'), /no adapter named "zzz"; adapters: a, b/);
});

// DoRA's norm is detached (paper §4.3), so only the magnitude's gradient is the true derivative; A and B are
// checked against a frozen-norm reference below.
for (const useDora of [false, true]) {
  test(`gradients of ${useDora ? 'DoRA magnitude' : 'LoRA'} tensors through the toy model match finite differences`, async () => {
    const peft = await peftWith({
      r: 2,
      init_lora_weights: false,
      use_dora: useDora,
      target_modules: useDora ? ['q_proj', 'c_fc'] : ALL,
    });
    const g = new Graph('grad');
    const ids = g.input('ids', 'i64', [2, 4]);
    const labels = g.input('labels', 'i64', [8]);
    const { logits: out } = toyForward(g, ids, toyWeights(), peft.hooks({ train: 'default' }), { dtype: 'f64' });
    const loss = crossEntropy(out.reshape([8, V]), labels);
    const params = g.inputs.filter((t) => t.name.includes('#default') && (!useDora || t.name.includes('magnitude')));
    const { grad } = await import('../../src/graph/index.ts');
    grad(loss, params).forEach((d, i) => g.output(`d${i}`, d));
    g.output('loss', loss);
    const s = await compile(g, { worker: false });
    const values = peft.trainableValues('default');
    const lab = BigInt64Array.from([3, 1, 4, 1, 5, 9, 2, 6].map(BigInt));
    const feeds = () => ({ ids: IDS, labels: lab, ...Object.fromEntries(values) });
    const out0 = await s.run(feeds());
    for (const [i, p] of params.entries()) {
      const v = values.get(p.name)!;
      for (const k of [0, v.length - 1]) {
        const v0 = v[k];
        v[k] = v0 + 1e-3;
        const hi = v[k];
        const lp = (await s.run(feeds())).loss.data[0] as number;
        v[k] = v0 - 1e-3;
        const lo = v[k];
        const lm = (await s.run(feeds())).loss.data[0] as number;
        v[k] = v0;
        const numeric = (lp - lm) / (hi - lo); // the step actually taken in float32
        assertAllclose([out0[`d${i}`].data[k] as number], [numeric], {
          rtol: 1e-4,
          atol: 1e-6,
          what: `${p.name}[${k}]`,
        });
      }
    }
  });
}

test('save -> load gives the same logits, with PEFT key names, shapes and config', async () => {
  const peft = await peftWith({
    r: 3,
    lora_alpha: 6,
    init_lora_weights: false,
    use_dora: false,
    modules_to_save: ['lm_head'],
    bias: 'lora_only',
  });
  const dir = mkdtempSync(join(tmpdir(), 'lk-adapter-'));
  await saveAdapter(peft, 'default', dir);
  const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
  assert.equal(cfg.peft_type, 'LORA');
  assert.equal(cfg.r, 3);
  assert.equal(cfg.lora_alpha, 6);
  assert.deepEqual(Object.keys(cfg), [...Object.keys(cfg)].sort());
  const st = await SafetensorsFile.open(join(dir, 'adapter_model.safetensors'));
  assert.deepEqual(st.info('base_model.model.model.layers.0.q_proj.lora_A.weight').shape, [3, 6]);
  assert.deepEqual(st.info('base_model.model.model.layers.1.c_fc.lora_B.weight').shape, [4, 3]);
  assert.deepEqual(st.info('base_model.model.model.embed_tokens.lora_embedding_A').shape, [3, 11]);
  assert.deepEqual(st.info('base_model.model.lm_head.weight').shape, [11, 4]);
  assert.ok(st.has('base_model.model.model.layers.0.q_proj.base_layer.bias'));
  assert.equal(st.metadata.format, 'pt');
  await st.close();
  const loaded = new PeftModel(toyBase());
  const { unused } = await loadAdapter(loaded, dir);
  assert.deepEqual(unused, []);
  assertAllclose(await logits(loaded), await logits(peft), { atol: 0, rtol: 0 });
});

test('bad adapters: no matching module, rank 0, unknown peft_type, shapes that do not fit', async () => {
  const peft = new PeftModel(toyBase());
  await assert.rejects(
    peft.addAdapter('x', { target_modules: ['k_proj'] }),
    (e: unknown) =>
      e instanceof LorakitError &&
      e.code === 'LK_CONFIG_INVALID' &&
      /matches no module of the model; its modules are: model\.embed_tokens, model\.layers\.0\.q_proj/.test(e.message),
  );
  // a layer selection that leaves nothing is blamed on layers_to_transform, with the model's layers
  await assert.rejects(
    peft.addAdapter('x', { target_modules: ['q_proj'], layers_to_transform: [99] }, { source: 'cfg.json' }),
    (e: unknown) =>
      e instanceof LorakitError &&
      e.code === 'LK_CONFIG_INVALID' &&
      e.message ===
        'cfg.json: layers_to_transform [99] selects no layer of the targeted modules: the model has 2 ' +
          'layers, 0 to 1',
  );
  await assert.rejects(
    peft.addAdapter('x', { target_modules: ['q_proj'], layers_to_transform: 0, layers_pattern: 'blocks' }),
    /layers_to_transform 0 selects no layer of the targeted modules: no module path has a layer index under layers_pattern "blocks"/,
  );
  await assert.rejects(peft.addAdapter('x', { target_modules: ['q_proj'], r: 0 }), /r: Too small/);
  await assert.rejects(
    peft.addAdapter('x', { peft_type: 'FOO', target_modules: ['q_proj'] }),
    /peft_type "FOO" is not supported; lorakit supports LORA/,
  );
  const dir = mkdtempSync(join(tmpdir(), 'lk-adapter-'));
  const other = await peftWith({ r: 2 });
  await saveAdapter(other, 'default', dir);
  const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
  writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify({ ...cfg, r: 4 }));
  await assert.rejects(
    loadAdapter(new PeftModel(toyBase()), dir),
    /tensor base_model\.model\.\S+ has shape \[2,\d+\], but the base model needs \[4,\d+\]; was the adapter trained on another base\?/,
  );
  await assert.rejects(loadAdapter(new PeftModel(toyBase()), join(dir, 'nope')), /does not exist/);
});

test('LoraConfig keys added by PEFT 0.19-0.21 load at their neutral value and are refused otherwise', async () => {
  // PEFT 0.21.2 writes these five keys (null) into every LoRA adapter_config.json (test/fixtures/peft-current);
  // lora_ga_config and use_bdlora are the lora_ga and bdlora variants' own fields, the other three select methods
  // lorakit does not have
  const added = ['velora_config', 'monteclora_config', 'kasa_config'];
  const neutral = { lora_ga_config: null, use_bdlora: null, ...Object.fromEntries(added.map((k) => [k, null])) };
  assertAllclose(await logits(await peftWith({ r: 2, ...neutral })), await logits(null), { atol: 0, rtol: 0 });
  for (const k of added) {
    await assert.rejects(
      peftWith({ r: 2, ...neutral, [k]: { r: 2 } }),
      (e: unknown) =>
        e instanceof LorakitError &&
        e.code === 'LK_UNSUPPORTED' &&
        e.message.includes(`${k} = {"r":2} is not supported by lorakit; remove it or use its default`),
    );
  }
});

test('LoRA training in one graph per step lowers the toy loss; only adapter tensors change', async () => {
  const { adamw, addTrainStep, TrainStepRunner } = await import('../../src/optim/index.ts');
  const peft = await peftWith({ r: 4, target_modules: ['q_proj', 'c_fc'] });
  const g = new Graph('train');
  const ids = g.input('ids', 'i64', [2, 4]);
  const labels = g.input('labels', 'i64', [8]);
  const { logits: out } = toyForward(g, ids, toyWeights(), peft.hooks({ train: 'default' }));
  const params = g.inputs.filter((t) => t.name.endsWith('#default'));
  const layout = addTrainStep(g, crossEntropy(out.reshape([8, V]), labels), {
    optimizer: adamw(),
    groups: [{ params }],
  });
  const r = new TrainStepRunner(
    await compile(g, { worker: false }),
    layout,
    Object.fromEntries(peft.trainableValues('default')),
  );
  const lab = BigInt64Array.from([3, 1, 4, 1, 5, 9, 2, 6].map(BigInt));
  const first = (await r.step({ ids: IDS, labels: lab }, 0.05)).loss;
  let last = first;
  for (let i = 0; i < 100; i++) last = (await r.step({ ids: IDS, labels: lab }, 0.05)).loss;
  assert.ok(last < first * 0.6, `loss ${first} -> ${last}`); // the frozen 4-wide bottleneck caps the fit near 1.3
  peft.setValues('default', r.values);
  assert.ok(
    peft
      .get('default')
      .layers.get('model.layers.0.q_proj')!
      .values['lora_B.weight'].some((v) => v !== 0),
  );
  assert.equal(params.length, 6);
  assert.ok(
    params.every(
      (p) =>
        p.name === paramKey('default', p.name.split('.lora_')[0], `lora_${p.name.split('.lora_')[1].split('#')[0]}`),
    ),
  );
  assert.equal(MODULES.length, 5);
});

test('DoRA gradients of A and B equal those of the paper formula with the norm held constant', async () => {
  const { grad, Graph: G } = await import('../../src/graph/index.ts');
  const { matmul, rowNorms } = await import('../../src/linalg/index.ts');
  const peft = await peftWith({
    r: 2,
    lora_alpha: 3,
    init_lora_weights: false,
    use_dora: true,
    target_modules: ['layers.0.q_proj'],
  });
  const L = peft.get('default').layers.get('model.layers.0.q_proj')!;
  const W = toyWeights().get('model.layers.0.q_proj.weight')!,
    bias = toyWeights().get('model.layers.0.q_proj.bias')!;
  const [o, i, r, s] = [5, 6, 2, 1.5];
  const x = Float32Array.from({ length: 3 * i }, (_, k) => Math.sin(k + 1));
  const { A, B, m } = { A: L.values['lora_A.weight'], B: L.values['lora_B.weight'], m: L.values.lora_magnitude_vector };
  // reference: y = xWᵀ + b + (m/n0 − 1)⊙(xWᵀ) + (m/n0)⊙s·xAᵀBᵀ, n0 = ‖W + sBA‖ from the current A, B (a constant)
  const ba = matmul(B, A, o, r, i);
  const n0 = rowNorms(
    Float32Array.from(W, (w, k) => w + s * ba[k]),
    o,
    i,
  );
  const build = (lk: boolean) => {
    const g = new G('dora');
    const xi = g.constant(x, 'f32', [3, i]);
    const Ai = g.input('A', 'f32', [r, i]),
      Bi = g.input('B', 'f32', [o, r]);
    let y: Tensor;
    if (lk) {
      const hooks = peft.hooks({ train: 'default' });
      const Wt = g.constant(W, 'f32', [o, i]),
        bt = g.constant(bias, 'f32', [o]);
      const mod = {
        path: 'model.layers.0.q_proj',
        inFeatures: i,
        outFeatures: o,
        weight: Wt,
        bias: bt,
        fanInFanOut: false,
        base: (t: typeof xi) => t.matmul(Wt.T).add(bt),
        inputGrad: (dy: typeof xi) => dy.matmul(Wt),
        inputRows: (ids: typeof xi) => Wt.gather(ids, 0),
      };
      y = hooks.linear!(mod, xi);
      const ins = g.inputs.filter((t) => t.name.includes('lora_A') || t.name.includes('lora_B'));
      return {
        g,
        y,
        A: ins.find((t) => t.name.includes('lora_A'))!,
        B: ins.find((t) => t.name.includes('lora_B'))!,
        feeds: (a: Float32Array, b: Float32Array) => ({
          [ins[0].name.includes('lora_A') ? ins[0].name : ins[1].name]: a,
          [ins[0].name.includes('lora_B') ? ins[0].name : ins[1].name]: b,
          A: a,
          B: b,
          [g.inputs.find((t) => t.name.includes('magnitude'))!.name]: m,
        }),
      };
    }
    const base = xi.matmul(g.constant(W, 'f32', [o, i]).T);
    const scale = g.constant(
      Float32Array.from(m, (v, k) => v / n0[k]),
      'f32',
      [o],
    );
    y = base
      .add(g.constant(bias, 'f32', [o]))
      .add(scale.sub(1).mul(base))
      .add(scale.mul(xi.matmul(Ai.T).matmul(Bi.T).mul(s)));
    return { g, y, A: Ai, B: Bi, feeds: (a: Float32Array, b: Float32Array) => ({ A: a, B: b }) };
  };
  const weightsOut = Float32Array.from({ length: 3 * o }, (_, k) => Math.cos(k));
  const ref = build(false),
    ours = build(true);
  for (const b of [ref, ours]) {
    const loss = b.y.mul(b.g.constant(weightsOut, 'f32', [3, o])).sum();
    const [dA, dB] = grad(loss, [b.A, b.B]);
    b.g.output('loss', loss);
    b.g.output('dA', dA);
    b.g.output('dB', dB);
  }
  const run = async (b: typeof ref) => await (await compile(b.g, { worker: false })).run(b.feeds(A, B));
  const [rr, oo] = [await run(ref), await run(ours)];
  assertAllclose(oo.loss.data as Float32Array, rr.loss.data as Float32Array, {
    rtol: 1e-5,
    what: 'DoRA forward vs paper formula',
  });
  assertAllclose(oo.dA.data as Float32Array, rr.dA.data as Float32Array, {
    rtol: 1e-4,
    atol: 1e-6,
    what: 'dA (norm detached)',
  });
  assertAllclose(oo.dB.data as Float32Array, rr.dB.data as Float32Array, {
    rtol: 1e-4,
    atol: 1e-6,
    what: 'dB (norm detached)',
  });
});

test(
  'generationAdapter keys stay equal while nothing changes and differ after setValues (graphs are reused, never ' +
    'stale)',
  async () => {
    const peft = await peftWith({ r: 2 });
    const k1 = peft.generationAdapter().key,
      k2 = peft.generationAdapter().key;
    assert.equal(k1, k2);
    peft.setValues('default', peft.trainableValues('default'));
    assert.notEqual(peft.generationAdapter().key, k1);
    peft.setActive();
    assert.notEqual(peft.generationAdapter().key, k1);
  },
);

test('"all-linear" targets Linear and GPT-2 Conv1D layers, never embeddings or the output head', async () => {
  const peft = await peftWith({ r: 2, target_modules: 'all-linear' });
  assert.deepEqual(
    [...peft.get('default').layers.keys()],
    ['model.layers.0.q_proj', 'model.layers.1.q_proj', 'model.layers.1.c_fc'],
  );
});

test("the hooks say which modules they adapt: the adapter's layers and saved modules, nothing else", async () => {
  const peft = await peftWith({ r: 2, target_modules: ['q_proj'], modules_to_save: ['lm_head'] });
  const hooks = peft.hooks();
  const adapted = MODULES.map((m) => m.path).filter((p) => hooks.adapts!(p));
  assert.deepEqual(adapted, ['model.layers.0.q_proj', 'model.layers.1.q_proj', 'lm_head']);
  const plain = await peftWith({ r: 2, target_modules: ['c_fc'] });
  assert.equal(plain.hooks().adapts!('lm_head'), false);
  assert.equal(plain.hooks().adapts!('model.layers.1.c_fc'), true);
});
