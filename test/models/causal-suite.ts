// The parity suite every causal-LM fixture runs (gpt2.test.ts, llama.test.ts): logits against transformers for the
// batch and the left-padded batch, the KV-cache path (prefill k tokens + one-token decode steps, with and without
// left padding), and greedy generation through the cache against transformers' generate().
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { type LoadedModel, loadModel, leftPaddedPositions } from '../../src/models/index.ts';
import type { Session } from '../../src/runtime/index.ts';
import {
  FIXTURES,
  type Expected,
  argmax,
  compileCausal,
  emptyPast,
  i64,
  maxAbsDiff,
  pastFrom,
  readExpected,
} from './helpers.ts';

const TOL = 1e-4;

/** Registers the parity tests of fixture `name`; returns a getter for tests of its own. */
export function causalParitySuite(
  name: string,
): () => { model: LoadedModel; e: Expected; full: Session; cached: Session } {
  let s: { model: LoadedModel; e: Expected; full: Session; cached: Session };
  before(async () => {
    const model = await loadModel(join(FIXTURES, name));
    s = {
      model,
      e: await readExpected(name),
      full: await compileCausal(model),
      cached: await compileCausal(model, { past: true }),
    };
  });
  after(async () => {
    await s.full.dispose();
    await s.cached.dispose();
    await s.model.close();
  });
  const V = () => s.model.config.vocab_size;

  test(`${name}: logits equal transformers' on the batch`, async () => {
    const ids: number[][] = s.e.json.input_ids;
    const out = await s.full.run({
      input_ids: i64(ids),
      position_ids: i64(ids.map((r) => r.map((_, t) => t))),
      attention_mask: i64(ids.map((r) => r.map(() => 1))),
    });
    const d = maxAbsDiff(out.logits.data as Float32Array, s.e.tensors.logits, [ids.length, ids[0].length, V()]);
    assert.ok(d <= TOL, `max |Δlogits| ${d}`);
  });

  test(`${name}: logits equal transformers' on the left-padded batch (real tokens)`, async () => {
    const j = s.e.json;
    const out = await s.full.run({
      input_ids: i64(j.input_ids_padded),
      position_ids: i64(j.position_ids_padded),
      attention_mask: i64(j.attention_mask_padded),
    });
    const d = maxAbsDiff(
      out.logits.data as Float32Array,
      s.e.tensors.logits_padded,
      [2, 12, V()],
      (r, t) => j.attention_mask_padded[r][t] === 1,
    );
    assert.ok(d <= TOL, `max |Δlogits| ${d}`);
  });

  // Prefill k tokens (from an empty cache), then one token per step; every step's logits must equal the full forward's.
  const cachedRun = async (ids: number[][], mask: number[][], k: number): Promise<Float32Array> => {
    const [B, T] = [ids.length, ids[0].length];
    const logits = new Float32Array(B * T * V());
    let past = emptyPast(s.model, B);
    for (let start = 0; start < T; start = start === 0 ? k : start + 1) {
      const end = start === 0 ? k : start + 1;
      const m = mask.map((r) => r.slice(0, end));
      const out = await s.cached.run({
        input_ids: i64(ids.map((r) => r.slice(start, end))),
        attention_mask: i64(m),
        position_ids: { data: leftPaddedPositions(m.flat(), B, end - start), shape: [B, end - start] },
        ...past,
      });
      const l = out.logits.data as Float32Array;
      for (let r = 0; r < B; r++)
        logits.set(l.subarray(r * (end - start) * V(), (r + 1) * (end - start) * V()), (r * T + start) * V());
      past = pastFrom(out);
    }
    return logits;
  };

  test(`${name}: prefill of 5 tokens + 7 one-token decode steps equals the full forward`, async () => {
    const ids: number[][] = s.e.json.input_ids;
    const d = maxAbsDiff(
      await cachedRun(
        ids,
        ids.map((r) => r.map(() => 1)),
        5,
      ),
      s.e.tensors.logits,
      [2, 12, V()],
    );
    assert.ok(d <= TOL, `max |Δlogits| ${d}`);
  });

  test(`${name}: the KV-cache path is right for a left-padded batch`, async () => {
    const j = s.e.json;
    const d = maxAbsDiff(
      await cachedRun(j.input_ids_padded, j.attention_mask_padded, 6),
      s.e.tensors.logits_padded,
      [2, 12, V()],
      (r, t) => j.attention_mask_padded[r][t] === 1,
    );
    assert.ok(d <= TOL, `max |Δlogits| ${d}`);
  });

  test(`${name}: greedy decoding through the KV cache equals transformers' generate()`, async () => {
    const prompt: number[] = s.e.json.greedy_prompt_ids;
    let out = await s.cached.run({
      input_ids: i64([prompt]),
      position_ids: i64([prompt.map((_, t) => t)]),
      attention_mask: i64([prompt.map(() => 1)]),
      ...emptyPast(s.model, 1),
    });
    const tokens: number[] = [];
    for (let step = 0; step < s.e.json.greedy.length; step++) {
      const T = out.logits.shape[1];
      const next = argmax(out.logits.data as Float32Array, (T - 1) * V(), V());
      tokens.push(next);
      const P = prompt.length + step;
      out = await s.cached.run({
        input_ids: i64([[next]]),
        position_ids: i64([[P]]),
        attention_mask: i64([Array(P + 1).fill(1)]),
        ...pastFrom(out),
      });
    }
    assert.deepEqual(tokens, s.e.json.greedy);
  });

  return () => s;
}
