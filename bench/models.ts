/**
 * The benchmark models: a GPT-2-small shape (124M) and a SmolLM-135M shape (Llama family), with random weights
 * written once as Hugging Face folders (config.json + model.safetensors + a word-level tokenizer.json) in
 * bench/.cache/, so both lorakit (loadModel) and transformers (from_pretrained) read the same bytes through their
 * real loaders. Dropout probabilities are 0 in the configs: both sides do the same work in train mode.
 * Not here: the workloads (workloads.ts) and the timing (lorakit.ts, interop/bench_peft.py).
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseModelConfig, writeSafetensors } from '../src/io/index.ts';
import { familyOf } from '../src/models/index.ts';

/** gpt2, smollm: random weights of those shapes; smollm2: the real SmolLM2-135M-Instruct from ../shared's GGUF. */
export type ModelName = 'gpt2' | 'smollm' | 'smollm2';

export const CACHE_DIR = join(import.meta.dirname, '.cache');

/** config.json of each shape (GPT-2 small as on the Hub; SmolLM-135M's published config). */
const SHAPES: Record<'gpt2' | 'smollm', Record<string, unknown>> = {
  gpt2: {
    architectures: ['GPT2LMHeadModel'],
    model_type: 'gpt2',
    vocab_size: 50257,
    n_positions: 1024,
    n_embd: 768,
    n_layer: 12,
    n_head: 12,
    n_inner: null,
    activation_function: 'gelu_new',
    layer_norm_epsilon: 1e-5,
    resid_pdrop: 0,
    embd_pdrop: 0,
    attn_pdrop: 0,
    summary_first_dropout: 0,
    scale_attn_weights: true,
    tie_word_embeddings: true,
    bos_token_id: 50256,
    eos_token_id: 50256,
    torch_dtype: 'float32',
  },
  smollm: {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    vocab_size: 49152,
    hidden_size: 576,
    intermediate_size: 1536,
    num_hidden_layers: 30,
    num_attention_heads: 9,
    num_key_value_heads: 3,
    hidden_act: 'silu',
    max_position_embeddings: 2048,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    rope_scaling: null,
    tie_word_embeddings: true,
    attention_bias: false,
    attention_dropout: 0,
    mlp_bias: false,
    bos_token_id: 0,
    eos_token_id: 0,
    torch_dtype: 'float32',
  },
};
/** config.json of each model; SmolLM2-135M-Instruct has SmolLM-135M's shapes (what modelDims and the targets read). */
export const CONFIGS: Record<ModelName, Record<string, unknown>> = {
  ...SHAPES,
  smollm2: { ...SHAPES.smollm, rope_theta: 100000, max_position_embeddings: 8192 },
};

/** The real model of `smollm2`: SmolLM2-135M-Instruct as the shared Q4_1 GGUF (never copied into the repository). */
export const SMOLLM2_GGUF = join(
  import.meta.dirname,
  '..',
  '..',
  'shared',
  'data',
  'models',
  'smollm2-135m-instruct-q4_1',
  'SmolLM2-135M-Instruct.Q4_1.gguf',
);

/** Weights-file version: bump when the generator changes so old caches are rewritten. */
const VERSION = '1';

/** A fast seeded uniform generator (xorshift32); the values only need to be reproducible and well-scaled. */
function fill(out: Float32Array, seed: number, std: number): void {
  let s = seed >>> 0 || 1;
  const a = std * Math.sqrt(3); // U(-a, a) has standard deviation std
  for (let i = 0; i < out.length; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    out[i] = ((s / 4294967296) * 2 - 1) * a;
  }
}

/** A WordPiece vocabulary "t0" … "t{V-1}": decodes any id the random model generates, with no merges to load. */
function tokenizerJson(vocab: number): unknown {
  const v: Record<string, number> = {};
  for (let i = 0; i < vocab; i++) v[`t${i}`] = i;
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [],
    normalizer: null,
    pre_tokenizer: { type: 'WhitespaceSplit' },
    post_processor: null,
    decoder: null,
    model: {
      type: 'WordPiece',
      unk_token: 't0',
      continuing_subword_prefix: '##',
      max_input_chars_per_word: 100,
      vocab: v,
    },
  };
}

/**
 * The folder of model `name`, written on first use: norm weights 1, biases 0, every other tensor U with std 0.02
 * (GPT-2's initializer_range), seeded per tensor.
 */
export async function ensureModel(name: ModelName): Promise<string> {
  if (name === 'smollm2') {
    // both sides read the file itself: lorakit's loadModel, transformers' from_pretrained(..., gguf_file=...)
    if (!existsSync(SMOLLM2_GGUF)) throw new Error(`bench: smollm2 reads ${SMOLLM2_GGUF}, which is absent here`);
    return SMOLLM2_GGUF;
  }
  const dir = join(CACHE_DIR, `${name}-v${VERSION}`);
  if (existsSync(join(dir, 'model.safetensors'))) return dir;
  mkdirSync(dir, { recursive: true });
  const config = parseModelConfig(CONFIGS[name], `${name} config`);
  const tensors: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
  let seed = 1;
  for (const p of familyOf(config).parameters(config)) {
    const n = p.shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    const isNorm = /(ln_\d|ln_f|layernorm|norm)\.weight$/.test(p.name);
    if (isNorm) data.fill(1);
    else if (!p.name.endsWith('.bias')) fill(data, seed++ * 2654435761, 0.02);
    tensors[p.name] = { dtype: 'F32', shape: p.shape, data };
  }
  writeFileSync(join(dir, 'config.json'), JSON.stringify(CONFIGS[name], null, 2));
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tokenizerJson(Number(CONFIGS[name].vocab_size))));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ model_max_length: 2048 }));
  await writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  return dir;
}
