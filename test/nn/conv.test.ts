// The Conv2d module: a tiny conv net built with createContext equals torch's output (test/fixtures/conv), ctx.conv2d
// routes through hooks.conv2d, conv2dForward's gradients match finite differences, and the PEFT adapter fixtures
// (made for the LoRA-on-Conv2d method) load with the keys, shapes and semantics interop/README.md documents.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Graph, type Tensor } from '../../src/graph/index.ts';
import { SafetensorsFile } from '../../src/io/index.ts';
import { type Conv2dModule, type ModuleHooks, conv2dForward } from '../../src/nn/index.ts';
import { compile } from '../../src/runtime/index.ts';
import { gradcheck } from '../graph/gradcheck.ts';
import { assertAllclose } from '../helpers.ts';
import { convNetContext, convNetForward, convNetModules, openConvNet } from './convnet.ts';

const DIR = 'test/fixtures/conv';
const CASES = ['lora', 'lora_groups', 'lora_dilated', 'dora'] as const;

type Tensors = Record<string, { data: Float32Array; shape: number[] }>;

/** Every tensor of a safetensors file, as f32. */
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

/** Runs the fixture net on the fixture input, with optional hooks; returns the output values. */
async function runNet(hooks?: ModuleHooks): Promise<Float32Array> {
  const { config, file } = await openConvNet(DIR);
  const { input } = await readF32(join(DIR, 'expected.safetensors'));
  const g = new Graph('convnet');
  const x = g.input('x', 'f32', ['N', ...input.shape.slice(1)]);
  g.output('y', convNetForward(convNetContext(g, config, file, { hooks }), x));
  const s = await compile(g, { worker: false });
  const out = await s.run({ x: input });
  await s.dispose();
  await file.close();
  return out.y.data as Float32Array;
}

test("the conv net (3×3 same, grouped strided without bias, dilated 2×2, 1×1) equals torch's output", async () => {
  const { base_output } = await readF32(join(DIR, 'expected.safetensors'));
  assertAllclose(await runNet(), base_output.data, { rtol: 1e-5, atol: 1e-5, what: 'conv net output' });
});

test('ctx.conv2d hands each Conv2d to hooks.conv2d with its sizes; the hook output replaces the layer', async () => {
  const seen: string[] = [];
  const y = await runNet({
    conv2d: (m: Conv2dModule, x: Tensor) => {
      seen.push(`${m.path}: ${m.inChannels}->${m.outChannels} k${m.kernel} s${m.stride} p${m.padding} d${m.dilation}`);
      seen.push(`  g${m.groups} w[${m.weight.shape}] ${m.bias ? 'bias' : 'no bias'}`);
      return m.path === '6' ? m.base(x).mul(2) : m.base(x);
    },
  });
  assert.deepEqual(seen, [
    '0: 3->8 k3,3 s1,1 p1,1 d1,1',
    '  g1 w[8,3,3,3] bias',
    '2: 8->8 k3,3 s2,2 p1,1 d1,1',
    '  g2 w[8,4,3,3] no bias',
    '4: 8->8 k2,2 s2,2 p1,1 d2,2',
    '  g1 w[8,8,2,2] bias',
    '6: 8->4 k1,1 s1,1 p0,0 d1,1',
    '  g1 w[4,8,1,1] bias',
  ]);
  const { base_output } = await readF32(join(DIR, 'expected.safetensors'));
  assertAllclose(
    y,
    base_output.data.map((v) => 2 * v),
    { rtol: 1e-5, atol: 1e-5, what: 'hooked output' },
  );
});

test('a Conv2d module is built once; its weight can be a trainable graph input; ctx.linear refuses it', async () => {
  const { config, file } = await openConvNet(DIR);
  const g = new Graph();
  const ctx = convNetContext(g, config, file, { trainable: ['2.weight'] });
  const m = ctx.conv2dModule('2');
  assert.equal(ctx.conv2dModule('2'), m);
  assert.equal(m.weight.kind, 'input');
  assert.deepEqual(m.weight.shape, [8, 4, 3, 3]);
  assert.equal(ctx.conv2dModule('0').weight.kind, 'initializer');
  assert.throws(() => ctx.linear('0', g.input('x', 'f32', [1, 3])), /internal: model code asked for linear module '0'/);
  assert.throws(() => m.base(g.input('z', 'f32', [1, 3, 5, 5])), /input \[1, 3, 5, 5\] is not \[N, 8, H, W\]/);
  await file.close();
});

