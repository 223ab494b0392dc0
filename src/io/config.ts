/**
 * Hugging Face `config.json` for the model families lorakit supports, validated with zod and normalised into one
 * typed `ModelConfig` union. Field names are the HF ones; defaults are the ones of the matching transformers
 * config class (4.57), so a field absent from the file means what it means to transformers.
 * Not here: weights (`sharded.ts`), tokenizers (`tokenizer.ts`), building models (`models/`).
 */
import { readFile, stat } from './host.ts';
import { z } from 'zod';
import { LorakitError } from '../errors.ts';

/** The `model_type` values lorakit can load, in the order error messages list them. */
export const SUPPORTED_MODEL_TYPES = ['gpt2', 'llama', 'mistral', 'qwen2', 'bert'] as const;
export type ModelType = (typeof SUPPORTED_MODEL_TYPES)[number];

const posInt = z.number().int().positive();
/**
 * Position counts: the RoPE / position tables are sized by them, so an absurd value would exhaust memory before any
 * weight is read (2²⁴ = 16.7M positions is past every released model; Llama 4 Scout has 10M).
 */
const positions = posInt.max(2 ** 24, {
  message: 'at most 16777216 (2^24) positions: the position tables are built that large',
});
const tokenId = z.number().int().nonnegative().nullable();
const common = {
  architectures: z.array(z.string()).optional(),
  torch_dtype: z.string().nullable().optional(),
  /** transformers >= 4.56 writes `dtype` where older versions wrote `torch_dtype`. */
  dtype: z.string().nullable().optional(),
};

const gpt2Schema = z.object({
  ...common,
  model_type: z.literal('gpt2'),
  n_embd: posInt,
  n_layer: posInt,
  n_head: posInt,
  n_positions: positions.default(1024),
  vocab_size: posInt,
  /** MLP width; HF's null means 4·n_embd (normalised here). */
  n_inner: posInt.nullable().default(null),
  layer_norm_epsilon: z.number().positive().default(1e-5),
  activation_function: z.enum(['gelu_new', 'gelu', 'gelu_pytorch_tanh', 'relu', 'silu', 'tanh']).default('gelu_new'),
  tie_word_embeddings: z.boolean().default(true),
  resid_pdrop: z.number().min(0).max(1).default(0.1),
  embd_pdrop: z.number().min(0).max(1).default(0.1),
  attn_pdrop: z.number().min(0).max(1).default(0.1),
  scale_attn_weights: z.boolean().default(true),
  bos_token_id: tokenId.default(50256),
  eos_token_id: tokenId.default(50256),
});

/** RoPE scaling of Llama-style configs; HF spells the kind `rope_type` (new) or `type` (old). */
const ropeScalingSchema = z
  .object({
    rope_type: z.string().optional(),
    type: z.string().optional(),
    factor: z.number().positive().optional(),
    low_freq_factor: z.number().positive().optional(),
    high_freq_factor: z.number().positive().optional(),
    original_max_position_embeddings: posInt.optional(),
  })
  .nullable()
  .default(null);

const llamaLikeSchema = z.object({
  ...common,
  model_type: z.enum(['llama', 'mistral', 'qwen2']),
  hidden_size: posInt,
  num_hidden_layers: posInt,
  num_attention_heads: posInt,
  num_key_value_heads: posInt.nullable().optional(),
  head_dim: posInt.nullable().optional(),
  intermediate_size: posInt,
  rms_norm_eps: z.number().positive().default(1e-6),
  rope_theta: z.number().positive().default(10000),
  rope_scaling: ropeScalingSchema,
  max_position_embeddings: positions.optional(),
  tie_word_embeddings: z.boolean().default(false),
  attention_bias: z.boolean().optional(),
  mlp_bias: z.boolean().default(false),
  hidden_act: z
    .literal('silu', { error: 'expected "silu" (the only activation of these families lorakit builds)' })
    .default('silu'),
  vocab_size: posInt,
  bos_token_id: tokenId.optional(),
  eos_token_id: z
    .union([tokenId, z.array(z.number().int().nonnegative())], {
      error: 'expected a token id, a list of token ids or null',
    })
    .optional(),
  pad_token_id: tokenId.default(null),
  sliding_window: posInt.nullable().optional(),
  use_sliding_window: z.boolean().default(false),
});

