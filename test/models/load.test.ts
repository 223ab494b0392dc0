// loadModel: module and parameter listings, weight checks and their errors, checkpoint name aliases, and the
// ways a graph can take weights (hooks, trainable inputs, overrides, file-backed bf16).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LorakitError } from '../../src/errors.ts';
import { Graph, crossEntropy, grad } from '../../src/graph/index.ts';
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from '../../src/io/index.ts';
import { buildCausalLM, buildSequenceClassifier, causalGraphInputs, loadModel } from '../../src/models/index.ts';
import type { ModuleHooks } from '../../src/nn/index.ts';
import { compile } from '../../src/runtime/index.ts';
import { FIXTURES, i64, maxAbsDiff, readExpected } from './helpers.ts';

const tmp = () => mkdtempSync(join(tmpdir(), 'lorakit-models-'));

/** A copy of fixture `name` with config edits and the weights passed through `edit` (name → tensor or undefined). */
async function variant(
  name: string,
  config: Record<string, unknown>,
  edit?: (n: string, t: TensorToWrite) => [string, TensorToWrite] | undefined,
): Promise<string> {
  const dir = tmp();
  const src = join(FIXTURES, name);
  writeFileSync(
    join(dir, 'config.json'),
    JSON.stringify({ ...JSON.parse(readFileSync(join(src, 'config.json'), 'utf8')), ...config }),
  );
  if (!edit) {
    copyFileSync(join(src, 'model.safetensors'), join(dir, 'model.safetensors'));
    return dir;
  }
  const f = await SafetensorsFile.open(join(src, 'model.safetensors'));
  const out: Record<string, TensorToWrite> = {};
  for (const n of f.names()) {
    const info = f.info(n);
    const r = edit(n, { dtype: info.dtype, shape: info.shape, data: await f.readAs(n, 'f32') });
    if (r) out[r[0]] = r[1];
  }
  await f.close();
  await writeSafetensors(join(dir, 'model.safetensors'), out);
  return dir;
}

const rejects = (p: Promise<unknown>, code: string, ...parts: string[]) =>
  assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof LorakitError, String(e));
    assert.equal(e.code, code, e.message);
    for (const part of parts) assert.ok(e.message.includes(part), `"${part}" not in: ${e.message}`);
    return true;
  });

test('modules() lists every Linear, Conv1D and Embedding with its HF path and sizes', async () => {
  const llama = await loadModel(join(FIXTURES, 'llama'));
  const mods = llama.modules();
  assert.equal(mods.length, 1 + 2 * 7 + 1);
  assert.deepEqual(
    mods.find((m) => m.path === 'model.layers.1.self_attn.k_proj'),
    {
      kind: 'linear',
      path: 'model.layers.1.self_attn.k_proj',
      inFeatures: 64,
      outFeatures: 32,
      weightName: 'model.layers.1.self_attn.k_proj.weight',
      biasName: null,
    },
  );
  assert.equal(llama.family, 'llama');
  const smollm = await loadModel(join(FIXTURES, 'smollm'));
  assert.equal(smollm.modules().find((m) => m.path === 'lm_head')!.weightName, 'model.embed_tokens.weight');
  const gpt2 = await loadModel(join(FIXTURES, 'gpt2'));
  assert.deepEqual(
    gpt2.modules().find((m) => m.path === 'transformer.h.0.attn.c_attn'),
    {
      kind: 'conv1d',
      path: 'transformer.h.0.attn.c_attn',
      inFeatures: 64,
      outFeatures: 192,
      weightName: 'transformer.h.0.attn.c_attn.weight',
      biasName: 'transformer.h.0.attn.c_attn.bias',
    },
  );
  const bert = await loadModel(join(FIXTURES, 'bert'));
  assert.deepEqual(
    bert
      .modules()
      .filter((m) => m.kind === 'embedding')
      .map((m) => m.path),
    ['bert.embeddings.word_embeddings', 'bert.embeddings.position_embeddings', 'bert.embeddings.token_type_embeddings'],
  );
  assert.equal(bert.cache, null);
  // every tensor in these files is a parameter the model reads, tied ones stored once
  for (const m of [llama, smollm, gpt2, bert]) {
    const f = await SafetensorsFile.open(join(m.dir, 'model.safetensors'));
    assert.equal(
      m.paramCount,
      f.names().reduce((a, n) => a + f.info(n).shape.reduce((x, y) => x * y, 1), 0),
      m.dir,
    );
    await f.close();
    await m.close();
  }
  const qwen2 = await loadModel(join(FIXTURES, 'qwen2'));
  assert.deepEqual(qwen2.dtypes, { BF16: qwen2.paramCount });
  await qwen2.close();
});

