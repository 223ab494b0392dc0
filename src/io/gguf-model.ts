/**
 * A GGUF model file as a Hugging Face model folder: config.json from the `<arch>.*` metadata, the weights dequantized
 * to float32 under their HF names (llama.cpp's rotary row order of q/k undone as transformers' GGUF loader does), and
 * the tokenizer (tokenizer.json + tokenizer_config.json with the chat template) from the `tokenizer.*` metadata.
 * The folder is written once into lorakit's cache (`models/`, keyed by the file's path, size and modification time)
 * and then opened like any other folder, so every command that takes a model folder takes a .gguf path, and ONNX
 * Runtime memory-maps the float32 weights as it does for safetensors (docs/decisions.md says why a folder).
 * Not here: the GGUF format (gguf.ts), the block formats (gguf-quants.ts), the model graphs (models/).
 */
import { basename, createHash, join, mkdir, readFile, realpath, rename, rm, stat, writeFile } from './host.ts';
import { LorakitError } from '../errors.ts';
import { lorakitCacheDir } from './cache-root.ts';
import { resolveModelDir } from './hub.ts';
import { GgufFile } from './gguf.ts';
import { GGUF_TOKENIZER_MODELS, ggufTokenizerFiles } from './gguf-tokenizer.ts';
import { writeSafetensors } from './safetensors.ts';

/** Bumped when the folder written for a GGUF changes, so older cached folders are not reused. */
const FOLDER_VERSION = 2;

/**
 * GGUF `general.architecture` values lorakit reads, and the HF model_type each becomes (all the Llama family).
 * llama.cpp writes Llama 1/2/3, Mistral 7B, TinyLlama and SmolLM as "llama"; a "mistral" file is read as
 * MistralForCausalLM with the llama layout (q/k rows permuted as llama.cpp's converter writes them).
 */
export const GGUF_ARCHITECTURES: Readonly<Record<string, 'llama' | 'mistral' | 'qwen2'>> = {
  llama: 'llama',
  mistral: 'mistral',
  qwen2: 'qwen2',
};

/** HF architectures class of each model_type a GGUF becomes. */
const HF_CLASSES = { llama: 'LlamaForCausalLM', mistral: 'MistralForCausalLM', qwen2: 'Qwen2ForCausalLM' } as const;

/** HF tensor names of llama.cpp's block tensors (`blk.N.<key>.weight|bias`). */
const BLOCK_NAMES: Readonly<Record<string, string>> = {
  attn_norm: 'input_layernorm',
  ffn_norm: 'post_attention_layernorm',
  attn_q: 'self_attn.q_proj',
  attn_k: 'self_attn.k_proj',
  attn_v: 'self_attn.v_proj',
  attn_output: 'self_attn.o_proj',
  ffn_gate: 'mlp.gate_proj',
  ffn_up: 'mlp.up_proj',
  ffn_down: 'mlp.down_proj',
};
const TOP_NAMES: Readonly<Record<string, string>> = {
  'token_embd.weight': 'model.embed_tokens.weight',
  'output_norm.weight': 'model.norm.weight',
  'output.weight': 'lm_head.weight',
};

/** The HF name of GGUF tensor `name`, or undefined for a tensor lorakit does not know. */
export function hfTensorName(name: string): string | undefined {
  if (TOP_NAMES[name]) return TOP_NAMES[name];
  const m = /^blk\.(\d+)\.(\w+)\.(weight|bias)$/.exec(name);
  const part = m ? BLOCK_NAMES[m[2]!] : undefined;
  return m && part ? `model.layers.${m[1]}.${part}.${m[3]}` : undefined;
}

/** The GGUF name of HF tensor `name` (the inverse of `hfTensorName`), or undefined. */
export function ggufTensorName(name: string): string | undefined {
  for (const [g, h] of Object.entries(TOP_NAMES)) if (h === name) return g;
  const m = /^model\.layers\.(\d+)\.(.+)\.(weight|bias)$/.exec(name);
  if (!m) return undefined;
  const key = Object.entries(BLOCK_NAMES).find(([, h]) => h === m[2])?.[0];
  return key ? `blk.${m[1]}.${key}.${m[3]}` : undefined;
}

