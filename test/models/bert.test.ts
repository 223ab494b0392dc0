// BERT for sequence classification against transformers: logits, last hidden states and pooler output on a
// right-padded batch with two segments.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Graph } from '../../src/graph/index.ts';
import { buildSequenceClassifier, loadModel } from '../../src/models/index.ts';
import { compile } from '../../src/runtime/index.ts';
import { FIXTURES, i64, maxAbsDiff, readExpected } from './helpers.ts';

test("bert: logits, last hidden states and pooled output equal transformers' on a padded batch", async () => {
  const model = await loadModel(join(FIXTURES, 'bert'));
  const e = await readExpected('bert');
  const g = new Graph('bert');
  const out = buildSequenceClassifier(model.context(g), {
    inputIds: g.input('input_ids', 'i64', ['B', 'T']),
    tokenTypeIds: g.input('token_type_ids', 'i64', ['B', 'T']),
    attentionMask: g.input('attention_mask', 'i64', ['B', 'T']),
  });
  g.output('logits', out.logits);
  g.output('last_hidden_state', out.lastHidden);
  g.output('pooler_output', out.pooled);
  const s = await compile(g, { worker: false });
  const r = await s.run({
    input_ids: i64(e.json.input_ids),
    token_type_ids: i64(e.json.token_type_ids),
    attention_mask: i64(e.json.attention_mask),
  });
  const d = {
    logits: maxAbsDiff(r.logits.data as Float32Array, e.tensors.logits, [1, 1, 4]),
    hidden: maxAbsDiff(r.last_hidden_state.data as Float32Array, e.tensors.last_hidden_state, [2, 12, 64]),
    pooled: maxAbsDiff(r.pooler_output.data as Float32Array, e.tensors.pooler_output, [1, 1, 128]),
  };
  for (const [k, v] of Object.entries(d)) assert.ok(v <= 1e-4, `max |Δ${k}| ${v}`);
  await s.dispose();
  await model.close();
});

test("bert: an unpadded row equals the padded row's real tokens; absent token_type_ids mean segment A", async () => {
  const model = await loadModel(join(FIXTURES, 'bert'));
  const e = await readExpected('bert');
  const build = (types: boolean) => {
    const g = new Graph(`bert-types-${types}`);
    const inputIds = g.input('input_ids', 'i64', ['B', 'T']);
    const out = buildSequenceClassifier(model.context(g), {
      inputIds,
      tokenTypeIds: types ? g.input('token_type_ids', 'i64', ['B', 'T']) : undefined,
    });
    g.output('last_hidden_state', out.lastHidden);
    return compile(g, { worker: false });
  };
  const [withTypes, withoutTypes] = [await build(true), await build(false)];
  const ids = [e.json.input_ids[1].slice(0, 8)];
  const types = [e.json.token_type_ids[1].slice(0, 8)];
  const r = await withTypes.run({ input_ids: i64(ids), token_type_ids: i64(types) });
  const rowOne = e.tensors.last_hidden_state.subarray(12 * 64, 12 * 64 + 8 * 64);
  const d = maxAbsDiff(r.last_hidden_state.data as Float32Array, rowOne, [1, 8, 64]);
  assert.ok(d <= 1e-4, `max |Δhidden| ${d}`);
  const zeros = await withTypes.run({ input_ids: i64(ids), token_type_ids: i64([types[0].map(() => 0)]) });
  const none = await withoutTypes.run({ input_ids: i64(ids) });
  assert.deepEqual(none.last_hidden_state.data, zeros.last_hidden_state.data);
  await withTypes.dispose();
  await withoutTypes.dispose();
  await model.close();
});
