import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  parseModelConfig,
  loadModelConfig,
  SUPPORTED_MODEL_TYPES,
  type LlamaLikeConfig,
  type Gpt2Config,
  type BertConfig,
} from '../../src/io/config.ts';
import { LorakitError } from '../../src/errors.ts';

const MODELS = new URL('../fixtures/models/', import.meta.url);
const fixture = (name: string) =>
  JSON.parse(readFileSync(new URL(`${name}/config.json`, MODELS), 'utf8')) as Record<string, unknown>;

/** Asserts that `fn` throws a LorakitError with `code` whose message matches every pattern. */
function throwsWith(fn: () => unknown, code: string, ...patterns: RegExp[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof LorakitError, `not a LorakitError: ${String(e)}`);
    assert.equal(e.code, code, e.message);
    for (const p of patterns) assert.match(e.message, p);
    return true;
  });
}

// Configs as the Hub has them (trimmed to the fields lorakit reads plus a few it ignores).
const LLAMA_3_8B = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  hidden_size: 4096,
  num_hidden_layers: 32,
  num_attention_heads: 32,
  num_key_value_heads: 8,
  intermediate_size: 14336,
  rms_norm_eps: 1e-5,
  rope_theta: 500000.0,
  max_position_embeddings: 131072,
  rope_scaling: {
    factor: 8.0,
    low_freq_factor: 1.0,
    high_freq_factor: 4.0,
    original_max_position_embeddings: 8192,
    rope_type: 'llama3',
  },
  vocab_size: 128256,
  bos_token_id: 128000,
  eos_token_id: [128001, 128008, 128009],
  hidden_act: 'silu',
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  use_cache: true,
  pretraining_tp: 1,
};
const GPT2 = {
  model_type: 'gpt2',
  n_embd: 768,
  n_layer: 12,
  n_head: 12,
  n_positions: 1024,
  n_ctx: 1024,
  vocab_size: 50257,
  layer_norm_epsilon: 1e-5,
  activation_function: 'gelu_new',
  resid_pdrop: 0.1,
  bos_token_id: 50256,
  eos_token_id: 50256,
};
const BERT_SST2 = {
  model_type: 'bert',
  hidden_size: 768,
  num_hidden_layers: 12,
  num_attention_heads: 12,
  intermediate_size: 3072,
  hidden_act: 'gelu',
  max_position_embeddings: 512,
  type_vocab_size: 2,
  layer_norm_eps: 1e-12,
  vocab_size: 30522,
  id2label: { 0: 'NEGATIVE', 1: 'POSITIVE' },
  label2id: { NEGATIVE: 0, POSITIVE: 1 },
};

describe('valid configs of each family', () => {
  test('llama (Llama-3.1-8B): GQA, llama3 rope scaling, eos list, head_dim derived', () => {
    const c = parseModelConfig(LLAMA_3_8B) as LlamaLikeConfig;
    assert.equal(c.model_type, 'llama');
    assert.equal(c.head_dim, 128);
    assert.equal(c.num_key_value_heads, 8);
    assert.deepEqual(c.rope_scaling, {
      rope_type: 'llama3',
      factor: 8,
      low_freq_factor: 1,
      high_freq_factor: 4,
      original_max_position_embeddings: 8192,
    });
    assert.deepEqual(c.eos_token_id, [128001, 128008, 128009]);
    assert.equal(c.attention_bias, false);
    assert.equal(c.o_proj_bias, false);
    assert.equal(c.sliding_window, null);
    assert.equal(c.pad_token_id, null);
    assert.ok(!('use_cache' in c), 'unknown keys are dropped');
  });

  test('llama defaults: num_key_value_heads = heads, rope_theta 10000, no scaling, old "type" key accepted', () => {
    const c = parseModelConfig({
      model_type: 'llama',
      hidden_size: 64,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      intermediate_size: 128,
      vocab_size: 100,
      rope_scaling: { type: 'linear', factor: 2 },
    }) as LlamaLikeConfig;
    assert.deepEqual(
      [
        c.num_key_value_heads,
        c.head_dim,
        c.rope_theta,
        c.rms_norm_eps,
        c.max_position_embeddings,
        c.tie_word_embeddings,
      ],
      [4, 16, 10000, 1e-6, 2048, false],
    );
    assert.deepEqual(c.rope_scaling, { rope_type: 'linear', factor: 2 });
    assert.deepEqual([c.bos_token_id, c.eos_token_id], [1, 2]);
  });

  test('qwen2: bias on q/k/v but not o; sliding window off unless use_sliding_window', () => {
    const c = parseModelConfig(fixture('qwen2')) as LlamaLikeConfig;
    assert.deepEqual(
      [c.model_type, c.attention_bias, c.o_proj_bias, c.mlp_bias, c.sliding_window, c.rope_theta],
      ['qwen2', true, false, false, null, 1e6],
    );
    assert.equal(c.dtype, 'bfloat16');
    const w = parseModelConfig({
      ...fixture('qwen2'),
      use_sliding_window: true,
      sliding_window: 32,
    }) as LlamaLikeConfig;
    assert.equal(w.sliding_window, 32);
  });

  test('mistral: never a bias, sliding_window kept', () => {
    const c = parseModelConfig({
      ...fixture('mistral'),
      attention_bias: true,
      sliding_window: 4096,
    }) as LlamaLikeConfig;
    assert.deepEqual([c.attention_bias, c.o_proj_bias, c.sliding_window, c.head_dim], [false, false, 4096, 16]);
  });

  test('llama fixtures (llama, llama3, smollm) load; attention_bias covers o_proj for llama', () => {
    for (const name of ['llama', 'llama3', 'smollm']) assert.equal(parseModelConfig(fixture(name)).model_type, 'llama');
    const c = parseModelConfig({ ...fixture('llama'), attention_bias: true }) as LlamaLikeConfig;
    assert.deepEqual([c.attention_bias, c.o_proj_bias], [true, true]);
    assert.equal((parseModelConfig(fixture('smollm')) as LlamaLikeConfig).tie_word_embeddings, true);
  });

  test('gpt2: n_inner resolves to 4·n_embd, tie_word_embeddings defaults to true', () => {
    const c = parseModelConfig(GPT2) as Gpt2Config;
    assert.deepEqual(
      [c.n_inner, c.tie_word_embeddings, c.activation_function, c.layer_norm_epsilon],
      [3072, true, 'gelu_new', 1e-5],
    );
    assert.equal((parseModelConfig(fixture('gpt2')) as Gpt2Config).n_inner, 256);
  });

  test('bert: num_labels from id2label, or LABEL_i names from num_labels (default 2)', () => {
    const c = parseModelConfig(BERT_SST2) as BertConfig;
    assert.deepEqual([c.num_labels, c.id2label['1'], c.problem_type], [2, 'POSITIVE', null]);
    const r = parseModelConfig({
      ...BERT_SST2,
      id2label: undefined,
      num_labels: 1,
      problem_type: 'regression',
    }) as BertConfig;
    assert.deepEqual([r.num_labels, r.id2label, r.problem_type], [1, { 0: 'LABEL_0' }, 'regression']);
    assert.equal((parseModelConfig(fixture('bert')) as BertConfig).num_labels, 2);
  });

  test('loadModelConfig reads a file', async () => {
    const c = await loadModelConfig(new URL('llama3/config.json', MODELS).pathname);
    assert.equal((c as LlamaLikeConfig).rope_scaling?.rope_type, 'llama3');
  });
});

