// LoRA and DoRA on Conv2d against PEFT 0.18.1, both ways, on the conv net of test/fixtures/conv (3×3 "same",
// grouped strided without bias, dilated 2×2, 1×1). PEFT → lorakit: PEFT's adapter folders load through loadAdapter
// and give PEFT's unmerged output, merged weights and merged output; grouped and dilated layers refuse to merge.
// lorakit → PEFT: the folders scripts/make-lorakit-conv-adapters.ts writes are stable, and lorakit's outputs equal
// what PEFT computed after loading them (interop/check_lorakit_conv.py). Plus the init's fan-in, the parameter count
// against PEFT's tensor shapes, the refusals, and gradients through a grouped, strided adapter.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LorakitError } from '../../../src/errors.ts';
import { Graph, grad, type Tensor } from '../../../src/graph/index.ts';
import { SafetensorsFile } from '../../../src/io/index.ts';
import type { Conv2dModule, ModuleHooks } from '../../../src/nn/index.ts';
import { Rng } from '../../../src/linalg/index.ts';
import { loadAdapter, PeftModel } from '../../../src/peft/index.ts';
import { compile } from '../../../src/runtime/index.ts';
import { CASES, makeCase, OUT_REL, ROOT } from '../../../scripts/make-lorakit-conv-adapters.ts';
import { assertAllclose, centralDifferences } from '../../helpers.ts';
import { convNetBase, convNetContext, convNetForward, openConvNet } from '../../nn/convnet.ts';

const NET = join(ROOT, 'test/fixtures/conv');
const PEFT_CASES = ['lora', 'lora_groups', 'lora_dilated', 'dora'] as const;
const LORAKIT = join(ROOT, OUT_REL);

type Tensors = Record<string, { data: Float32Array; shape: number[] }>;

async function readF32(path: string): Promise<Tensors> {
  const f = await SafetensorsFile.open(path);
  try {
    const out: Tensors = {};
    for (const n of f.names()) out[n] = { data: await f.readAs(n, 'f32'), shape: [...f.info(n).shape] };
    return out;
  } finally {
    await f.close();
  }
}
const readJson = async (path: string) => JSON.parse(await readFile(path, 'utf8'));

const { config, file } = await openConvNet(NET);
const { input } = await readF32(join(NET, 'expected.safetensors')); // [2, 3, 9, 9]
const tmp = await mkdtemp(join(tmpdir(), 'lorakit-conv-'));
after(async () => {
  await file.close();
  await rm(tmp, { recursive: true, force: true });
});

const fresh = () => new PeftModel(convNetBase(config, file));

/** The net's output with the PeftModel's active adapters (merged weights as overrides) on x. */
async function output(peft: PeftModel | null, x = input): Promise<Float32Array> {
  const g = new Graph('convnet-lora');
  const xi = g.input('x', 'f32', x.shape);
  const ctx = convNetContext(g, config, file, { hooks: peft?.hooks(), overrides: peft?.weightOverrides() });
  g.output('y', convNetForward(ctx, xi));
  const s = await compile(g, { worker: false });
  try {
    return (await s.run({ x: x.data })).y.data as Float32Array;
  } finally {
    await s.dispose();
  }
}

const unsupported =
  (...parts: string[]) =>
  (e: unknown) =>
    e instanceof LorakitError && e.code === 'LK_UNSUPPORTED' && parts.every((p) => e.message.includes(p));

test("PEFT's conv adapters load with PEFT's r and scaling and give PEFT's unmerged output (1e-5)", async () => {
  for (const name of PEFT_CASES) {
    const dir = join(NET, name);
    const peft = fresh();
    assert.deepEqual((await loadAdapter(peft, dir)).unused, [], name);
    const info = await readJson(join(dir, 'expected.json'));
    const layers = peft.get('default').layers;
    assert.deepEqual([...layers.keys()].sort(), Object.keys(info.layers).sort(), name);
    for (const [path, l] of layers) {
      assert.equal(l.settings.r, info.layers[path].r);
      assert.equal(l.settings.scaling, info.layers[path].scaling);
    }
    const { output: want } = await readF32(join(dir, 'expected.safetensors'));
    const got = await output(peft);
    assertAllclose(got, want.data, { rtol: 1e-5, atol: 1e-5, what: `${name} output` });
    assert.ok(info.max_abs_diff_vs_base > 0.05, `${name}: the adapter matters`);
  }
});