/**
 * Row order between llama.cpp and HF for q/k of a Llama-architecture GGUF: llama.cpp's converter interleaves the two
 * rotary halves of each head (HF row h·hd + a·hd/2 + i is GGUF row h·hd + 2i + a). `toHf` maps GGUF rows to HF rows
 * (transformers' reverse permute); otherwise HF rows to GGUF rows (the converter's permute). `values` is [rows, cols].
 */
export function permuteRotaryRows(values: Float32Array, heads: number, cols: number, toHf: boolean): Float32Array {
  const rows = values.length / cols;
  const hd = rows / heads;
  const out = new Float32Array(values.length);
  for (let h = 0; h < heads; h++)
    for (let a = 0; a < 2; a++)
      for (let i = 0; i < hd / 2; i++) {
        const hf = h * hd + a * (hd / 2) + i;
        const gg = h * hd + 2 * i + a;
        const [from, to] = toHf ? [gg, hf] : [hf, gg];
        out.set(values.subarray(from * cols, (from + 1) * cols), to * cols);
      }
  return out;
}

/** Reads metadata key `key` as a number (integer when `integer`); absent and not required → undefined. */
function num(f: GgufFile, key: string, opts: { integer?: boolean; required?: boolean } = {}): number | undefined {
  const v = f.get(key);
  if (v === undefined && !opts.required) return undefined;
  const ok = typeof v === 'number' && Number.isFinite(v) && (!opts.integer || (Number.isInteger(v) && v > 0));
  if (!ok)
    throw new LorakitError(
      'LK_FILE_INVALID',
      `${f.path}: metadata "${key}": expected ${opts.integer ? 'a positive integer' : 'a number'}, found ` +
        `${v === undefined ? 'nothing (key missing)' : Array.isArray(v) ? 'an array' : JSON.stringify(String(v))}`,
      { file: f.path, field: key },
    );
  return v;
}

