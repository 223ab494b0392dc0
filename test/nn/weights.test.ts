// WeightSource: file-backed initializers pointing into the safetensors file, half-precision storage cast once,
// trainable inputs, overrides, and the errors for unknown names and wrong shapes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Graph } from '../../src/graph/index.ts';
import { openWeights } from '../../src/io/index.ts';
import { WeightSource, weightStore } from '../../src/nn/index.ts';
import { FIXTURES } from '../models/helpers.ts';

test('a stored weight is an initializer at its byte range of the file; bf16 is kept and cast to f32 once', async () => {
  for (const [model, dtype] of [
    ['llama', 'f32'],
    ['qwen2', 'bf16'],
  ] as const) {
    const reader = await openWeights(join(FIXTURES, model));
    const g = new Graph();
    const ws = new WeightSource(g, weightStore(reader));
    const name = 'model.layers.0.mlp.up_proj.weight';
    const t = ws.get(name, [128, 64]);
    assert.equal(ws.get(name, [128, 64]), t);
    assert.equal(t.dtype, 'f32');
    const init = g.initializers.get(name)!;
    const info = reader.info(name);
    assert.deepEqual(
      [init.tensor.dtype, init.data],
      [
        dtype,
        {
          kind: 'file',
          path: join(FIXTURES, model, 'model.safetensors'),
          offset: info.dataOffset,
          length: info.byteLength,
        },
      ],
    );
    assert.equal(t.kind === 'initializer', dtype === 'f32'); // bf16 goes through one Cast node
    await reader.close();
  }
});

test('trainable names are graph inputs in the compute dtype; overrides are in-memory initializers', async () => {
  const reader = await openWeights(join(FIXTURES, 'llama'));
  const g = new Graph();
  const ws = new WeightSource(g, weightStore(reader), {
    trainable: ['model.norm.weight'],
    overrides: new Map([['lm_head.weight', new Float64Array(384 * 64)]]),
    dtype: 'f64',
  });
  const t = ws.get('model.norm.weight', [64]);
  assert.deepEqual([t.kind, t.name, t.dtype], ['input', 'model.norm.weight', 'f64']);
  assert.equal(ws.inputs.get('model.norm.weight'), t);
  assert.equal(ws.get('lm_head.weight', [384, 64]).dtype, 'f64');
  assert.equal(g.initializers.get('lm_head.weight')!.data.kind, 'array');
  assert.equal(ws.get('model.embed_tokens.weight', [384, 64]).dtype, 'f64'); // f32 file weight cast to f64
  await reader.close();
});

test('an unknown name lists close names; a wrong shape names the tensor and both shapes', async () => {
  const reader = await openWeights(join(FIXTURES, 'llama'));
  const ws = new WeightSource(new Graph(), weightStore(reader));
  assert.throws(
    () => ws.get('model.layers.0.mlp.upp_proj.weight', [128, 64]),
    (e: any) =>
      e.code === 'LK_FILE_INVALID' &&
      e.message.includes("'model.layers.0.mlp.upp_proj.weight'") &&
      e.message.includes("'model.layers.0.mlp.up_proj.weight'"),
  );
  assert.throws(
    () => ws.get('model.layers.0.mlp.up_proj.weight', [64, 128]),
    (e: any) =>
      e.code === 'LK_SHAPE_MISMATCH' &&
      /'model\.layers\.0\.mlp\.up_proj\.weight'.*\[128, 64\].*\[64, 128\]/.test(e.message),
  );
  assert.throws(() => new WeightSource(new Graph(), null).get('w', [2]), /weight 'w' has no value/);
  await reader.close();
});