test("lora and dora merge into PEFT's merged weights (1e-6) and output; unmerge restores the base", async () => {
  const base = await output(null);
  for (const name of ['lora', 'dora']) {
    const dir = join(NET, name);
    const peft = fresh();
    await loadAdapter(peft, dir);
    const unmerged = await output(peft);
    await peft.merge();
    const merged = await readF32(join(dir, 'merged_model.safetensors'));
    const overrides = peft.weightOverrides();
    assert.deepEqual([...overrides.keys()].sort(), ['0.weight', '6.weight'], name);
    for (const [k, t] of Object.entries(merged)) {
      const ours = overrides.get(k) ?? (await file.readAs(k, 'f32'));
      assertAllclose(ours, t.data, { rtol: 1e-5, atol: 1e-6, what: `${name} merged ${k}` });
    }
    const { merged_output } = await readF32(join(dir, 'expected.safetensors'));
    assertAllclose(await output(peft), merged_output.data, { rtol: 1e-5, atol: 1e-5, what: `${name} merged` });
    assertAllclose(await output(peft), unmerged, { rtol: 1e-5, atol: 1e-5, what: `${name} merged vs unmerged` });
    peft.unmerge();
    peft.disable();
    assertAllclose(await output(peft), base, { rtol: 0, atol: 0, what: `${name} disabled` });
  }
});

test('grouped and dilated conv adapters refuse to merge, naming the layer, and change nothing', async () => {
  const peft = fresh();
  await loadAdapter(peft, join(NET, 'lora_groups'), 'groups');
  await loadAdapter(peft, join(NET, 'lora_dilated'), 'dilated');
  await loadAdapter(peft, join(NET, 'lora'), 'plain');
  await assert.rejects(peft.merge(['groups']), unsupported('"groups"', '2: a Conv2d with groups 2', 'PEFT refuses'));
  await assert.rejects(peft.merge(['dilated']), unsupported('"dilated"', '4: a Conv2d with dilation [2,2]'));
  // every adapter is checked before any weight changes: the mergeable one is not merged either
  await assert.rejects(peft.merge(['plain', 'groups']), unsupported('"groups"'));
  assert.deepEqual(peft.merged, []);
  assert.equal(peft.weightOverrides().size, 0);
  await peft.merge(['plain']);
  assert.deepEqual(peft.merged, ['plain']);
});

test('a dilated conv adapter is refused where undilated lora_A changes the output size', async () => {
  const peft = fresh();
  await loadAdapter(peft, join(NET, 'lora_dilated'));
  // 7×7 → 7 → 4; conv 4 (k 2, s 2, p 1, d 2) gives 2×2, its undilated lora_A 3×3 (on 9×9 both give 3×3)
  const x = { data: new Float32Array(3 * 49).fill(0.5), shape: [1, 3, 7, 7] };
  await assert.rejects(
    output(peft, x),
    (e: unknown) =>
      e instanceof LorakitError &&
      e.code === 'LK_SHAPE_MISMATCH' &&
      e.message.includes('lora on 4:') &&
      e.message.includes('[3, 3]') &&
      e.message.includes('[2, 2]'),
  );
});

for (const name of Object.keys(CASES)) {
  test(`lorakit-written ${name}: regenerating gives the committed bytes; PEFT's output equals lorakit's`, async () => {
    const dir = join(LORAKIT, name);
    await makeCase(name, join(tmp, name));
    for (const f of ['adapter_config.json', 'adapter_model.safetensors', 'README.md', 'case.json']) {
      const [got, want] = await Promise.all([readFile(join(tmp, name, f)), readFile(join(dir, f))]);
      assert.ok(got.equals(want), `${name}/${f} differs; rerun the script and interop/check_lorakit_conv.py`);
    }
    const peft = fresh();
    assert.deepEqual((await loadAdapter(peft, dir)).unused, []);
    const want = await readF32(join(dir, 'peft_output.safetensors'));
    assertAllclose(await output(peft), want.output.data, { rtol: 1e-5, atol: 1e-5, what: `${name} output` });
    const report = await readJson(join(dir, 'peft.json'));
    const layers = peft.get('default').layers;
    assert.deepEqual([...layers.keys()].sort(), Object.keys(report.peft_layers).sort());
    for (const [path, p] of Object.entries<{ r: number; lora_alpha: number; scaling: number }>(report.peft_layers)) {
      const s = layers.get(path)!.settings;
      assert.deepEqual([s.r, s.alpha, Math.fround(s.scaling)], [p.r, p.lora_alpha, p.scaling], path);
    }
    if (CASES[name].merge === true) {
      await peft.merge();
      assertAllclose(await output(peft), want.merged_output.data, { rtol: 1e-5, atol: 1e-5, what: `${name} merged` });
    } else {
      assert.equal(want.merged_output, undefined);
      await assert.rejects(peft.merge(), unsupported('cannot be merged'));
    }
  });
}