test('gradient: conv2dForward (groups 2, stride 2, padding [1, 0], dilation [1, 2]) w.r.t. x, weight, bias', () =>
  gradcheck(
    (_g, [x, w, b]) => {
      const f = (t: Tensor) => t.cast('f32'); // ORT has no f64 Conv
      const m = { inChannels: 4, groups: 2 };
      return conv2dForward(f(x), f(w), f(b), { ...m, stride: [2, 2], padding: [1, 0], dilation: [1, 2] }).cast('f64');
    },
    [{ shape: [2, 4, 5, 6] }, { shape: [6, 2, 3, 2] }, { shape: [6] }],
    { rtol: 2e-3, atol: 2e-3, h: 1e-3 },
  ));

/** One adapter fixture folder. */
interface Case {
  config: { r: number; lora_alpha: number; target_modules: string[]; use_dora: boolean; peft_type: string };
  info: { adapter_tensors: Record<string, number[]>; layers: Record<string, { scaling: number }> };
  adapter: Tensors;
  expected: Tensors;
  merged: Tensors | null;
}

async function loadCase(name: string): Promise<Case> {
  const dir = join(DIR, name);
  const merged = name === 'lora' || name === 'dora' ? await readF32(join(dir, 'merged_model.safetensors')) : null;
  return {
    config: await readJson(join(dir, 'adapter_config.json')),
    info: await readJson(join(dir, 'expected.json')),
    adapter: await readF32(join(dir, 'adapter_model.safetensors')),
    expected: await readF32(join(dir, 'expected.safetensors')),
    merged,
  };
}

const key = (path: string, param: string) => `base_model.model.${path}.${param}`;

/** (α/r)·ΔW with ΔW[o, :] = Σ_k B[o, k]·A[k, :], as [out, in·kh·kw] (groups 1: B [out, r, 1, 1], A [r, in, kh, kw]). */
function scaledDelta(c: Case, path: string): Float32Array {
  const [a, b] = [c.adapter[key(path, 'lora_A.weight')], c.adapter[key(path, 'lora_B.weight')]];
  const [r, cols, out] = [a.shape[0], a.data.length / a.shape[0], b.shape[0]];
  const s = c.info.layers[path].scaling;
  const d = new Float32Array(out * cols);
  for (let o = 0; o < out; o++)
    for (let k = 0; k < r; k++)
      for (let j = 0; j < cols; j++) d[o * cols + j] += s * b.data[o * r + k] * a.data[k * cols + j];
  return d;
}

/** DoRA's m̂ = m / ‖W + (α/r)·ΔW‖ per output channel (the norm over in, kh, kw), from the stored weights. */
function doraScale(c: Case, path: string, w: Float32Array): Float32Array {
  const d = scaledDelta(c, path);
  const mag = c.adapter[key(path, 'lora_magnitude_vector')].data;
  const cols = d.length / mag.length;
  return mag.map((m, o) => {
    let ss = 0;
    for (let j = 0; j < cols; j++) ss += (w[o * cols + j] + d[o * cols + j]) ** 2;
    return m / Math.sqrt(ss);
  });
}

test('the PEFT conv adapter fixtures load with SafetensorsFile, with conv LoRA/DoRA keys and shapes', async () => {
  const { config, file } = await openConvNet(DIR);
  await file.close();
  const base = new Map(convNetModules(config).map((m) => [m.path, m]));
  for (const name of CASES) {
    const c = await loadCase(name);
    assert.deepEqual(Object.keys(c.adapter).sort(), Object.keys(c.info.adapter_tensors).sort(), name);
    assert.equal(c.config.peft_type, 'LORA');
    assert.deepEqual([c.config.r, c.config.lora_alpha, c.config.use_dora], [4, 8, name === 'dora']);
    const expectKeys: string[] = [];
    for (const path of c.config.target_modules) {
      const m = base.get(path)!;
      assert.deepEqual(
        c.adapter[key(path, 'lora_A.weight')].shape,
        [4, m.inChannels, ...m.kernel],
        `${name} ${path} A`,
      );
      assert.deepEqual(c.adapter[key(path, 'lora_B.weight')].shape, [m.outChannels, 4 / m.groups, 1, 1], `${name} B`);
      expectKeys.push(key(path, 'lora_A.weight'), key(path, 'lora_B.weight'));
      if (c.config.use_dora) {
        assert.deepEqual(c.adapter[key(path, 'lora_magnitude_vector')].shape, [1, m.outChannels, 1, 1]);
        expectKeys.push(key(path, 'lora_magnitude_vector'));
      }
      assert.equal(c.info.layers[path].scaling, 2, 'scaling = lora_alpha / r');
    }
    assert.deepEqual(Object.keys(c.adapter).sort(), expectKeys.sort(), `${name}: no other tensors`);
    assert.deepEqual(Object.keys(c.expected).sort(), c.merged ? ['merged_output', 'output'] : ['output']);
    assert.deepEqual(c.expected.output.shape, [2, 4, 3, 3]);
  }
});