/** config.json of a GGUF model, from its `<arch>.*` metadata (the keys llama.cpp's converter writes). */
export function ggufConfig(f: GgufFile): Record<string, unknown> {
  const arch = f.get('general.architecture');
  const modelType = typeof arch === 'string' ? GGUF_ARCHITECTURES[arch] : undefined;
  if (!modelType)
    throw new LorakitError(
      'LK_UNSUPPORTED',
      `${f.path}: metadata "general.architecture" is ${JSON.stringify(arch)}; lorakit reads GGUF models of ` +
        `${Object.keys(GGUF_ARCHITECTURES).join(', ')} (Llama, Mistral, SmolLM and Qwen2 checkpoints)`,
      { file: f.path, field: 'general.architecture' },
    );
  const k = (s: string) => `${arch}.${s}`;
  const type = f.get('general.type');
  if (type !== undefined && type !== 'model')
    throw new LorakitError(
      'LK_UNSUPPORTED',
      `${f.path}: metadata "general.type" is ${JSON.stringify(type)}; expected "model" (an adapter GGUF is not a ` +
        'base model)',
      { file: f.path, field: 'general.type' },
    );
  const scaling = f.get(k('rope.scaling.type'));
  if (scaling !== undefined && scaling !== 'none' && scaling !== 'linear')
    throw new LorakitError(
      'LK_UNSUPPORTED',
      `${f.path}: metadata "${k('rope.scaling.type')}" is ${JSON.stringify(scaling)}; lorakit reads none or linear`,
      { file: f.path, field: k('rope.scaling.type') },
    );
  if (f.header.tensors.has('rope_freqs.weight'))
    throw new LorakitError(
      'LK_UNSUPPORTED',
      `${f.path}: tensor "rope_freqs.weight" (Llama 3.1-style RoPE frequency factors) is not supported in GGUF files`,
      { file: f.path, field: 'rope_freqs.weight' },
    );
  const heads = num(f, k('attention.head_count'), { integer: true, required: true })!;
  const tokens = f.get('tokenizer.ggml.tokens');
  const embd = f.header.tensors.get('token_embd.weight');
  const vocab = num(f, k('vocab_size'), { integer: true }) ?? (Array.isArray(tokens) ? tokens.length : embd?.dims[1]);
  const bos = num(f, 'tokenizer.ggml.bos_token_id');
  const eos = num(f, 'tokenizer.ggml.eos_token_id');
  const config: Record<string, unknown> = {
    architectures: [HF_CLASSES[modelType]],
    model_type: modelType,
    hidden_size: num(f, k('embedding_length'), { integer: true, required: true }),
    intermediate_size: num(f, k('feed_forward_length'), { integer: true, required: true }),
    num_hidden_layers: num(f, k('block_count'), { integer: true, required: true }),
    num_attention_heads: heads,
    num_key_value_heads: num(f, k('attention.head_count_kv'), { integer: true }) ?? heads,
    rms_norm_eps: num(f, k('attention.layer_norm_rms_epsilon'), { required: true }),
    rope_theta: num(f, k('rope.freq_base')) ?? 10000,
    max_position_embeddings: num(f, k('context_length'), { integer: true }) ?? 2048,
    vocab_size: vocab,
    tie_word_embeddings: !f.header.tensors.has('output.weight'),
    torch_dtype: 'float32',
    ...(bos !== undefined ? { bos_token_id: bos } : {}),
    ...(eos !== undefined ? { eos_token_id: eos } : {}),
  };
  const keyLength = num(f, k('attention.key_length'), { integer: true });
  if (keyLength !== undefined) config.head_dim = keyLength;
  if (scaling === 'linear') config.rope_scaling = { rope_type: 'linear', factor: num(f, k('rope.scaling.factor')) };
  if (modelType === 'llama') config.attention_bias = f.header.tensors.has('blk.0.attn_q.bias');
  return config;
}

/**
 * Each GGUF tensor under its HF name, dequantized to float32 and in HF row order. Refuses tensors it cannot place
 * (another architecture's, or Llama 3.1's rope_freqs), naming them.
 */
export async function ggufHfTensors(
  f: GgufFile,
  config: Record<string, unknown>,
): Promise<{ name: string; shape: number[]; data: Float32Array }[]> {
  const out: { name: string; shape: number[]; data: Float32Array }[] = [];
  const unknown = f.names().filter((n) => hfTensorName(n) === undefined);
  if (unknown.length)
    throw new LorakitError(
      'LK_UNSUPPORTED',
      `${f.path}: tensors ${unknown.slice(0, 5).join(', ')}${unknown.length > 5 ? ', …' : ''} have no place in the ` +
        `${String(config.model_type)} model lorakit builds`,
      { file: f.path, field: unknown[0] },
    );
  // llama.cpp's converter permutes q/k of the llama layout only (Qwen2 is written as HF stores it)
  const permute = config.model_type === 'llama' || config.model_type === 'mistral';
  for (const name of f.names()) {
    const info = f.info(name);
    let data = await f.read(name);
    const cols = info.shape.length === 2 ? info.shape[1]! : 1;
    if (permute && /\.attn_q\./.test(name))
      data = permuteRotaryRows(data, config.num_attention_heads as number, cols, true);
    if (permute && /\.attn_k\./.test(name))
      data = permuteRotaryRows(data, config.num_key_value_heads as number, cols, true);
    out.push({ name: hfTensorName(name)!, shape: info.shape, data });
  }
  return out;
}

/** Where a GGUF's folder lives in the cache: the file's name, and a hash of its real path, size and mtime. */
async function cachedFolderFor(path: string, cacheDir: string): Promise<string> {
  const real = await realpath(path);
  const st = await stat(real);
  const key = createHash('sha256')
    .update(`${FOLDER_VERSION}\0${real}\0${st.size}\0${st.mtimeMs}`)
    .digest('hex')
    .slice(0, 16);
  return join(cacheDir, `${basename(path).replace(/\.gguf$/i, '')}-${key}`);
}