const bertSchema = z.object({
  ...common,
  model_type: z.literal('bert'),
  hidden_size: posInt,
  num_hidden_layers: posInt,
  num_attention_heads: posInt,
  intermediate_size: posInt,
  hidden_act: z.enum(['gelu', 'gelu_new', 'gelu_pytorch_tanh', 'relu', 'silu', 'tanh']).default('gelu'),
  max_position_embeddings: positions.default(512),
  type_vocab_size: posInt.default(2),
  layer_norm_eps: z.number().positive().default(1e-12),
  vocab_size: posInt,
  hidden_dropout_prob: z.number().min(0).max(1).default(0.1),
  attention_probs_dropout_prob: z.number().min(0).max(1).default(0.1),
  classifier_dropout: z.number().min(0).max(1).nullable().default(null),
  position_embedding_type: z
    .literal('absolute', { error: 'expected "absolute" (relative position embeddings are not supported)' })
    .default('absolute'),
  pad_token_id: tokenId.default(0),
  id2label: z.record(z.string(), z.string()).optional(),
  num_labels: posInt.optional(),
  problem_type: z
    .enum(['regression', 'single_label_classification', 'multi_label_classification'])
    .nullable()
    .default(null),
  tie_word_embeddings: z.boolean().default(true),
});

type Common = { architectures?: string[]; torch_dtype?: string | null; dtype?: string | null };

/** GPT-2 (`model_type: "gpt2"`), with `n_inner` resolved to a number. */
export type Gpt2Config = Common & Omit<z.output<typeof gpt2Schema>, 'n_inner' | keyof Common> & { n_inner: number };

/** RoPE scaling after normalisation: the kind is always in `rope_type`. */
export interface RopeScaling {
  rope_type: 'default' | 'linear' | 'llama3';
  factor: number;
  low_freq_factor?: number;
  high_freq_factor?: number;
  original_max_position_embeddings?: number;
}

/** Llama, Mistral and Qwen2: one decoder shape (RMSNorm, RoPE, GQA, SwiGLU MLP). */
export interface LlamaLikeConfig extends Common {
  model_type: 'llama' | 'mistral' | 'qwen2';
  hidden_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  head_dim: number;
  intermediate_size: number;
  rms_norm_eps: number;
  rope_theta: number;
  rope_scaling: RopeScaling | null;
  max_position_embeddings: number;
  tie_word_embeddings: boolean;
  /** Bias on q_proj, k_proj and v_proj (Qwen2 always has one; Mistral never). */
  attention_bias: boolean;
  /** Bias on o_proj: Llama's `attention_bias` covers it, Qwen2 has none (not an HF field). */
  o_proj_bias: boolean;
  mlp_bias: boolean;
  hidden_act: 'silu';
  vocab_size: number;
  bos_token_id: number | null;
  eos_token_id: number | number[] | null;
  pad_token_id: number | null;
  /** Attention window in tokens, or null for full causal attention. */
  sliding_window: number | null;
}

/** BERT encoder, with `num_labels` and `id2label` resolved from each other. */
export type BertConfig = Common &
  Omit<z.output<typeof bertSchema>, 'id2label' | 'num_labels' | keyof Common> & {
    id2label: Record<string, string>;
    num_labels: number;
  };

/** A validated, normalised model config; `model_type` tells the family. */
export type ModelConfig = Gpt2Config | LlamaLikeConfig | BertConfig;

/** transformers' per-family defaults where they differ between Llama, Mistral and Qwen2. */
const LLAMA_LIKE_DEFAULTS = {
  llama: { max_position_embeddings: 2048, bos_token_id: 1, eos_token_id: 2, sliding_window: null },
  mistral: { max_position_embeddings: 4096 * 32, bos_token_id: 1, eos_token_id: 2, sliding_window: 4096 },
  qwen2: { max_position_embeddings: 32768, bos_token_id: null, eos_token_id: null, sliding_window: 4096 },
} as const;

/**
 * Validates a parsed config.json and normalises it. `source` names the file in error messages.
 * Throws LK_UNSUPPORTED for an unknown `model_type` and LK_CONFIG_INVALID for a wrong or missing field.
 */
export function parseModelConfig(json: unknown, source = 'config.json'): ModelConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new LorakitError('LK_CONFIG_INVALID', `${source}: expected a JSON object, got ${describe(json)}`);
  }
  const modelType = (json as Record<string, unknown>).model_type;
  if (typeof modelType !== 'string') {
    throw new LorakitError(
      'LK_CONFIG_INVALID',
      `${source}: field "model_type" expected a string (one of ${SUPPORTED_MODEL_TYPES.join(', ')}), got ` +
        `${describe(modelType)}`,
      { source, path: 'model_type' },
    );
  }
  if (!(SUPPORTED_MODEL_TYPES as readonly string[]).includes(modelType)) {
    throw new LorakitError(
      'LK_UNSUPPORTED',
      `${source}: model_type "${modelType}" is not supported; supported model types: ` +
        `${SUPPORTED_MODEL_TYPES.join(', ')}`,
      { source, modelType },
    );
  }
  const type = modelType as ModelType;
  if (type === 'gpt2') {
    const c = validateConfig(gpt2Schema, json, source);
    return { ...c, n_inner: c.n_inner ?? 4 * c.n_embd };
  }
  if (type === 'bert') return normaliseBert(validateConfig(bertSchema, json, source), source);
  return normaliseLlamaLike(validateConfig(llamaLikeSchema, json, source), source);
}