/** PEFT's conv LoRA (or DoRA) as interop/README.md states it, written as a test hook: the method lives in peft/. */
function peftHook(c: Case, weights: Tensors, dilateA = false): ModuleHooks {
  return {
    conv2d: (m, x) => {
      const y = m.base(x); // [N, out, H', W'], bias included
      if (!c.config.target_modules.includes(m.path)) return y;
      const g = x.graph;
      const t = (p: string) => g.constant(c.adapter[key(m.path, p)].data, 'f32', c.adapter[key(m.path, p)].shape);
      const opts = { stride: m.stride, padding: m.padding, ...(dilateA ? { dilation: m.dilation } : {}) };
      const a = x.conv2d(t('lora_A.weight'), null, opts); // [N, r, H', W']: no dilation, as PEFT's lora_A
      const ba = a.conv2d(t('lora_B.weight'), null, { groups: m.groups }).mul(c.info.layers[m.path].scaling);
      if (!c.config.use_dora) return y.add(ba);
      const s = doraScale(c, m.path, weights[`${m.path}.weight`].data);
      const mhat = g.constant(s, 'f32', [1, s.length, 1, 1]);
      const noBias = m.bias ? y.sub(m.bias.reshape([1, -1, 1, 1])) : y;
      return y.add(mhat.sub(1).mul(noBias)).add(mhat.mul(ba)); // base + (m̂ − 1)·(Wx) + m̂·s·B(A(x))
    },
  };
}

test("PEFT's conv LoRA is base + (α/r)·B(A(x)), A undilated; DoRA rescales by m̂: 4 outputs match", async () => {
  const weights = await readF32(join(DIR, 'model.safetensors'));
  for (const name of CASES) {
    const c = await loadCase(name);
    assertAllclose(await runNet(peftHook(c, weights)), c.expected.output.data, { rtol: 1e-5, atol: 1e-5, what: name });
  }
  // The same hook with the base dilation in A misses the fixture: PEFT's lora_A really drops it.
  const c = await loadCase('lora_dilated');
  const dilated = await runNet(peftHook(c, weights, true));
  assert.ok(dilated.some((v, i) => Math.abs(v - c.expected.output.data[i]) > 1e-3));
});

test('merged weights are W + (α/r)·ΔW (LoRA), m̂·(W + (α/r)·ΔW) (DoRA); other tensors are the base ones', async () => {
  const base = await readF32(join(DIR, 'model.safetensors'));
  for (const name of ['lora', 'dora'] as const) {
    const c = await loadCase(name);
    assert.deepEqual(Object.keys(c.merged!).sort(), Object.keys(base).sort());
    for (const [k, v] of Object.entries(base)) {
      const path = k.split('.')[0];
      let want = v.data;
      if (k.endsWith('.weight') && c.config.target_modules.includes(path)) {
        const d = scaledDelta(c, path);
        const s = name === 'dora' ? doraScale(c, path, v.data) : null;
        const cols = d.length / v.shape[0];
        want = v.data.map((w, j) => (s ? s[Math.floor(j / cols)] : 1) * (w + d[j]));
      }
      assert.deepEqual(c.merged![k].shape, v.shape);
      assertAllclose(c.merged![k].data, want, { rtol: 1e-5, atol: 1e-6, what: `${name} merged ${k}` });
    }
    assertAllclose(c.expected.merged_output.data, c.expected.output.data, {
      atol: 1e-5,
      what: `${name} merged output`,
    });
  }
});
