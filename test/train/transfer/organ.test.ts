// Neural Organ Transplantation on tiny models: transplanted layers compute exactly what they computed in the donor
// (bitwise, same inputs), the recipient's own layers keep their outputs, the written folder loads and gives the
// in-memory model's logits, a recipient of another width is refused, and training moves only the organ.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Graph } from '../../../src/graph/index.ts';
import { type ModelConfig, parseModelConfig } from '../../../src/io/index.ts';
import { buildCausalLM, llamaDecoderLayer, llamaRope, loadModel, memoryContext } from '../../../src/models/index.ts';
import type { LlamaLikeConfig } from '../../../src/io/index.ts';
import type { ModelContext } from '../../../src/nn/index.ts';
import { causalSetup } from '../../../src/models/causal.ts';
import { compile } from '../../../src/runtime/index.ts';
import { transfer } from '../../../src/train/index.ts';
import { randArray } from '../../helpers.ts';
import { tinyBase, tinyShape } from './tiny.ts';

const T = 6;
const IDS = BigInt64Array.from([72, 101, 108, 108, 111, 33].map(BigInt));

/** Outputs of the listed layers of a model (config json + weights), each applied to the same hidden input x. */
async function layerOutputs(
  configJson: Record<string, unknown>,
  weights: ReadonlyMap<string, Float32Array>,
  layers: number[],
  x: Float32Array,
): Promise<Float32Array[]> {
  const config = parseModelConfig(configJson, 'test config');
  const g = new Graph('layers');
  const ctx = memoryContext(config, g, { overrides: weights }) as ModelContext<LlamaLikeConfig>;
  const ids = g.input('input_ids', 'i64', [1, T]);
  const setup = causalSetup(ctx, { inputIds: ids });
  const shared = { rope: llamaRope(ctx, setup.positionIds), mask: setup.mask };
  const hx = g.input('x', 'f32', [1, T, (config as LlamaLikeConfig).hidden_size]);
  layers.forEach((i) => g.output(`y${i}`, llamaDecoderLayer(ctx, i, hx, shared).hidden));
  const s = await compile(g);
  const out = await s.run({ input_ids: IDS, x });
  await s.dispose();
  return layers.map((i) => out[`y${i}`].data as Float32Array);
}

test('transplant: the organ reproduces its donor layers bitwise and the recipient keeps its own', async () => {
  const donor = await loadModel(await tinyBase(tinyShape(3), 1));
  const recipient = await loadModel(await tinyBase(tinyShape(3), 2));
  const dJson = JSON.parse(readFileSync(join(donor.dir, 'config.json'), 'utf8'));
  const rJson = JSON.parse(readFileSync(join(recipient.dir, 'config.json'), 'utf8'));
  const dW = await transfer.readAllWeights(donor);
  const rW = await transfer.readAllWeights(recipient);
  const organ = transfer.extractOrgan(dJson, dW, 1, 2);
  assert.equal(organ.weights.size, 2 * 9); // 7 projections + 2 norms per layer
  const m = transfer.transplant(rJson, rW, organ, 1);
  assert.equal(m.config.num_hidden_layers, 5);
  const x = Float32Array.from(randArray(T * 64, 5));
  const [m0, m1, m2, m3, m4] = await layerOutputs(m.config, m.weights, [0, 1, 2, 3, 4], x);
  const [d1, d2] = await layerOutputs(dJson, dW, [1, 2], x);
  const [r0, r1, r2] = await layerOutputs(rJson, rW, [0, 1, 2], x);
  assert.deepEqual(m1, d1, 'transplanted layer 1 = donor layer 1');
  assert.deepEqual(m2, d2, 'transplanted layer 2 = donor layer 2');
  assert.deepEqual(m0, r0, 'layer before the insertion point is the recipient layer 0');
  assert.deepEqual(m3, r1, 'recipient layer 1 moved to 3');
  assert.deepEqual(m4, r2, 'recipient layer 2 moved to 4');
  assert.notDeepEqual(d1, r1, 'donor and recipient differ, so the checks above can fail');
  await donor.close();
  await recipient.close();
});

test('writeTransplant: the folder loads with 5 layers and gives the in-memory transplant logits; widths must match', async () => {
  const donor = await loadModel(await tinyBase(tinyShape(3), 3));
  const recipient = await loadModel(await tinyBase(tinyShape(3), 4));
  const organ = transfer.extractOrgan(
    JSON.parse(readFileSync(join(donor.dir, 'config.json'), 'utf8')),
    await transfer.readAllWeights(donor),
    0,
    2,
  );
  const dir = mkdtempSync(join(tmpdir(), 'lk-organ-'));
  await transfer.saveOrgan(join(dir, 'organ'), organ);
  const back = await transfer.loadOrgan(join(dir, 'organ'));
  assert.deepEqual([...back.weights.keys()].sort(), [...organ.weights.keys()].sort());
  await transfer.writeTransplant(recipient, back, 3, join(dir, 'model'));
  const loaded = await loadModel(join(dir, 'model'));
  assert.equal((loaded.config as LlamaLikeConfig).num_hidden_layers, 5);
  const logits = async (ctxOf: (g: Graph) => ModelContext<ModelConfig>) => {
    const g = new Graph('logits');
    const out = buildCausalLM(ctxOf(g), { inputIds: g.input('input_ids', 'i64', [1, T]) });
    g.output('logits', out.logits);
    const s = await compile(g);
    const r = (await s.run({ input_ids: IDS })).logits.data as Float32Array;
    await s.dispose();
    return r;
  };
  const rJson = JSON.parse(readFileSync(join(recipient.dir, 'config.json'), 'utf8'));
  const mem = transfer.transplant(rJson, await transfer.readAllWeights(recipient), organ, 3);
  const expected = await logits((g) => memoryContext(parseModelConfig(mem.config), g, { overrides: mem.weights }));
  assert.deepEqual(await logits((g) => loaded.context(g)), expected);
  const wide = await loadModel(await tinyBase(tinyShape(3, 2), 5));
  assert.throws(
    () =>
      transfer.transplant(
        JSON.parse(readFileSync(join(wide.dir, 'config.json'), 'utf8')),
        new Map([['model.layers.0.self_attn.q_proj.weight', new Float32Array(128 * 128)]]),
        organ,
        0,
      ),
    (e: Error & { code?: string }) => e.code === 'LK_SHAPE_MISMATCH' && /width/.test(e.message),
  );
  for (const mdl of [donor, recipient, loaded, wide]) await mdl.close();
});

