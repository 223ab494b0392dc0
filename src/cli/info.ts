/**
 * `lorakit info <model-dir>`: what a Hugging Face model folder holds — architecture, sizes, parameter count,
 * dtypes, the modules (layer indices folded into `{0..N}`), tokenizer and chat template.
 * Reads only config.json, the safetensors headers and the tokenizer files (io/), so it never loads ONNX Runtime
 * or a weight. `modelInfo` is the library call; `formatModelInfo` renders it for the terminal.
 */
import { stat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { LorakitError } from '../errors.ts';
import {
  parseModelConfig,
  readJsonFile,
  openWeights,
  resolveModelFolder,
  ShardedWeights,
  type ModelConfig,
} from '../io/index.ts';
import type { CommandModule } from './main.ts';

/** One module (tensors sharing a prefix), with layer indices folded: `model.layers.{0..1}.self_attn.q_proj`. */
export interface ModuleInfo {
  name: string;
  kind: 'linear' | 'embedding' | 'norm' | 'other';
  /** Linear: [in, out] (whatever the storage layout); embedding: [rows, dim]; norm: [dim]; other: the tensor's shape.
   * */
  shape: number[];
  bias: boolean;
  /** How many modules the line stands for (the folded layers). */
  count: number;
}

/** What `modelInfo` reports about a folder. */
export interface ModelInfo {
  dir: string;
  architecture: string;
  modelType: ModelConfig['model_type'];
  /** Unique parameters (tied weights once, buffers excluded). */
  parameters: number;
  /** Tensor count per safetensors dtype, e.g. {F32: 21}. */
  dtypes: Record<string, number>;
  /** config.json `dtype` / `torch_dtype`, if given. */
  configDtype: string | null;
  layers: number;
  hiddenSize: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  intermediateSize: number;
  vocabSize: number;
  maxPositions: number;
  tiedEmbeddings: boolean;
  weightFiles: number;
  /**
   * For a .gguf path: the file, its tensor count per ggml type (the folder holds them dequantized to F32) and its
   * `tokenizer.ggml.model` in words (null when the file holds no tokenizer).
   */
  gguf: { file: string; types: Record<string, number>; tokenizer: string | null } | null;
  modules: ModuleInfo[];
  tokenizer: {
    files: string[];
    kind: string | null;
    vocabSize: number | null;
    /** bos/eos/pad/unk: the token text and its id (null where tokenizer.json does not list it). */
    special: Record<string, { token: string; id: number | null } | null>;
    chatTemplate: string | null;
  };
}

/**
 * Reads a model folder's (or a cached hub id's, or a GGUF file's converted folder: `resolveModelFolder`) config, weight
 * headers and tokenizer files.
 * Throws LK_FILE_NOT_FOUND / LK_UNSUPPORTED.
 */
export async function modelInfo(pathOrHubId: string): Promise<ModelInfo> {
  const dir = await resolveModelFolder(pathOrHubId);
  const s = await stat(dir).catch(() => null);
  if (!s) throw new LorakitError('LK_FILE_NOT_FOUND', `model folder ${dir} not found`, { path: dir });
  if (!s.isDirectory())
    throw new LorakitError('LK_FILE_INVALID', `${dir}: expected a model folder, found a file`, { path: dir });
  const raw = (await readJsonFile(join(dir, 'config.json'))) as Record<string, unknown>;
  const config = parseModelConfig(raw, join(dir, 'config.json'));
  const weights = await openWeights(dir);
  const tensors = weights
    .names()
    .map((n) => weights.info(n))
    .filter((t) => !isBuffer(t.name, t.shape));
  const files = weights instanceof ShardedWeights ? new Set(weights.names().map((n) => weights.shardOf(n))).size : 1;
  await weights.close();
  const dtypes: Record<string, number> = {};
  let parameters = 0;
  for (const t of tensors) {
    dtypes[t.dtype] = (dtypes[t.dtype] ?? 0) + 1;
    parameters += t.shape.reduce((a, b) => a * b, 1);
  }
  const dims = dimsOf(config);
  const dtype = raw.dtype ?? raw.torch_dtype;
  return {
    dir,
    architecture: config.architectures?.[0] ?? config.model_type,
    modelType: config.model_type,
    parameters,
    dtypes,
    configDtype: typeof dtype === 'string' ? dtype : null,
    ...dims,
    weightFiles: files,
    gguf: await readJsonFile(join(dir, 'gguf-source.json')).then(
      (j) => {
        const g = j as { gguf: string; types: Record<string, number>; tokenizer?: string | null };
        return { file: g.gguf, types: g.types, tokenizer: g.tokenizer ?? null };
      },
      () => null,
    ),
    modules: foldModules(tensors, config.model_type === 'gpt2'),
    tokenizer: await tokenizerInfo(dir),
  };
}

/** GPT-2 checkpoints may carry the causal-mask buffers `attn.bias` / `attn.masked_bias` (not parameters). */
function isBuffer(name: string, shape: number[]): boolean {
  return /(^|\.)attn\.(masked_)?bias$/.test(name) && shape.length === 4;
}

function dimsOf(
  c: ModelConfig,
): Pick<
  ModelInfo,
  | 'layers'
  | 'hiddenSize'
  | 'heads'
  | 'kvHeads'
  | 'headDim'
  | 'intermediateSize'
  | 'vocabSize'
  | 'maxPositions'
  | 'tiedEmbeddings'
> {
  if (c.model_type === 'gpt2') {
    return {
      layers: c.n_layer,
      hiddenSize: c.n_embd,
      heads: c.n_head,
      kvHeads: c.n_head,
      headDim: c.n_embd / c.n_head,
      intermediateSize: c.n_inner,
      vocabSize: c.vocab_size,
      maxPositions: c.n_positions,
      tiedEmbeddings: c.tie_word_embeddings,
    };
  }
  if (c.model_type === 'bert') {
    return {
      layers: c.num_hidden_layers,
      hiddenSize: c.hidden_size,
      heads: c.num_attention_heads,
      kvHeads: c.num_attention_heads,
      headDim: c.hidden_size / c.num_attention_heads,
      intermediateSize: c.intermediate_size,
      vocabSize: c.vocab_size,
      maxPositions: c.max_position_embeddings,
      tiedEmbeddings: c.tie_word_embeddings,
    };
  }
  return {
    layers: c.num_hidden_layers,
    hiddenSize: c.hidden_size,
    heads: c.num_attention_heads,
    kvHeads: c.num_key_value_heads,
    headDim: c.head_dim,
    intermediateSize: c.intermediate_size,
    vocabSize: c.vocab_size,
    maxPositions: c.max_position_embeddings,
    tiedEmbeddings: c.tie_word_embeddings,
  };
}

/** Groups tensors into modules and folds runs of layer indices: `h.0.attn`, `h.1.attn` → `h.{0..1}.attn`. */
function foldModules(tensors: { name: string; shape: number[] }[], conv1d: boolean): ModuleInfo[] {
  const modules = new Map<string, { weight?: number[]; bias: boolean; other?: number[] }>();
  for (const t of tensors) {
    const dot = t.name.lastIndexOf('.');
    const [mod, leaf] = dot < 0 ? [t.name, ''] : [t.name.slice(0, dot), t.name.slice(dot + 1)];
    const m = modules.get(mod) ?? { bias: false };
    if (leaf === 'weight') m.weight = t.shape;
    else if (leaf === 'bias') m.bias = true;
    else m.other = t.shape;
    modules.set(leaf === 'weight' || leaf === 'bias' ? mod : t.name, m);
  }
  const folded = new Map<string, { info: ModuleInfo; indices: number[][] }>();
  for (const [name, m] of modules) {
    const info = describeModule(name, m, conv1d);
    const indices = [...name.matchAll(/\.(\d+)(?=\.|$)/g)].map((x) => Number(x[1]));
    const key = `${name.replace(/\.(\d+)(?=\.|$)/g, '.{}')}|${info.kind}|${info.shape.join(',')}|${info.bias}`;
    const f = folded.get(key);
    if (f) {
      f.indices.push(indices);
      f.info.count++;
    } else folded.set(key, { info, indices: [indices] });
  }
  const out: ModuleInfo[] = [];
  for (const { info, indices } of folded.values()) {
    let slot = 0;
    const name = info.name.replace(/\.(\d+)(?=\.|$)/g, () => {
      const k = slot++;
      return `.${fmtIndices([...new Set(indices.map((ix) => ix[k]))])}`;
    });
    out.push({ ...info, name });
  }
  return out.sort((a, b) => naturalCompare(a.name, b.name));
}

function describeModule(
  name: string,
  m: { weight?: number[]; bias: boolean; other?: number[] },
  conv1d: boolean,
): ModuleInfo {
  const w = m.weight;
  if (!w) return { name, kind: 'other', shape: m.other ?? [], bias: m.bias, count: 1 };
  if (w.length === 1) return { name, kind: 'norm', shape: w, bias: m.bias, count: 1 };
  if (w.length === 2 && /(embed|(^|\.)wte$|(^|\.)wpe$)/.test(name))
    return { name, kind: 'embedding', shape: w, bias: m.bias, count: 1 };
  // PyTorch Linear stores [out, in]; GPT-2's Conv1D stores [in, out].
  if (w.length === 2)
    return {
      name,
      kind: 'linear',
      shape: conv1d && !name.endsWith('lm_head') ? [w[0], w[1]] : [w[1], w[0]],
      bias: m.bias,
      count: 1,
    };
  return { name, kind: 'other', shape: w, bias: m.bias, count: 1 };
}

/** `{0..5}` for a contiguous run, `{0,2,7}` otherwise, the number itself for one index. */
function fmtIndices(xs: number[]): string {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 1) return String(s[0]);
  const contiguous = s.every((v, i) => i === 0 || v === s[i - 1] + 1);
  return contiguous ? `{${s[0]}..${s[s.length - 1]}}` : `{${s.join(',')}}`;
}