test('an unsupported model_type is refused with the list of supported ones', async () => {
  const dir = tmp();
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ model_type: 't5', d_model: 8 }));
  await rejects(loadModel(dir), 'LK_UNSUPPORTED', 't5', 'gpt2', 'llama', 'mistral', 'qwen2', 'bert');
});

test('a config/weight shape mismatch names the tensor and both shapes', async () => {
  await rejects(
    loadModel(await variant('llama', { intermediate_size: 96 })),
    'LK_SHAPE_MISMATCH',
    "'model.layers.0.mlp.gate_proj.weight'",
    '[128, 64]',
    '[96, 64]',
  );
});

test('a missing weight is named, with the names that look close', async () => {
  const dir = await variant('llama', {}, (n, t) => (n === 'model.layers.1.mlp.up_proj.weight' ? undefined : [n, t]));
  await rejects(loadModel(dir), 'LK_FILE_INVALID', "'model.layers.1.mlp.up_proj.weight'", 'model.layers.1.mlp.');
});

test('GPT-2 files without the "transformer." prefix load and give the same logits', async () => {
  const dir = await variant('gpt2', {}, (n, t) => [n.replace(/^transformer\./, ''), t]);
  const model = await loadModel(dir);
  const e = await readExpected('gpt2');
  const g = new Graph('gpt2-noprefix');
  const ids = g.input('input_ids', 'i64', [2, 12]);
  g.output('logits', buildCausalLM(model.context(g), { inputIds: ids }).logits);
  const out = await (await compile(g, { worker: false })).run({ input_ids: i64(e.json.input_ids) });
  assert.ok(maxAbsDiff(out.logits.data as Float32Array, e.tensors.logits, [2, 12, 384]) <= 1e-4);
  await model.close();
});

test('hooks see every module of the model exactly once, and change its output', async () => {
  for (const name of ['llama', 'gpt2', 'bert']) {
    const model = await loadModel(join(FIXTURES, name));
    const seen: string[] = [];
    const hooks: ModuleHooks = {
      linear: (m, x) => {
        seen.push(m.path);
        return m.path === 'classifier' || m.path === 'lm_head' ? m.base(x).mul(0) : m.base(x);
      },
      embedding: (m, ids) => {
        seen.push(m.path);
        return m.base(ids);
      },
    };
    const g = new Graph(`${name}-hooks`);
    const ids = g.input('input_ids', 'i64', [1, 4]);
    const ctx = model.context(g, { hooks });
    const logits =
      name === 'bert'
        ? buildSequenceClassifier(ctx, { inputIds: ids }).logits
        : buildCausalLM(ctx, { inputIds: ids }).logits;
    assert.deepEqual(
      [...seen].sort(),
      model
        .modules()
        .map((m) => m.path)
        .sort(),
      name,
    );
    g.output('logits', logits);
    const out = await (await compile(g, { worker: false })).run({ input_ids: i64([[1, 2, 3, 4]]) });
    assert.ok(
      (out.logits.data as Float32Array).every((v) => v === 0),
      name,
    );
    await model.close();
  }
});

