/**
 * The tokenizer of a GGUF model as Hugging Face files: tokenizer.json (for @huggingface/tokenizers) and
 * tokenizer_config.json (special tokens, add_bos_token, chat template) built from the `tokenizer.ggml.*` metadata.
 * Byte-level BPE (`tokenizer.ggml.model` "gpt2": GPT-2, SmolLM, Qwen2, Llama 3) is built as transformers' GPT2
 * converter does, with the pre-tokenizer llama.cpp uses for `tokenizer.ggml.pre` (SmolLM's splits digits one by one);
 * control tokens (token_type 3) are special added tokens. SentencePiece ("llama": Llama 1/2, Mistral, TinyLlama) is
 * built by gguf-spm.ts as transformers' GGUF loading builds it. BOS/EOS follow `add_bos_token`/`add_eos_token`, and
 * where a file omits them llama.cpp's defaults for its model (BOS for SentencePiece, nothing for byte-level BPE).
 * Not here: reading the file (gguf.ts), the folder (gguf-model.ts).
 */
import { LorakitError } from '../errors.ts';
import type { GgufFile } from './gguf.ts';
import { spmTokenizerJson } from './gguf-spm.ts';
import { gpt2TokenizerJson } from './tokenizer.ts';

type Json = Record<string, unknown>;

/** llama.cpp token types (`tokenizer.ggml.token_type`): 3 marks control tokens (BOS, EOS, chat markers). */
const CONTROL = 3;
const USER_DEFINED = 4;

/** GGUF `tokenizer.ggml.pre` values whose pre-tokenizer differs from GPT-2's: SmolLM splits every digit. */
const DIGIT_PRE = new Set(['smollm', 'starcoder', 'refact', 'deepseek-coder']);

/** What each `tokenizer.ggml.model` lorakit builds is, in words (for `lorakit info`). */
export const GGUF_TOKENIZER_MODELS: Readonly<Record<string, string>> = {
  gpt2: 'byte-level BPE',
  llama: 'SentencePiece BPE with byte fallback',
};

function strings(f: GgufFile, key: string): string[] {
  const v = f.get(key);
  if (!Array.isArray(v) || v.some((s) => typeof s !== 'string'))
    throw new LorakitError(
      'LK_FILE_INVALID',
      `${f.path}: metadata "${key}": expected an array of strings, found ${v === undefined ? 'nothing' : typeof v}`,
      { file: f.path, field: key },
    );
  return v as string[];
}

/** Metadata `key` as an array of numbers, or undefined when absent. */
function numbers(f: GgufFile, key: string): number[] | undefined {
  const v = f.get(key);
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'number'))
    throw new LorakitError('LK_FILE_INVALID', `${f.path}: metadata "${key}": expected an array of numbers`, {
      file: f.path,
      field: key,
    });
  return v as number[];
}

/** The token at metadata `key` (an id), or undefined when the key is absent or out of range. */
function tokenAt(f: GgufFile, key: string, tokens: string[]): string | undefined {
  const id = f.get(key);
  if (id === undefined) return undefined;
  if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= tokens.length)
    throw new LorakitError(
      'LK_FILE_INVALID',
      `${f.path}: metadata "${key}": expected a token id below ${tokens.length}, found ${String(id)}`,
      { file: f.path, field: key },
    );
  return tokens[id];
}