function naturalCompare(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true });
}

async function tokenizerInfo(dir: string): Promise<ModelInfo['tokenizer']> {
  const present = new Set(await readdir(dir));
  const files = [
    'tokenizer.json',
    'tokenizer_config.json',
    'special_tokens_map.json',
    'vocab.json',
    'merges.txt',
    'vocab.txt',
    'chat_template.jinja',
    'chat_template.json',
  ].filter((f) => present.has(f));
  let kind: string | null = null,
    vocabSize: number | null = null;
  const idOf = new Map<string, number>();
  if (present.has('tokenizer.json')) {
    const tj = (await readJsonFile(join(dir, 'tokenizer.json'))) as {
      model?: { type?: string; vocab?: unknown };
      added_tokens?: { id: number; content: string }[];
    };
    kind = typeof tj.model?.type === 'string' ? tj.model.type : null;
    const vocab = tj.model?.vocab;
    const ids = Array.isArray(vocab)
      ? vocab.map((_, i) => i)
      : vocab && typeof vocab === 'object'
        ? Object.values(vocab as Record<string, number>)
        : [];
    for (const t of tj.added_tokens ?? []) {
      ids.push(t.id);
      idOf.set(t.content, t.id);
    }
    if (vocab && typeof vocab === 'object' && !Array.isArray(vocab))
      for (const [k, v] of Object.entries(vocab as Record<string, number>)) if (!idOf.has(k)) idOf.set(k, v);
    vocabSize = ids.length ? Math.max(...ids) + 1 : null;
  } else if (present.has('vocab.json') && present.has('merges.txt')) kind = 'BPE (vocab.json + merges.txt)';
  else if (present.has('vocab.txt')) kind = 'WordPiece (vocab.txt)';
  let config: Record<string, unknown> = {};
  if (present.has('tokenizer_config.json'))
    config = (await readJsonFile(join(dir, 'tokenizer_config.json'))) as Record<string, unknown>;
  if (present.has('special_tokens_map.json'))
    config = { ...config, ...((await readJsonFile(join(dir, 'special_tokens_map.json'))) as Record<string, unknown>) };
  const content = (v: unknown): string | null =>
    typeof v === 'string'
      ? v
      : v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string'
        ? (v as { content: string }).content
        : null;
  const special: Record<string, { token: string; id: number | null } | null> = {};
  for (const k of ['bos', 'eos', 'pad', 'unk']) {
    const c = content(config[`${k}_token`]);
    special[k] = c === null ? null : { token: c, id: idOf.get(c) ?? null };
  }
  const chatTemplate = config.chat_template
    ? 'tokenizer_config.json'
    : present.has('chat_template.jinja')
      ? 'chat_template.jinja'
      : present.has('chat_template.json')
        ? 'chat_template.json'
        : null;
  return { files, kind, vocabSize, special, chatTemplate };
}