test(
  'trainable weights become graph inputs; the gradient reaches a tied embedding through every frozen ' + 'layer',
  async () => {
    const model = await loadModel(join(FIXTURES, 'smollm'));
    const e = await readExpected('smollm');
    const name = 'model.embed_tokens.weight';
    const g = new Graph('smollm-train');
    const { inputs } = causalGraphInputs(g, model.cache!);
    const ctx = model.context(g, { trainable: [name] });
    const out = buildCausalLM(ctx, inputs);
    const w = ctx.weights.inputs.get(name)!;
    assert.deepEqual([w.name, w.dtype, w.shape], [name, 'f32', [384, 64]]);
    const labels = g.input('labels', 'i64', ['N']);
    const loss = crossEntropy(out.logits.reshape([-1, 384]), labels);
    g.output('logits', out.logits);
    g.output('loss', loss);
    g.output('dw', grad(loss, [w])[0]);
    const s = await compile(g, { worker: false });
    const ids: number[][] = e.json.input_ids;
    const value = await model.read(name);
    const feeds = (v: Float32Array) => ({
      input_ids: i64(ids),
      position_ids: i64(ids.map((r) => r.map((_, t) => t))),
      attention_mask: i64(ids.map((r) => r.map(() => 1))),
      labels: { data: BigInt64Array.from(ids.flat().map((_, k) => BigInt((k * 7) % 384))), shape: [24] },
      [name]: { data: v, shape: [384, 64] },
    });
    const r = await s.run(feeds(value));
    assert.ok(maxAbsDiff(r.logits.data as Float32Array, e.tensors.logits, [2, 12, 384]) <= 1e-4);
    // directional derivative: (L(w + εd) − L(w − εd)) / 2ε ≈ ⟨dL/dw, d⟩ with d = dL/dw
    const dw = r.dw.data as Float32Array;
    const norm2 = dw.reduce((a, v) => a + v * v, 0);
    assert.ok(norm2 > 0);
    const eps = 1e-2 / Math.sqrt(norm2);
    const [lp, lm] = [
      await s.run(feeds(value.map((v, k) => v + eps * dw[k]))),
      await s.run(feeds(value.map((v, k) => v - eps * dw[k]))),
    ];
    const fd = ((lp.loss.data[0] as number) - (lm.loss.data[0] as number)) / (2 * eps);
    assert.ok(Math.abs(fd - norm2) <= 2e-2 * norm2, `finite difference ${fd} vs ${norm2}`);
    await model.close();
  },
);

test('overrides replace stored weights; bf16 weights stay file-backed bf16 initializers', async () => {
  const model = await loadModel(join(FIXTURES, 'qwen2'));
  const g = new Graph('qwen2-override');
  const ids = g.input('input_ids', 'i64', [1, 3]);
  const overrides = new Map([['lm_head.weight', new Float32Array(384 * 64)]]);
  g.output('logits', buildCausalLM(model.context(g, { overrides }), { inputIds: ids }).logits);
  const q = g.initializers.get('model.layers.0.self_attn.q_proj.weight')!;
  assert.equal(q.tensor.dtype, 'bf16');
  assert.equal(q.data.kind, 'file');
  assert.equal(g.initializers.get('lm_head.weight')!.data.kind, 'array');
  const out = await (await compile(g, { worker: false })).run({ input_ids: i64([[5, 6, 7]]) });
  assert.ok((out.logits.data as Float32Array).every((v) => v === 0));
  const g2 = new Graph('qwen2-bad-override');
  assert.throws(
    () =>
      buildCausalLM(model.context(g2, { overrides: new Map([['lm_head.weight', new Float32Array(3)]]) }), {
        inputIds: g2.input('input_ids', 'i64', [1, 3]),
      }).logits, // the head is built when its logits are first read
    /override for weight 'lm_head.weight' has 3 values, but its shape \[384, 64\] needs 24576/,
  );
  await model.close();
});

test('a BERT checkpoint without a classifier loads; the head must then be trained or overridden', async () => {
  const model = await loadModel(
    await variant('bert', {}, (n, t) => (n.startsWith('classifier.') ? undefined : [n, t])),
  );
  assert.deepEqual(model.missing, ['classifier.weight', 'classifier.bias']);
  const build = (trainable: string[]) => {
    const g = new Graph('bert-head');
    return buildSequenceClassifier(model.context(g, { trainable }), {
      inputIds: g.input('input_ids', 'i64', ['B', 'T']),
    });
  };
  assert.throws(
    () => build([]),
    (e: unknown) =>
      e instanceof LorakitError && e.code === 'LK_FILE_INVALID' && e.message.includes("'classifier.weight'"),
  );
  assert.deepEqual(build(['classifier.weight', 'classifier.bias']).logits.shape, ['B', 2]);
  await model.close();
});
