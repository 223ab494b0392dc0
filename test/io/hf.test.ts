import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadHfFolder, parseGenerationConfig } from '../../src/io/hf.ts';
import { LorakitError } from '../../src/errors.ts';
import { LLAMA3_DIR } from './tokenizer-fixtures.ts';

const MODELS = fileURLToPath(new URL('../fixtures/models/', import.meta.url));
const isError =
  (code: string, ...patterns: RegExp[]) =>
  (e: unknown) =>
    e instanceof LorakitError && e.code === code && patterns.every((p) => p.test(e.message));

describe('loadHfFolder', () => {
  test('loads config, tokenizer, generation config and the weights path of a model folder', async () => {
    const f = await loadHfFolder(join(MODELS, 'qwen2'));
    assert.equal(f.config.model_type, 'qwen2');
    assert.ok(f.tokenizer);
    assert.equal(f.weightsPath, join(MODELS, 'qwen2', 'model.safetensors'));
    assert.equal(f.generationConfig?.eos_token_id, 2);
    const ids = f.tokenizer.encode('hello world', { addSpecialTokens: false });
    assert.equal(f.tokenizer.decode(ids), 'hello world');
  });

  test('every model fixture folder loads', async () => {
    for (const name of ['bert', 'gpt2', 'llama', 'llama3', 'mistral', 'qwen2', 'smollm']) {
      const f = await loadHfFolder(join(MODELS, name));
      assert.ok(f.tokenizer, name);
      assert.ok(
        f.tokenizer.vocabSize <= (f.config as { vocab_size: number }).vocab_size,
        `${name}: tokenizer ids fit the embedding`,
      );
    }
  });

  test('picks up a chat template; {tokenizer: false} skips the tokenizer', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lk-hf-'));
    cpSync(join(MODELS, 'llama', 'config.json'), join(dir, 'config.json'));
    cpSync(join(LLAMA3_DIR, 'tokenizer_config.json'), join(dir, 'tokenizer_config.json'));
    const f = await loadHfFolder(dir, { tokenizer: false });
    assert.equal(f.tokenizer, undefined);
    assert.match(f.chatTemplate!, /start_header_id/);
    assert.equal(f.weightsPath, undefined);
  });

  test('a missing folder or config.json is LK_FILE_NOT_FOUND naming the path', async () => {
    await assert.rejects(loadHfFolder('/nonexistent/model'), isError('LK_FILE_NOT_FOUND', /\/nonexistent\/model/));
    const dir = mkdtempSync(join(tmpdir(), 'lk-hf-'));
    writeFileSync(join(dir, 'tokenizer.json'), '{}');
    await assert.rejects(
      loadHfFolder(dir),
      isError('LK_FILE_NOT_FOUND', new RegExp(`${dir}/config\\.json`), /found tokenizer\.json/),
    );
  });

  test('invalid JSON is LK_FILE_INVALID with the parse position', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lk-hf-'));
    writeFileSync(join(dir, 'config.json'), '{"model_type": "llama",\n "hidden_size": 64,,\n}');
    await assert.rejects(loadHfFolder(dir), isError('LK_FILE_INVALID', /config\.json/, /line 2 column 20/));
  });

  test('a bad config field is LK_CONFIG_INVALID naming the file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lk-hf-'));
    writeFileSync(
      join(dir, 'config.json'),
      JSON.stringify({ model_type: 'gpt2', n_embd: 64, n_layer: 2, n_head: -4, vocab_size: 10 }),
    );
    await assert.rejects(
      loadHfFolder(dir),
      isError('LK_CONFIG_INVALID', new RegExp(`${dir}/config\\.json`), /field "n_head"/, /got number -4/),
    );
  });
});

describe('generation config', () => {
  test('keeps unknown keys, types the known ones', () => {
    const g = parseGenerationConfig({
      eos_token_id: [1, 2],
      temperature: 0.6,
      top_p: 0.9,
      transformers_version: '4.57.6',
    });
    assert.deepEqual(g.eos_token_id, [1, 2]);
    assert.equal(g.transformers_version, '4.57.6');
    assert.throws(
      () => parseGenerationConfig({ top_p: 2 }, 'g.json'),
      isError('LK_CONFIG_INVALID', /g\.json/, /field "top_p"/, /<= 1/, /got number 2/),
    );
  });
});