describe('config errors', () => {
  test('a wrong type names the file, the field path, what was expected and what was found', () => {
    throwsWith(
      () => parseModelConfig({ ...LLAMA_3_8B, num_attention_heads: '32' }, 'm/config.json'),
      'LK_CONFIG_INVALID',
      /m\/config\.json/,
      /field "num_attention_heads"/,
      /expected number/,
      /got string "32"/,
    );
    throwsWith(
      () => parseModelConfig({ ...LLAMA_3_8B, rope_scaling: { ...LLAMA_3_8B.rope_scaling, factor: 'eight' } }),
      'LK_CONFIG_INVALID',
      /field "rope_scaling\.factor"/,
      /expected number/,
    );
    throwsWith(
      () => parseModelConfig({ ...BERT_SST2, problem_type: 'ranking' }),
      'LK_CONFIG_INVALID',
      /field "problem_type"/,
      /"regression"/,
      /got string "ranking"/,
    );
  });

  test('a missing field says so', () => {
    const { hidden_size: _, ...noHidden } = LLAMA_3_8B;
    throwsWith(
      () => parseModelConfig(noHidden),
      'LK_CONFIG_INVALID',
      /field "hidden_size"/,
      /expected number/,
      /got nothing \(field missing\)/,
    );
    throwsWith(
      () => parseModelConfig({ ...LLAMA_3_8B, rope_scaling: { rope_type: 'llama3', factor: 8 } }),
      'LK_CONFIG_INVALID',
      /rope_scaling\.low_freq_factor/,
    );
  });

  test('inconsistent shapes are reported on the field', () => {
    throwsWith(
      () => parseModelConfig({ ...LLAMA_3_8B, num_key_value_heads: 5 }),
      'LK_CONFIG_INVALID',
      /num_key_value_heads/,
      /divisor of num_attention_heads \(32\)/,
      /got 5/,
    );
    throwsWith(
      () => parseModelConfig({ ...LLAMA_3_8B, hidden_act: 'gelu' }),
      'LK_CONFIG_INVALID',
      /hidden_act/,
      /silu/,
    );
  });

  test('an unknown model_type is LK_UNSUPPORTED naming it and listing the supported ones', () => {
    throwsWith(
      () => parseModelConfig({ ...LLAMA_3_8B, model_type: 'falcon' }, 'x/config.json'),
      'LK_UNSUPPORTED',
      /x\/config\.json/,
      /"falcon"/,
      new RegExp(SUPPORTED_MODEL_TYPES.join(', ')),
    );
    throwsWith(
      () => parseModelConfig({ ...LLAMA_3_8B, rope_scaling: { rope_type: 'yarn', factor: 4 } }),
      'LK_UNSUPPORTED',
      /yarn/,
      /llama3/,
    );
  });

  test('a missing model_type or a non-object is LK_CONFIG_INVALID', () => {
    const { model_type: _, ...noType } = LLAMA_3_8B;
    throwsWith(() => parseModelConfig(noType), 'LK_CONFIG_INVALID', /field "model_type"/, /gpt2, llama/);
    throwsWith(() => parseModelConfig([1, 2]), 'LK_CONFIG_INVALID', /expected a JSON object, got array/);
  });
});

test('an absurd position count is refused before any table is built (max_position_embeddings: 1e9 used to exhaust memory)', () => {
  const base = {
    model_type: 'llama',
    hidden_size: 64,
    intermediate_size: 128,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    vocab_size: 32,
  };
  assert.throws(
    () => parseModelConfig({ ...base, max_position_embeddings: 1e9 }, 'config.json'),
    /max_position_embeddings.*16777216/,
  );
  assert.equal(
    (
      parseModelConfig({ ...base, max_position_embeddings: 131072 }, 'config.json') as {
        max_position_embeddings: number;
      }
    ).max_position_embeddings,
    131072,
  );
});