test('default init: conv lora_A is Kaiming-uniform with fan_in = in·kh·kw, lora_B = 0: output unchanged', async () => {
  const peft = fresh();
  await peft.addAdapter('default', { target_modules: ['0', '2', '4', '6'], r: 4 }, { seed: 5 });
  for (const [path, l] of peft.get('default').layers) {
    const [, cin, kh, kw] = l.specs[0].shape;
    const bound = 1 / Math.sqrt(cin * kh * kw); // torch's kaiming_uniform_(a=√5): gain·√(3/fan_in) = 1/√fan_in
    const A = l.values['lora_A.weight'];
    const max = A.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    assert.ok(max <= bound && max > 0.8 * bound, `${path}: max |A| ${max}, bound ${bound}`);
    assert.ok(
      l.values['lora_B.weight'].every((v) => v === 0),
      path,
    );
  }
  assertAllclose(await output(peft), await output(null), { rtol: 0, atol: 0, what: 'at init' });
});

test("the trainable count r·in·kh·kw + out·r/groups equals the sizes of PEFT's conv tensors", async () => {
  let peftCount = 0;
  for (const name of ['lora', 'lora_groups', 'lora_dilated']) {
    const shapes: Record<string, number[]> = (await readJson(join(NET, name, 'expected.json'))).adapter_tensors;
    for (const s of Object.values(shapes)) peftCount += s.reduce((a, b) => a * b, 1);
  }
  const peft = fresh();
  const a = await peft.addAdapter('default', { target_modules: ['0', '2', '4', '6'], r: 4 });
  const layers = [...a.layers.values()].map((l) => ({ layer: l.info, settings: l.settings }));
  assert.equal(a.method.trainableCount(a.config, layers), peftCount);
  assert.equal(peftCount, 4 * 27 + 8 * 4 + (4 * 72 + 8 * 2) + (4 * 32 + 8 * 4) + (4 * 8 + 4 * 4));
});

test('a rank that the groups do not divide, and DoRA on a grouped conv, are refused naming the layer', async () => {
  await assert.rejects(
    fresh().addAdapter('x', { target_modules: ['2'], r: 3 }),
    (e: unknown) =>
      e instanceof LorakitError &&
      e.code === 'LK_CONFIG_INVALID' &&
      e.message.includes('2 is a Conv2d with groups 2, which must divide its rank 3'),
  );
  await fresh().addAdapter('x', { target_modules: ['0', '2'], r: 3, rank_pattern: { '2': 2 } }); // fixed per layer
  await assert.rejects(
    fresh().addAdapter('x', { target_modules: ['0', '2'], r: 4, use_dora: true }),
    unsupported('DoRA cannot wrap 2, a Conv2d with groups 2'),
  );
});