/** tokenizer.json and tokenizer_config.json of GGUF `f`, or undefined when it holds no tokenizer. */
export function ggufTokenizerFiles(f: GgufFile): { tokenizer: Json; config: Json } | undefined {
  const model = f.get('tokenizer.ggml.model');
  if (model === undefined) return undefined;
  if (typeof model !== 'string' || !(model in GGUF_TOKENIZER_MODELS))
    throw new LorakitError(
      'LK_UNSUPPORTED',
      `${f.path}: metadata "tokenizer.ggml.model" is ${JSON.stringify(model)}; lorakit builds ` +
        `${Object.entries(GGUF_TOKENIZER_MODELS)
          .map(([k, d]) => `"${k}" (${d})`)
          .join(' and ')} tokenizers from GGUF metadata`,
      { file: f.path, field: 'tokenizer.ggml.model' },
    );
  const tokens = strings(f, 'tokenizer.ggml.tokens');
  const bos = tokenAt(f, 'tokenizer.ggml.bos_token_id', tokens);
  const eos = tokenAt(f, 'tokenizer.ggml.eos_token_id', tokens);
  const unk = tokenAt(f, 'tokenizer.ggml.unknown_token_id', tokens);
  const pad = tokenAt(f, 'tokenizer.ggml.padding_token_id', tokens);
  const flag = (key: string, absent: boolean) => {
    const v = f.get(key);
    return typeof v === 'boolean' ? v : absent;
  };
  const spm = model === 'llama';
  const addBos = flag('tokenizer.ggml.add_bos_token', spm);
  const addEos = flag('tokenizer.ggml.add_eos_token', false);
  const template = f.get('tokenizer.chat_template');
  const config: Json = {
    tokenizer_class: spm ? 'LlamaTokenizerFast' : 'PreTrainedTokenizerFast',
    add_bos_token: addBos,
    add_eos_token: addEos,
    clean_up_tokenization_spaces: false,
    ...(spm ? { legacy: true } : {}),
    ...(bos !== undefined ? { bos_token: bos } : {}),
    ...(eos !== undefined ? { eos_token: eos } : {}),
    ...(unk !== undefined ? { unk_token: unk } : {}),
    ...(pad !== undefined ? { pad_token: pad } : {}),
    ...(typeof template === 'string' ? { chat_template: template } : {}),
  };
  const id = (key: string) => f.get(key) as number | undefined; // range-checked by tokenAt above
  const base = spm
    ? spmTokenizerJson({
        tokens,
        scores: numbers(f, 'tokenizer.ggml.scores'),
        types: numbers(f, 'tokenizer.ggml.token_type'),
        merges: f.get('tokenizer.ggml.merges') === undefined ? undefined : strings(f, 'tokenizer.ggml.merges'),
        unkId: id('tokenizer.ggml.unknown_token_id'),
        bosId: id('tokenizer.ggml.bos_token_id'),
        eosId: id('tokenizer.ggml.eos_token_id'),
        addSpacePrefix: flag('tokenizer.ggml.add_space_prefix', true),
        source: f.path,
      })
    : byteLevelJson(f, tokens, bos);
  return {
    tokenizer: { ...base, post_processor: postProcessor(base, addBos ? bos : undefined, addEos ? eos : undefined) },
    config,
  };
}

/** TemplateProcessing adding `bos` before and `eos` after (each when given), or the json's own post-processor. */
function postProcessor(json: Json, bos: string | undefined, eos: string | undefined): unknown {
  if (bos === undefined && eos === undefined) return json.post_processor;
  const idOf = (t: string) =>
    (json.added_tokens as { id: number; content: string }[]).find((a) => a.content === t)?.id ??
    ((json.model as Json).vocab as Record<string, number>)[t];
  const special = (t: string) => ({ SpecialToken: { id: t, type_id: 0 } });
  const single = [
    ...(bos !== undefined ? [special(bos)] : []),
    { Sequence: { id: 'A', type_id: 0 } },
    ...(eos !== undefined ? [special(eos)] : []),
  ];
  const specialTokens: Json = {};
  for (const t of [bos, eos]) if (t !== undefined) specialTokens[t] = { id: t, ids: [idOf(t)], tokens: [t] };
  return {
    type: 'TemplateProcessing',
    single,
    pair: [...single, { Sequence: { id: 'B', type_id: 1 } }],
    special_tokens: specialTokens,
  };
}

/** tokenizer.json of a byte-level BPE ("gpt2") vocabulary, without BOS/EOS. */
function byteLevelJson(f: GgufFile, tokens: string[], bos: string | undefined): Json {
  const merges = strings(f, 'tokenizer.ggml.merges');
  const typesValue = f.get('tokenizer.ggml.token_type');
  const types = Array.isArray(typesValue) ? (typesValue as number[]) : [];
  if (types.length !== 0 && types.length !== tokens.length)
    throw new LorakitError(
      'LK_FILE_INVALID',
      `${f.path}: metadata "tokenizer.ggml.token_type": expected ${tokens.length} entries (one per token), found ` +
        `${types.length}`,
      { file: f.path, field: 'tokenizer.ggml.token_type' },
    );
  const vocab: Record<string, number> = {};
  tokens.forEach((t, i) => {
    if (!(t in vocab)) vocab[t] = i; // a duplicate keeps its first id, as a dict built in order would not: rare
  });
  const base = gpt2TokenizerJson(vocab, merges.join('\n'), { bos_token: bos, add_bos_token: false });
  const added: Json[] = [];
  types.forEach((t, id) => {
    if (t === CONTROL || t === USER_DEFINED)
      added.push({
        id,
        content: tokens[id],
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
        special: t === CONTROL,
      });
  });
  const pre = f.get('tokenizer.ggml.pre');
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: true };
  return {
    ...base,
    added_tokens: added,
    pre_tokenizer:
      typeof pre === 'string' && DIGIT_PRE.has(pre)
        ? { type: 'Sequence', pretokenizers: [{ type: 'Digits', individual_digits: true }, byteLevel] }
        : byteLevel,
    post_processor: { ...byteLevel },
  };
}