test('trainOrgan: trains only the organ inside Embed ∘ O ∘ Head and lowers its loss', async () => {
  const base = await loadModel(await tinyBase(tinyShape(3), 6));
  const json = JSON.parse(readFileSync(join(base.dir, 'config.json'), 'utf8'));
  const organ = transfer.extractOrgan(json, await transfer.readAllWeights(base), 1, 1);
  const text = Buffer.from('abcabcabcabcabcabcabcabcabcabcabcabcabc');
  const B = 2,
    S = 12;
  const losses: number[] = [];
  const trained = await transfer.trainOrgan({
    base,
    organ,
    batch: (i) => {
      const ids = new BigInt64Array(B * S),
        labels = new BigInt64Array(B * S);
      for (let b = 0; b < B; b++)
        for (let t = 0; t < S; t++) {
          ids[b * S + t] = BigInt(text[(i + b + t) % 30]);
          labels[b * S + t] = BigInt(text[(i + b + t + 1) % 30]);
        }
      return { input_ids: ids, labels };
    },
    batchSize: B,
    seqLen: S,
    steps: 20,
    lr: 1e-2,
    onStep: (_s, l) => losses.push(l),
  });
  assert.deepEqual([...trained.weights.keys()], [...organ.weights.keys()]);
  const q = 'model.layers.0.self_attn.q_proj.weight';
  assert.notDeepEqual(trained.weights.get(q), organ.weights.get(q));
  const mean = (a: number[]) => a.reduce((s, v) => s + v, 0) / a.length;
  assert.ok(mean(losses.slice(-5)) < 0.7 * mean(losses.slice(0, 5)), `losses ${losses.map((l) => l.toFixed(2))}`);
  await base.close();
});

test('dropLayers: dropping none keeps the logits; dropping layer 1 keeps layers 0 and 2 bitwise', async () => {
  const base = await loadModel(await tinyBase(tinyShape(3), 7));
  const json = JSON.parse(readFileSync(join(base.dir, 'config.json'), 'utf8'));
  const w = await transfer.readAllWeights(base);
  const logitsOf = async (model: Awaited<ReturnType<typeof loadModel>>) => {
    const g = new Graph('logits');
    g.output('logits', buildCausalLM(model.context(g), { inputIds: g.input('input_ids', 'i64', [1, T]) }).logits);
    const s = await compile(g);
    const r = (await s.run({ input_ids: IDS })).logits.data as Float32Array;
    await s.dispose();
    return r;
  };
  const dir = mkdtempSync(join(tmpdir(), 'lk-drop-'));
  await transfer.writeDropped(base, [], join(dir, 'none'));
  const same = await loadModel(join(dir, 'none'));
  assert.deepEqual(await logitsOf(same), await logitsOf(base), 'dropping no layer is the identity');
  const d = transfer.dropLayers(json, w, [1]);
  assert.equal(d.config.num_hidden_layers, 2);
  const x = Float32Array.from(randArray(T * 64, 8));
  const [k0, k1] = await layerOutputs(d.config, d.weights, [0, 1], x);
  const [o0, o1, o2] = await layerOutputs(json, w, [0, 1, 2], x);
  assert.deepEqual(k0, o0, 'kept layer 0 is layer 0');
  assert.deepEqual(k1, o2, 'kept layer 1 is the old layer 2');
  assert.notDeepEqual(o1, o2, 'layers 1 and 2 differ, so the check above can fail');
  await transfer.writeDropped(base, [1], join(dir, 'one'));
  const one = await loadModel(join(dir, 'one'));
  assert.equal((one.config as LlamaLikeConfig).num_hidden_layers, 2);
  const g = new Graph('ref');
  const ref = buildCausalLM(memoryContext(parseModelConfig(d.config), g, { overrides: d.weights }), {
    inputIds: g.input('input_ids', 'i64', [1, T]),
  });
  g.output('logits', ref.logits);
  const s = await compile(g);
  const expected = (await s.run({ input_ids: IDS })).logits.data as Float32Array;
  await s.dispose();
  assert.deepEqual(await logitsOf(one), expected, 'the written folder is the in-memory pruned model');
  for (const bad of [[3], [0, 0], [0, 1, 2]])
    assert.throws(
      () => transfer.dropLayers(json, w, bad),
      (e: Error & { code?: string }) => e.code === 'LK_INVALID_ARGUMENT',
    );
  for (const m of [base, same, one]) await m.close();
});