test("DoRA's dropout path convolves dropout(x) without bias: train(x) − y(x) = infer(x̃) − y(x̃)", async () => {
  // With dropout, DoRA's forward is y + (m̂ − 1)·(W∗x̃) + m̂·s·B(A(x̃)) with W∗x̃ its own conv (stride, padding,
  // dilation, groups from LayerInfo); without, it reuses y − b. Fed x̃ directly, the inference path gives the same
  // terms plus y(x̃) = W∗x̃ + b, so both differences must agree. A fixed mask stands in for the dropout draw.
  const peft = fresh();
  const a = await peft.addAdapter('default', { target_modules: ['0', '4'], r: 4, use_dora: true, lora_dropout: 0.5 });
  const r = new Rng(9);
  for (const l of a.layers.values()) {
    l.values['lora_B.weight'] = r.normalArray(l.values['lora_B.weight'].length, 0.1);
    l.values.lora_magnitude_vector = l.values.lora_magnitude_vector.map((m) => m * (1 + 0.1 * r.normal()));
  }
  const g = new Graph('dora-dropout');
  const outs: string[] = [];
  const hooks = {
    conv2d: (m: Conv2dModule, x: Tensor) => {
      const l = a.layers.get(m.path);
      if (!l) return m.base(x);
      const shape = x.shape as number[];
      const keep = Float32Array.from({ length: shape.reduce((u, v) => u * v, 1) }, () => (r.next() < 0.5 ? 0 : 1));
      const mask = g.constant(keep, 'f32', shape);
      const p = Object.fromEntries(l.specs.map((s) => [s.name, g.constant(l.values[s.name], 'f32', s.shape)]));
      const ctx = {
        layer: l.info,
        config: a.config,
        weight: m.weight,
        bias: m.bias,
        p,
        shared: {},
        inputs: {},
        setState: () => {},
      };
      const y = m.base(x);
      const train = a.method.forward({
        ...ctx,
        settings: l.settings,
        x,
        y,
        dropout: (t, q) => t.mul(mask).mul(1 / (1 - q)),
      });
      const xt = x.mul(mask).mul(2); // x̃
      const yt = m.base(xt);
      const infer = a.method.forward({
        ...ctx,
        settings: { ...l.settings, dropout: 0 },
        x: xt,
        y: yt,
        dropout: (t) => t,
      });
      g.output(`train${m.path}`, train.sub(y));
      g.output(`infer${m.path}`, infer.sub(yt));
      outs.push(m.path);
      return train;
    },
  } satisfies ModuleHooks;
  g.output('y', convNetForward(convNetContext(g, config, file, { hooks }), g.input('x', 'f32', input.shape)));
  const s = await compile(g, { worker: false });
  const out = await s.run({ x: input.data });
  await s.dispose();
  assert.deepEqual(outs, ['0', '4']);
  for (const path of outs) {
    const t = out[`train${path}`].data as Float32Array;
    assert.ok(
      t.some((v) => Math.abs(v) > 1e-2),
      `${path}: the adapter term matters`,
    );
    assertAllclose(t, out[`infer${path}`].data as Float32Array, { rtol: 1e-5, atol: 1e-5, what: `layer ${path}` });
  }
});

test('gradients of a grouped strided conv LoRA and of conv DoRA magnitudes match f32 finite differences', async () => {
  // the net is piecewise linear in A and B and in m: a step must not cross a ReLU kink (1e-2 does, for many
  // elements; m moves a whole channel, so its step is smaller)
  for (const [name, roles, h] of [
    ['lora_groups', ['a', 'b'], 1e-3],
    ['dora', ['magnitude'], 3e-4],
  ] as const) {
    const peft = fresh();
    await loadAdapter(peft, join(NET, name));
    const g = new Graph('conv-lora-grad');
    const x = g.input('x', 'f32', input.shape);
    const binding = peft.bind({ train: 'default' });
    const y = convNetForward(convNetContext(g, config, file, { hooks: binding.hooks }), x); // [2, 4, 3, 3]
    const w = g.constant(new Rng(4).normalArray(72, 1), 'f32', [2, 4, 3, 3]);
    const loss = y.mul(w).sum();
    const handles = binding.trainables().filter((h) => (roles as readonly string[]).includes(h.role));
    grad(
      loss,
      handles.map((h) => h.tensor),
    ).forEach((d, i) => g.output(`d${i}`, d));
    g.output('loss', loss);
    const s = await compile(g, { worker: false, optimization: 'disabled' });
    const values = peft.trainableValues('default');
    const feeds = () => ({ x: input.data, ...Object.fromEntries(values) });
    const out = await s.run(feeds());
    for (const [i, handle] of handles.entries()) {
      const v = values.get(handle.tensor.name)!;
      const numeric = await centralDifferences(
        v,
        h,
        async () => (await s.run(feeds(), ['loss'])).loss.data[0] as number,
      );
      assertAllclose(out[`d${i}`].data as Float32Array, numeric, {
        rtol: 1e-2,
        atol: 1e-3,
        what: `${name} d/d ${handle.tensor.name}`,
      });
    }
    await s.dispose();
  }
});
