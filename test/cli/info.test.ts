// `lorakit info` run as a child process: the description of fixture folders, JSON output, one-line errors,
// and that it never loads ONNX Runtime.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const lorakit = (...args: string[]) => spawnSync(process.execPath, ['bin/lorakit.mjs', ...args], { encoding: 'utf8' });

test('info describes the llama fixture: sizes, parameter count, folded modules, tokenizer', () => {
  const r = lorakit('info', 'test/fixtures/models/llama');
  assert.equal(r.status, 0, r.stderr);
  const out = r.stdout;
  // 2 x 384·64 embeddings + 2 layers x (q 4096 + k 2048 + v 2048 + o 4096 + 3 x 8192 MLP + 2 x 64 norms) + 64
  assert.match(out, /parameters +123\.2K \(123,200\)/);
  assert.match(out, /architecture +LlamaForCausalLM \(model_type llama\)/);
  assert.match(out, /dtypes +F32 \(21 tensors\) in 1 file; config dtype float32/);
  assert.match(out, /layers +2\n/);
  assert.match(out, /hidden size +64 \(4 heads x 16, 2 kv heads\), MLP 128/);
  assert.match(out, /vocab +384/);
  assert.match(out, /\n {2}model\.layers\.\{0\.\.1\}\.self_attn\.q_proj +linear \[64 -> 64\]\n/);
  assert.match(out, /\n {2}model\.layers\.\{0\.\.1\}\.self_attn\.k_proj +linear \[64 -> 32\]\n/);
  assert.match(out, /\n {2}model\.layers\.\{0\.\.1\}\.mlp\.down_proj +linear \[128 -> 64\]\n/);
  assert.match(out, /\n {2}model\.embed_tokens +embedding \[384 x 64\]\n/);
  assert.match(out, /\n {2}lm_head +linear \[64 -> 384\]\n/);
  assert.match(out, /special tokens +bos <s> \(1\), eos <\/s> \(2\), pad none, unk <unk> \(0\)/);
  assert.match(out, /chat template +yes \(tokenizer_config\.json\)/);
});

test('info --json: GPT-2 Conv1D shapes read as [in -> out], tied lm_head counted once, no ONNX Runtime loaded', () => {
  // Runs main() in a child and then lists the loaded CommonJS modules: onnxruntime-node must not be among them.
  const script = `
    import { createRequire } from 'node:module';
    const { main } = await import('./src/cli/main.ts');
    await main(['info', '--json', 'test/fixtures/models/gpt2']);
    const loaded = Object.keys(createRequire(import.meta.url).cache).filter((k) => k.includes('onnxruntime'));
    console.error('ORT_MODULES=' + loaded.length);`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /ORT_MODULES=0/);
  const info = JSON.parse(r.stdout);
  // wte 384·64 + wpe 128·64 + 2 x (c_attn 64·192+192 + c_proj 64·64+64 + c_fc 64·256+256 + c_proj 256·64+64 + 2 LNs
  // 256) + ln_f 128
  assert.equal(info.parameters, 24576 + 8192 + 2 * (12480 + 4160 + 16640 + 16448 + 256) + 128);
  assert.equal(info.tiedEmbeddings, true);
  assert.equal(info.layers, 2);
  const byName = Object.fromEntries(info.modules.map((m: { name: string }) => [m.name, m]));
  assert.deepEqual(byName['transformer.h.{0..1}.attn.c_attn'], {
    name: 'transformer.h.{0..1}.attn.c_attn',
    kind: 'linear',
    shape: [64, 192],
    bias: true,
    count: 2,
  });
  assert.deepEqual(byName['transformer.h.{0..1}.mlp.c_proj'].shape, [256, 64]);
  assert.equal(info.tokenizer.chatTemplate, null);
});

test('info on a missing folder or an unsupported architecture prints one line and exits 1', () => {
  const missing = lorakit('info', 'test/fixtures/models/no-such-model');
  assert.equal(missing.status, 1);
  assert.equal(missing.stdout, '');
  assert.equal(
    missing.stderr,
    'lorakit: model folder test/fixtures/models/no-such-model does not exist [LK_FILE_NOT_FOUND]\n',
  );
  const dir = mkdtempSync(join(tmpdir(), 'lorakit-info-'));
  try {
    writeFileSync(
      join(dir, 'config.json'),
      JSON.stringify({ model_type: 't5', architectures: ['T5ForConditionalGeneration'] }),
    );
    const r = lorakit('info', dir);
    assert.equal(r.status, 1);
    assert.equal(r.stderr.trim().split('\n').length, 1);
    assert.match(
      r.stderr,
      /^lorakit: .*config\.json: model_type "t5" is not supported; supported model types: gpt2, llama, mistral, qwen2, bert \[LK_UNSUPPORTED\]\n$/,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
