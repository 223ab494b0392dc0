// Adapters created and randomised by PEFT itself (interop/make_fixtures.py) load in lorakit and give PEFT's logits,
// unmerged and merged: LoRA with rank/alpha patterns, rsLoRA with layers_to_transform, DoRA, embedding LoRA,
// GPT-2 Conv1D (fan_in_fan_out), a regex target, BERT sequence classification with modules_to_save, copies of tied
// embeddings and heads (with and without ensure_weight_tying), bias "all" (LayerNorm biases too) and "lora_only".
// The same cases written by today's PEFT (the "current" version set, interop/make_current_fixtures.py:
// test/fixtures/peft-current/<case>/) are checked the same way; a case it has not written yet is skipped with a note.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LorakitError } from '../../src/errors.ts';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { Graph } from '../../src/graph/index.ts';
import { compile } from '../../src/runtime/index.ts';
import { loadModel, buildCausalLM, buildSequenceClassifier } from '../../src/models/index.ts';
import { PeftModel, loadAdapter, adaptable } from '../../src/peft/index.ts';
import { SafetensorsFile } from '../../src/io/index.ts';
import { assertAllclose } from '../helpers.ts';

const root = new URL('../../', import.meta.url).pathname;
const CASES = [
  'llama_lora_patterns',
  'llama_rslora',
  'llama_dora',
  'llama_embed',
  'gpt2_lora',
  'smollm_regex',
  'smollm_save_embed',
  'smollm_save_head',
  'smollm_tied_save',
  'gpt2_bias_all',
  'qwen2_lora_only',
  'bert_seqcls',
];
/**
 * Cases whose merge lorakit refuses: a modules_to_save copy of one of two tied modules cannot be merged into the
 * one weight they share without changing the other (PEFT warns and merges the copy into a new module).
 */
const MERGE_REFUSED = new Set(['smollm_save_embed', 'smollm_save_head']);

const PINNED_DIR = 'test/fixtures/peft';
const CURRENT_DIR = 'test/fixtures/peft-current';

async function logitsOf(
  caseName: string,
  merge: boolean,
  fixtures = PINNED_DIR,
): Promise<{ got: Float32Array; want: Float32Array }> {
  const dir = `${root}${fixtures}/${caseName}`;
  const expected = JSON.parse(readFileSync(`${dir}/expected.json`, 'utf8'));
  const model = await loadModel(`${root}${expected.base_model}`);
  const peft = new PeftModel(adaptable(model));
  const { unused } = await loadAdapter(peft, dir);
  assert.deepEqual(unused, [], `${dir}: tensors lorakit did not use`);
  if (merge) await peft.merge();
  const g = new Graph(caseName);
  const ctx = model.context(g, { hooks: peft.hooks(), overrides: peft.weightOverrides() });
  const ids: number[][] = expected.input_ids;
  const [B, T] = [ids.length, ids[0].length];
  const inputIds = g.input('input_ids', 'i64', [B, T]);
  const feeds: Record<string, BigInt64Array> = { input_ids: BigInt64Array.from(ids.flat().map(BigInt)) };
  if (model.family === 'bert') {
    const tt = g.input('token_type_ids', 'i64', [B, T]),
      am = g.input('attention_mask', 'i64', [B, T]);
    g.output('logits', buildSequenceClassifier(ctx, { inputIds, tokenTypeIds: tt, attentionMask: am }).logits);
    feeds.token_type_ids = BigInt64Array.from((expected.token_type_ids as number[][]).flat().map(BigInt));
    feeds.attention_mask = BigInt64Array.from((expected.attention_mask as number[][]).flat().map(BigInt));
  } else {
    g.output('logits', buildCausalLM(ctx, { inputIds }).logits);
  }
  const out = await (await compile(g, { worker: false })).run(feeds);
  const st = await SafetensorsFile.open(`${dir}/expected.safetensors`);
  const want = await st.readAs(merge ? 'merged_logits' : 'logits', 'f32');
  await st.close();
  await model.close();
  return { got: out.logits.data as Float32Array, want };
}

for (const c of CASES) {
  test(`PEFT fixture ${c}: lorakit's logits equal PEFT's (1e-4)`, async () => {
    const { got, want } = await logitsOf(c, false);
    assertAllclose(got, want, { atol: 1e-4, rtol: 0, what: `${c} logits` });
  });
  if (MERGE_REFUSED.has(c)) {
    test(`PEFT fixture ${c}: merging is refused with an error naming the tied weight`, async () => {
      await assert.rejects(
        logitsOf(c, true),
        (e: unknown) => e instanceof LorakitError && e.code === 'LK_UNSUPPORTED' && /is tied to/.test(e.message),
      );
    });
    continue;
  }
  test(`PEFT fixture ${c}: merged logits equal PEFT's merged logits (1e-4)`, async () => {
    const { got, want } = await logitsOf(c, true);
    assertAllclose(got, want, { atol: 1e-4, rtol: 0, what: `${c} merged logits` });
  });
}

/** Every case the pinned set wrote, whether or not it is in CASES yet (another branch may be adding one). */
const pinnedFolders = readdirSync(`${root}${PINNED_DIR}`, { withFileTypes: true })
  .filter((d) => d.isDirectory())
  .map((d) => d.name)
  .sort();

test('PEFT-current fixtures are cases of the pinned set (no stale folder)', () => {
  const current = existsSync(`${root}${CURRENT_DIR}`)
    ? readdirSync(`${root}${CURRENT_DIR}`, { withFileTypes: true }).filter((d) => d.isDirectory())
    : [];
  assert.deepEqual(
    current.map((d) => d.name).filter((c) => !pinnedFolders.includes(c)),
    [],
    `folders under ${CURRENT_DIR} without a ${PINNED_DIR} case; rerun interop/make_current_fixtures.py`,
  );
});

for (const c of pinnedFolders) {
  const skip = existsSync(`${root}${CURRENT_DIR}/${c}/expected.json`)
    ? false
    : `no ${CURRENT_DIR}/${c} yet: run interop/make_current_fixtures.py under the current version set`;
  test(`PEFT-current fixture ${c}: lorakit's logits equal today's PEFT's (1e-4)`, { skip }, async () => {
    const { got, want } = await logitsOf(c, false, CURRENT_DIR);
    assertAllclose(got, want, { atol: 1e-4, rtol: 0, what: `${c} logits (PEFT-current)` });
  });
  if (MERGE_REFUSED.has(c)) {
    test(`PEFT-current fixture ${c}: merging is refused with an error naming the tied weight`, { skip }, async () => {
      await assert.rejects(
        logitsOf(c, true, CURRENT_DIR),
        (e: unknown) => e instanceof LorakitError && e.code === 'LK_UNSUPPORTED' && /is tied to/.test(e.message),
      );
    });
    continue;
  }
  test(`PEFT-current fixture ${c}: merged logits equal today's PEFT's merged logits (1e-4)`, { skip }, async () => {
    const { got, want } = await logitsOf(c, true, CURRENT_DIR);
    assertAllclose(got, want, { atol: 1e-4, rtol: 0, what: `${c} merged logits (PEFT-current)` });
  });
}
