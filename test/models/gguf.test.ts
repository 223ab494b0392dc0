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
import {
  type GgufKv,
  GgufFile,
  HfTokenizer,
  loadChatTemplate,
  SafetensorsFile,
  ggmlTypeByName,
  ggufModelFolder,
  ggufTensorName,
  permuteRotaryRows,
  writeGguf,
} from '../../src/io/index.ts';
import { LorakitError } from '../../src/errors.ts';
import { buildCausalLM, loadModel } from '../../src/models/index.ts';
import { compile } from '../../src/runtime/index.ts';
import { SMOLLM2_GGUF, skipNote } from '../io/gguf-shared.ts';
import { FIXTURES, i64, maxAbsDiff, readExpected } from './helpers.ts';

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
    // llama.cpp's own ids (interop/check_gguf_llamacpp.py), digits included
    const cpp = JSON.parse(await readFile(join(FIX, 'llamacpp.json'), 'utf8'));
    assert.equal(cpp.tokens.length, want.tokens.length);
    for (const t of cpp.tokens as { text: string; ids: number[] }[])
      assert.deepEqual(tok.encode(t.text, { addSpecialTokens: false }), t.ids, `llama.cpp: ${t.text}`);
    assert.deepEqual(tok.encode('hello', { addSpecialTokens: true }), tok.encode('hello', { addSpecialTokens: false }));
    assert.equal(tok.eosTokenId, 2);
    const gf = await GgufFile.open(SMOLLM2_GGUF);
    const template = gf.get('tokenizer.chat_template');
    await gf.close();
    assert.ok(typeof template === 'string' && template.includes('<|im_start|>'));
    assert.equal(await loadChatTemplate(dir), template);
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

/** The tiny llama fixture (transformers' weights) written as a llama.cpp-style GGUF: F32, q/k rows in GGUF order. */
async function tinyLlamaGguf(path: string, edit: (md: Map<string, GgufKv>) => void = () => {}): Promise<void> {
  const cfg = JSON.parse(await readFile(join(FIXTURES, 'llama', 'config.json'), 'utf8'));
  const st = await SafetensorsFile.open(join(FIXTURES, 'llama', 'model.safetensors'));
  const u32 = (value: number): GgufKv => ({ type: 'u32', value });
  const f32 = (value: number): GgufKv => ({ type: 'f32', value });
  const md = new Map<string, GgufKv>([
    ['general.architecture', { type: 'string', value: 'llama' }],
    ['llama.block_count', u32(cfg.num_hidden_layers)],
    ['llama.context_length', u32(cfg.max_position_embeddings)],
    ['llama.embedding_length', u32(cfg.hidden_size)],
    ['llama.feed_forward_length', u32(cfg.intermediate_size)],
    ['llama.attention.head_count', u32(cfg.num_attention_heads)],
    ['llama.attention.head_count_kv', u32(cfg.num_key_value_heads)],
    ['llama.attention.key_length', u32(cfg.head_dim)],
    ['llama.rope.freq_base', f32(cfg.rope_theta)],
    ['llama.attention.layer_norm_rms_epsilon', f32(cfg.rms_norm_eps)],
  ]);
  edit(md);
  const tensors = [];
  for (const name of st.names()) {
    const info = st.info(name);
    let v = await st.readAs(name, 'f32');
    const cols = info.shape[1] ?? 1;
    if (name.includes('q_proj')) v = permuteRotaryRows(v, cfg.num_attention_heads, cols, false);
    if (name.includes('k_proj')) v = permuteRotaryRows(v, cfg.num_key_value_heads, cols, false);
    const dims = [...info.shape].reverse();
    tensors.push({ name: ggufTensorName(name)!, type: ggmlTypeByName('F32'), dims, data: new Uint8Array(v.buffer) });
  }
  await st.close();
  await writeGguf(path, md, tensors);
}

test('gguf: a llama.cpp-style GGUF of the tiny llama gives transformers logits through loadModel(.gguf)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'lorakit-gguf-tiny-'));
  try {
    const path = join(dir, 'tiny.gguf');
    await tinyLlamaGguf(path);
    const model = await loadModel(path); // the .gguf path itself, through resolveModelFolder
    assert.equal(model.config.tie_word_embeddings, false);
    const e = await readExpected('llama');
    const g = new Graph('tiny-gguf');
    const ids = g.input('input_ids', 'i64', [2, 12]);
    g.output('logits', buildCausalLM(model.context(g), { inputIds: ids }).logits);
    const out = await (await compile(g, { worker: false })).run({ input_ids: i64(e.json.input_ids) });
    assert.ok(maxAbsDiff(out.logits.data as Float32Array, e.tensors.logits!, [2, 12, 384]) <= 1e-4);
    await model.close();
    // a wrong architecture and a missing key are refused naming the file and the key
    await tinyLlamaGguf(join(dir, 'arch.gguf'), (md) =>
      md.set('general.architecture', { type: 'string', value: 'phi3' }),
    );
    await assert.rejects(loadModel(join(dir, 'arch.gguf')), (err: unknown) => {
      return err instanceof LorakitError && err.code === 'LK_UNSUPPORTED' && err.message.includes('"phi3"');
    });
    await tinyLlamaGguf(join(dir, 'nokey.gguf'), (md) => md.delete('llama.block_count'));
    await assert.rejects(loadModel(join(dir, 'nokey.gguf')), (err: unknown) => {
      return (
        err instanceof LorakitError &&
        err.code === 'LK_FILE_INVALID' &&
        err.message.includes('nokey.gguf') &&
        err.message.includes('"llama.block_count"')
      );
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
