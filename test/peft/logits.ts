// Shared by the adapter round-trip, export and CLI tests: the logits of a loaded model (with optional adapter hooks
// and weight overrides) on a fixture's inputs — input_ids [B, T], and for BERT token_type_ids and attention_mask.
import { Graph } from '../../src/graph/index.ts';
import { buildCausalLM, buildSequenceClassifier, type LoadedModel } from '../../src/models/index.ts';
import type { ModuleHooks } from '../../src/nn/index.ts';
import { compile } from '../../src/runtime/index.ts';

export interface FixtureInputs {
  input_ids: number[][];
  token_type_ids?: number[][];
  attention_mask?: number[][];
}

/** Logits [B, T, V] of a causal LM, or [B, labels] of a BERT classifier, as a flat array. */
export async function logitsOf(
  model: LoadedModel,
  inputs: FixtureInputs,
  adapter: { hooks?: ModuleHooks; overrides?: ReadonlyMap<string, Float32Array> } = {},
): Promise<Float32Array> {
  const g = new Graph('fixture-logits');
  const ctx = model.context(g, adapter);
  const shape = [inputs.input_ids.length, inputs.input_ids[0].length];
  const feed = (rows: number[][]) => BigInt64Array.from(rows.flat(), BigInt);
  const inputIds = g.input('input_ids', 'i64', shape);
  const feeds: Record<string, BigInt64Array> = { input_ids: feed(inputs.input_ids) };
  if (model.family === 'bert') {
    const tokenTypeIds = g.input('token_type_ids', 'i64', shape),
      attentionMask = g.input('attention_mask', 'i64', shape);
    g.output('logits', buildSequenceClassifier(ctx, { inputIds, tokenTypeIds, attentionMask }).logits);
    Object.assign(feeds, {
      token_type_ids: feed(inputs.token_type_ids!),
      attention_mask: feed(inputs.attention_mask!),
    });
  } else {
    g.output('logits', buildCausalLM(ctx, { inputIds }).logits);
  }
  const out = await (await compile(g, { worker: false })).run(feeds);
  return out.logits.data as Float32Array;
}