/** Renders `modelInfo`'s result as aligned text lines. */
export function formatModelInfo(i: ModelInfo): string {
  const rows: [string, string][] = [
    ['architecture', `${i.architecture} (model_type ${i.modelType})`],
    ['parameters', `${humanCount(i.parameters)} (${i.parameters.toLocaleString('en-US')})`],
    [
      'dtypes',
      `${Object.entries(i.dtypes)
        .map(([d, n]) => `${d} (${n} tensors)`)
        .join(', ')} in ${i.weightFiles} file${i.weightFiles > 1 ? 's' : ''}${
        i.configDtype ? `; config dtype ${i.configDtype}` : ''
      }`,
    ],
    ...(i.gguf
      ? ([
          [
            'gguf',
            `${i.gguf.file}: ${Object.entries(i.gguf.types)
              .map(([t, n]) => `${t} (${n} tensors)`)
              .join(', ')}, read as F32`,
          ],
          ['gguf tokenizer', i.gguf.tokenizer ?? 'none'],
        ] as [string, string][])
      : []),
    ['layers', String(i.layers)],
    [
      'hidden size',
      `${i.hiddenSize} (${i.heads} heads x ${i.headDim}${i.kvHeads !== i.heads ? `, ${i.kvHeads} kv heads` : ''}), ` +
        `MLP ${i.intermediateSize}`,
    ],
    ['vocab', String(i.vocabSize)],
    ['max positions', String(i.maxPositions)],
  ];
  if (i.modelType !== 'bert')
    rows.push(['tied embeddings', i.tiedEmbeddings ? 'yes (the output layer reuses the input embedding)' : 'no']);
  const lines = [
    i.dir,
    ...rows.map(([k, v]) => `  ${k.padEnd(16)} ${v}`),
    `modules (${i.modules.reduce((a, m) => a + m.count, 0)}):`,
  ];
  const width = Math.max(...i.modules.map((m) => m.name.length));
  for (const m of i.modules) {
    const shape =
      m.kind === 'linear'
        ? `[${m.shape[0]} -> ${m.shape[1]}]`
        : m.kind === 'embedding'
          ? `[${m.shape[0]} x ${m.shape[1]}]`
          : `[${m.shape.join(', ')}]`;
    lines.push(`  ${m.name.padEnd(width)}  ${m.kind} ${shape}${m.bias ? ' +bias' : ''}`);
  }
  const t = i.tokenizer;
  const special = Object.entries(t.special)
    .map(([k, v]) => `${k} ${v ? `${v.token}${v.id !== null ? ` (${v.id})` : ''}` : 'none'}`)
    .join(', ');
  lines.push('tokenizer:');
  lines.push(`  ${'files'.padEnd(16)} ${t.files.join(', ') || 'none'}`);
  if (t.kind) lines.push(`  ${'model'.padEnd(16)} ${t.kind}${t.vocabSize ? `, ${t.vocabSize} tokens` : ''}`);
  lines.push(`  ${'special tokens'.padEnd(16)} ${special}`);
  lines.push(`  ${'chat template'.padEnd(16)} ${t.chatTemplate ? `yes (${t.chatTemplate})` : 'no'}`);
  return lines.join('\n');
}

function humanCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`;
  return String(n);
}

export const register: CommandModule['register'] = (cli) => {
  cli
    .command(
      'info <model-dir>',
      'Describe a Hugging Face model folder, a diffusers U-Net folder or a .gguf file (no weights are loaded)',
    )
    .usage(
      'info <model-dir> [--json]\n\n' +
        '  A causal-LM folder: architecture, sizes, parameters, dtypes, modules, tokenizer.\n' +
        '  A diffusers U-Net folder (UNet2DModel, UNet2DConditionModel): class, blocks, channels, parameters,\n' +
        '  attention layers and the modules adapters can target.',
    )
    .option('--json', 'Print the description as JSON')
    .action(async (dir: string, flags: { json?: boolean }) => {
      const unet = await import('./unet-info.ts');
      if (await unet.unetClassOf(dir)) {
        const u = await unet.unetInfo(dir);
        console.log(flags.json ? JSON.stringify(u, null, 2) : unet.formatUNetInfo(u));
        return;
      }
      const info = await modelInfo(dir);
      console.log(flags.json ? JSON.stringify(info, null, 2) : formatModelInfo(info));
    });
};