/** Reads and validates `<path>` (a config.json file). */
export async function loadModelConfig(path: string): Promise<ModelConfig> {
  return parseModelConfig(await readJsonFile(path), path);
}

function normaliseLlamaLike(c: z.output<typeof llamaLikeSchema>, source: string): LlamaLikeConfig {
  const d = LLAMA_LIKE_DEFAULTS[c.model_type];
  const heads = c.num_attention_heads;
  const kvHeads = c.num_key_value_heads ?? heads;
  if (c.head_dim == null && c.hidden_size % heads !== 0) {
    invalid(
      source,
      'head_dim',
      `hidden_size (${c.hidden_size}) divisible by num_attention_heads (${heads}), or an explicit head_dim`,
      'neither',
    );
  }
  if (heads % kvHeads !== 0) {
    invalid(source, 'num_key_value_heads', `a divisor of num_attention_heads (${heads})`, String(kvHeads));
  }
  // Qwen2 hard-codes bias on q/k/v and none on o; Mistral hard-codes no bias; Llama reads attention_bias for all four.
  const qkvBias = c.model_type === 'qwen2' ? true : c.model_type === 'mistral' ? false : (c.attention_bias ?? false);
  const oBias = c.model_type === 'llama' ? qkvBias : false;
  let slidingWindow: number | null = c.sliding_window === undefined ? d.sliding_window : c.sliding_window;
  if (c.model_type === 'qwen2' && !c.use_sliding_window) slidingWindow = null;
  if (c.model_type === 'llama') slidingWindow = null;
  const { use_sliding_window: _unused, ...rest } = c;
  return {
    ...rest,
    num_key_value_heads: kvHeads,
    head_dim: c.head_dim ?? c.hidden_size / heads,
    rope_scaling: normaliseRopeScaling(c.rope_scaling, source),
    max_position_embeddings: c.max_position_embeddings ?? d.max_position_embeddings,
    attention_bias: qkvBias,
    o_proj_bias: oBias,
    mlp_bias: c.model_type === 'llama' ? c.mlp_bias : false,
    bos_token_id: c.bos_token_id === undefined ? d.bos_token_id : c.bos_token_id,
    eos_token_id: c.eos_token_id === undefined ? d.eos_token_id : c.eos_token_id,
    sliding_window: slidingWindow,
  };
}

function normaliseRopeScaling(r: z.output<typeof ropeScalingSchema>, source: string): RopeScaling | null {
  if (r === null) return null;
  const kind = r.rope_type ?? r.type;
  if (kind === undefined)
    invalid(source, 'rope_scaling.rope_type', 'one of "default", "linear", "llama3"', 'nothing (field missing)');
  if (kind !== 'default' && kind !== 'linear' && kind !== 'llama3') {
    throw new LorakitError(
      'LK_UNSUPPORTED',
      `${source}: rope_scaling.rope_type "${kind}" is not supported; supported: default, linear, llama3`,
      { source, path: 'rope_scaling.rope_type' },
    );
  }
  const need =
    kind === 'llama3'
      ? (['factor', 'low_freq_factor', 'high_freq_factor', 'original_max_position_embeddings'] as const)
      : kind === 'linear'
        ? (['factor'] as const)
        : [];
  for (const k of need)
    if (r[k] === undefined)
      invalid(
        source,
        `rope_scaling.${k}`,
        `a positive number (required by rope_type "${kind}")`,
        'nothing (field missing)',
      );
  const out: RopeScaling = { rope_type: kind, factor: r.factor ?? 1 };
  if (r.low_freq_factor !== undefined) out.low_freq_factor = r.low_freq_factor;
  if (r.high_freq_factor !== undefined) out.high_freq_factor = r.high_freq_factor;
  if (r.original_max_position_embeddings !== undefined)
    out.original_max_position_embeddings = r.original_max_position_embeddings;
  return out;
}

function normaliseBert(c: z.output<typeof bertSchema>, source: string): BertConfig {
  // transformers: id2label wins when given; otherwise num_labels (default 2) makes LABEL_0.. names.
  const n = c.id2label ? Object.keys(c.id2label).length : (c.num_labels ?? 2);
  if (c.id2label && c.num_labels !== undefined && c.num_labels !== n) {
    invalid(source, 'num_labels', `the number of id2label entries (${n})`, String(c.num_labels));
  }
  const id2label = c.id2label ?? Object.fromEntries(Array.from({ length: n }, (_, i) => [String(i), `LABEL_${i}`]));
  return { ...c, id2label, num_labels: n };
}