/** Options of `ggufModelFolder`. */
export interface GgufFolderOptions {
  /** Folder that holds converted GGUF models (default: lorakit's cache `models/`). */
  cacheDir?: string;
}

/**
 * The HF model folder of GGUF file `path`: written on first use (a few seconds for a 135M-parameter model), found in
 * the cache afterwards. The folder's `gguf-source.json` names the file it came from.
 */
export async function ggufModelFolder(path: string, options: GgufFolderOptions = {}): Promise<string> {
  const cacheDir = options.cacheDir ?? lorakitCacheDir('models');
  const dir = await cachedFolderFor(path, cacheDir);
  const marker = join(dir, 'gguf-source.json');
  if (
    await readFile(marker, 'utf8').then(
      () => true,
      () => false,
    )
  )
    return dir;
  const f = await GgufFile.open(path);
  const tmp = `${dir}.tmp-${process.pid}-${Date.now()}`;
  try {
    const config = ggufConfig(f);
    const tensors = await ggufHfTensors(f, config);
    const tok = ggufTokenizerFiles(f);
    await mkdir(tmp, { recursive: true });
    await writeFile(join(tmp, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
    if (tok) {
      await writeFile(join(tmp, 'tokenizer.json'), JSON.stringify(tok.tokenizer));
      await writeFile(join(tmp, 'tokenizer_config.json'), `${JSON.stringify(tok.config, null, 2)}\n`);
    }
    const gen = { bos_token_id: config.bos_token_id, eos_token_id: config.eos_token_id };
    await writeFile(join(tmp, 'generation_config.json'), `${JSON.stringify(gen, null, 2)}\n`);
    await writeSafetensors(
      join(tmp, 'model.safetensors'),
      tensors.map((t) => ({ name: t.name, dtype: 'F32' as const, shape: t.shape, data: t.data })),
      { format: 'pt', source: 'gguf' },
    );
    const types: Record<string, number> = {};
    for (const n of f.names()) types[f.info(n).type.name] = (types[f.info(n).type.name] ?? 0) + 1;
    const model = f.get('tokenizer.ggml.model');
    const tokenizer = typeof model === 'string' ? `${model} (${GGUF_TOKENIZER_MODELS[model]})` : null;
    const source = { gguf: await realpath(path), types, tokenizer };
    await writeFile(marker.replace(dir, tmp), `${JSON.stringify(source, null, 2)}\n`);
    try {
      await rename(tmp, dir);
    } catch {
      // another process finished the same folder first: use theirs
      if (!(await stat(marker).catch(() => null))) throw new LorakitError('LK_IO', `cannot create ${dir}`);
    }
    return dir;
  } finally {
    await f.close();
    await rm(tmp, { recursive: true, force: true });
  }
}

/** Whether `path` names a GGUF file (by its extension, as llama.cpp's tools do). */
export function isGgufPath(path: string): boolean {
  return /\.gguf$/i.test(path);
}

/**
 * The folder to open for a model path: a .gguf file becomes its cached HF folder (`ggufModelFolder`), a hub id its
 * snapshot in the local hub cache, anything else is taken as a folder path. The one entry every model loader uses.
 */
export async function resolveModelFolder(pathOrHubId: string, options: GgufFolderOptions = {}): Promise<string> {
  if (isGgufPath(pathOrHubId)) {
    const st = await stat(pathOrHubId).catch(() => null);
    if (st?.isFile()) return ggufModelFolder(pathOrHubId, options);
    if (!st)
      throw new LorakitError('LK_FILE_NOT_FOUND', `GGUF file ${pathOrHubId} does not exist`, { path: pathOrHubId });
  }
  return resolveModelDir(pathOrHubId);
}