/** Parses `json` with a zod schema; the first issue becomes LK_CONFIG_INVALID naming `source`, the field path, expected
 * and got. */
export function validateConfig<S extends z.ZodType>(schema: S, json: unknown, source: string): z.output<S> {
  const r = schema.safeParse(json, { reportInput: true });
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const path = issue.path.map(String).join('.');
  const where = path === '' ? 'the top level' : `field "${path}"`;
  throw new LorakitError(
    'LK_CONFIG_INVALID',
    `${source}: ${where} ${expectation(issue)}, got ${describe(issue.input)}`,
    { source, path, issues: r.error.issues },
  );
}

/** What a zod issue expected, in words. */
function expectation(issue: z.core.$ZodIssue): string {
  switch (issue.code) {
    case 'invalid_type':
      return `expected ${issue.expected}`;
    case 'invalid_value':
      return `expected one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`;
    case 'too_small':
      return (
        `expected ${issue.origin === 'number' ? 'a number' : 'a value'} ${issue.inclusive ? '>=' : '>'} ` +
        `${String(issue.minimum)}`
      );
    case 'too_big':
      return (
        `expected ${issue.origin === 'number' ? 'a number' : 'a value'} ${issue.inclusive ? '<=' : '<'} ` +
        `${String(issue.maximum)}`
      );
    default:
      return issue.message.startsWith('expected') ? issue.message : `expected a valid value (${issue.message})`;
  }
}

function invalid(source: string, path: string, expected: string, got: string): never {
  throw new LorakitError('LK_CONFIG_INVALID', `${source}: field "${path}" expected ${expected}, got ${got}`, {
    source,
    path,
  });
}

/** A short description of a JSON value for messages: its type and (abbreviated) value. */
function describe(v: unknown): string {
  if (v === undefined) return 'nothing (field missing)';
  if (v === null) return 'null';
  const kind = Array.isArray(v) ? 'array' : typeof v;
  const text = JSON.stringify(v) ?? String(v);
  return `${kind} ${text.length > 60 ? `${text.slice(0, 57)}...` : text}`;
}

/**
 * Reads and parses a JSON file. A missing file is LK_FILE_NOT_FOUND; malformed JSON is LK_FILE_INVALID with the
 * line and column of the parse error.
 */
export async function readJsonFile(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR')
      throw new LorakitError('LK_FILE_NOT_FOUND', `${path}: file not found`, { path });
    if (code === 'EISDIR')
      throw new LorakitError('LK_FILE_INVALID', `${path}: expected a JSON file, found a folder`, { path });
    throw e;
  }
  return parseJsonText(text, path);
}

/** Parses JSON text read from `path`; errors say where in the file the JSON breaks. */
export function parseJsonText(text: string, path: string): unknown {
  try {
    return JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);
  } catch (e) {
    const msg = (e as Error).message;
    const pos = jsonErrorPosition(msg, text);
    if (pos === undefined) throw new LorakitError('LK_FILE_INVALID', `${path}: invalid JSON: ${msg}`, { path });
    const before = text.slice(0, pos);
    const line = before.split('\n').length;
    const column = pos - before.lastIndexOf('\n');
    throw new LorakitError(
      'LK_FILE_INVALID',
      `${path}: invalid JSON at line ${line} column ${column} (position ${pos}): ${msg}`,
      { path, position: pos, line, column },
    );
  }
}

/**
 * Where V8's JSON.parse failed. Most messages say "at position N"; "Unexpected token" ones instead quote the text
 * around the token (with "..." where cut, about 10 characters each side), which is looked up in the text.
 */
function jsonErrorPosition(msg: string, text: string): number | undefined {
  const at = /at position (\d+)/.exec(msg);
  if (at) return Number(at[1]);
  if (msg.includes('Unexpected end of JSON input')) return text.length;
  const m = /^Unexpected token '([\s\S])', (\.\.\.)?"([\s\S]*)"(?:\.\.\.)? is not valid JSON/.exec(msg);
  if (!m) return undefined;
  const [, token, cut, snippet] = m as unknown as [string, string, string | undefined, string];
  const start = text.indexOf(snippet);
  if (start < 0) return undefined;
  const offsets: number[] = [];
  for (let i = 0; i < snippet.length; i++) if (snippet[i] === token) offsets.push(i);
  const near = cut ? 10 : 0;
  const best = offsets.reduce((a, b) => (Math.abs(b - near) < Math.abs(a - near) ? b : a), offsets[0] ?? 0);
  return start + best;
}

/** True when `path` exists (file or folder). */
export async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}
