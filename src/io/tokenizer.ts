/**
 * Hugging Face tokenizers: a thin layer over @huggingface/tokenizers that adds what a trainer and a server need
 * (file loading, legacy GPT-2/BERT vocab files, batching with padding, special-token ids, streaming decode).
 * Token ids equal the Python `tokenizers` library's (checked against committed fixtures in test/io/).
 * Not here: chat templates (`chat.ts`), model configs (`config.ts`).
 */
import { join, readFile } from './host.ts';
import * as hfTokenizers from '@huggingface/tokenizers';
import { LorakitError } from '../errors.ts';
import { exists, readJsonFile } from './config.ts';
import { resolveModelDir } from './hub.ts';

type Json = Record<string, unknown>;

/**
 * The part of @huggingface/tokenizers' `Tokenizer` used here. Its bundled .d.ts files use extensionless relative
 * imports, which NodeNext resolution cannot follow (every export types as `any`), so the shape is declared here.
 */
export interface BackendTokenizer {
  normalizer: ((text: string) => string) | null;
  model: ((words: string[]) => string[]) | null;
  post_processor: ((tokens: string[], pair: null, addSpecialTokens: boolean) => { tokens: string[] }) | null;
  encode(
    text: string,
    options?: { add_special_tokens?: boolean; text_pair?: string | null },
  ): { ids: number[]; tokens: string[]; attention_mask: number[] };
  decode(ids: number[], options?: { skip_special_tokens?: boolean; clean_up_tokenization_spaces?: boolean }): string;
  token_to_id(token: string): number | undefined;
  id_to_token(id: number): string | undefined;
  get_added_tokens_decoder(): Map<number, { id: number; content: string; special: boolean }>;
  get_vocab(withAddedTokens?: boolean): Map<string, number>;
}
const { Tokenizer } = hfTokenizers as unknown as {
  Tokenizer: new (tokenizerJson: object, tokenizerConfig: object) => BackendTokenizer;
};

/** Options of `encode`. */
export interface EncodeOptions {
  /** Add the tokenizer's BOS/CLS/SEP/... as its post-processor says (default true). */
  addSpecialTokens?: boolean;
}

/** Options of `encodeBatch`. */
export interface EncodeBatchOptions extends EncodeOptions {
  /** Truncate each sequence to at most this many tokens (on tokenizer_config `truncation_side`, default right). */
  maxLength?: number;
  /** Pad id to use when the tokenizer has none (tokenizer_config `pad_token` is null for Llama, GPT-2, ...). */
  padTokenId?: number;
  /** Overrides tokenizer_config `padding_side`. */
  paddingSide?: 'left' | 'right';
}

/** A padded batch: `ids[b]` and `attentionMask[b]` all have the length of the longest sequence. */
export interface BatchEncoding {
  ids: number[][];
  attentionMask: number[][];
}

/** Options of `decode`. */
export interface DecodeOptions {
  skipSpecialTokens?: boolean;
  /** transformers' `clean_up_tokenization_spaces` (" ." → "."); default: tokenizer_config's value, else false. */
  cleanUpTokenizationSpaces?: boolean;
}

/** Options of `fromJson`/`fromDir`. */
export interface HfTokenizerOptions {
  /**
   * Texts longer than this many characters are cut into words before BPE when the tokenizer has no pre-tokenizer
   * (Llama-2 style: the whole text is one BPE word, which is slow and defeats the word cache). Cuts go only between
   * two characters that are never adjacent inside a vocab entry, so no merge can cross them and the ids are the
   * same. Default 1000; Infinity turns it off.
   */
  longInputChars?: number;
}

/** Turns token ids into text as they are generated; see `HfTokenizer.createStreamDecoder`. */
export interface StreamDecoder {
  /** Adds ids; returns the text that became complete ('' while a character is still split across tokens). */
  push(ids: number | readonly number[]): string;
  /** Returns what is left (U+FFFD for a character that never completed) and starts over. */
  flush(): string;
}

/** An added token of the vocabulary (special or not). */
export interface AddedTokenInfo {
  id: number;
  content: string;
  special: boolean;
}

/** A tokenizer.json tokenizer plus its tokenizer_config.json (special tokens, padding side, chat template). */
export class HfTokenizer {
  /** The @huggingface/tokenizers object doing the work. */
  readonly backend: BackendTokenizer;
  /** tokenizer_config.json as read (special tokens may be strings or AddedToken objects `{content}`). */
  readonly config: Readonly<Json>;
  /** Ids of tokenizer_config's bos/eos/pad/unk tokens; undefined when the config names none (or an unknown one). */
  readonly bosTokenId: number | undefined;
  readonly eosTokenId: number | undefined;
  readonly padTokenId: number | undefined;
  readonly unkTokenId: number | undefined;
  /** Number of ids, added tokens included (max id + 1): the embedding rows a model needs at least. */
  readonly vocabSize: number;
  /** Side padding goes on in `encodeBatch` (tokenizer_config `padding_side`, default right). */
  readonly paddingSide: 'left' | 'right';
  /** Ids of the added tokens marked special (what `skipSpecialTokens` drops). */
  readonly specialTokenIds: ReadonlySet<number>;
  private readonly cleanUp: boolean;
  private readonly longInputChars: number;
  /** Character pairs adjacent inside some vocab entry (see `longInputChars`); undefined where cutting is unsafe. */
  private readonly joinedPairs: Set<string> | undefined;
  /** Added-token contents, raw and normalised: a text holding one is encoded by the library as it is. */
  private readonly addedContents: string[];

  private constructor(json: Json, config: Json, options: HfTokenizerOptions) {
    this.config = config;
    const additional = Array.isArray(config.additional_special_tokens)
      ? config.additional_special_tokens.map(tokenContent).filter((s) => s !== undefined)
      : [];
    try {
      this.backend = new Tokenizer(json, { ...config, additional_special_tokens: additional });
    } catch (e) {
      throw new LorakitError('LK_FILE_INVALID', `tokenizer.json: cannot build the tokenizer: ${(e as Error).message}`);
    }
    const id = (field: string): number | undefined => {
      const content = tokenContent(config[field]);
      return content === undefined ? undefined : this.backend.token_to_id(content);
    };
    this.bosTokenId = id('bos_token');
    this.eosTokenId = id('eos_token');
    this.padTokenId = id('pad_token');
    this.unkTokenId = id('unk_token');
    let max = -1;
    for (const v of this.backend.get_vocab(true).values()) if (v > max) max = v;
    this.vocabSize = max + 1;
    this.paddingSide = config.padding_side === 'left' ? 'left' : 'right';
    this.cleanUp = config.clean_up_tokenization_spaces === true;
    const added = [...this.backend.get_added_tokens_decoder().values()];
    const extraIds = additional.map((t) => this.backend.token_to_id(t)).filter((i) => i !== undefined);
    this.specialTokenIds = new Set([...added.filter((t) => t.special).map((t) => t.id), ...extraIds]);
    this.longInputChars = options.longInputChars ?? 1000;
    const plainText = config.remove_space !== true && config.do_lowercase_and_remove_accent !== true;
    this.joinedPairs = plainText ? joinedPairs(json) : undefined;
    const normalize = this.backend.normalizer;
    this.addedContents = added.flatMap((t) => (normalize ? [t.content, normalize(t.content)] : [t.content]));
  }

  /** Builds from a parsed tokenizer.json and tokenizer_config.json (the config may be `{}`). */
  static fromJson(
    tokenizerJson: unknown,
    tokenizerConfig: unknown = {},
    options: HfTokenizerOptions = {},
  ): HfTokenizer {
    const json = asObject(tokenizerJson, 'tokenizer.json');
    const config = asObject(tokenizerConfig ?? {}, 'tokenizer_config.json');
    if (typeof json.model !== 'object' || json.model === null) {
      throw new LorakitError(
        'LK_FILE_INVALID',
        `tokenizer.json: field "model" expected an object, got ${JSON.stringify(json.model)}`,
      );
    }
    return new HfTokenizer(applyLlamaFlags(repairMerges(json), config), config, options);
  }

  /**
   * Loads the tokenizer of a Hugging Face folder: tokenizer.json (+ tokenizer_config.json, special_tokens_map.json),
   * or else legacy files converted as transformers does: vocab.json/encoder.json + merges.txt/vocab.bpe (GPT-2
   * byte-level BPE), or vocab.txt (BERT WordPiece). A hub id is looked up in the local hub cache (`resolveModelDir`).
   */
  static async fromDir(pathOrHubId: string, options: HfTokenizerOptions = {}): Promise<HfTokenizer> {
    const dir = resolveModelDir(pathOrHubId);
    const file = (name: string) => join(dir, name);
    let config: Json = {};
    if (await exists(file('tokenizer_config.json')))
      config = asObject(await readJsonFile(file('tokenizer_config.json')), file('tokenizer_config.json'));
    if (await exists(file('special_tokens_map.json'))) {
      // transformers lets special_tokens_map.json override tokenizer_config.json.
      config = {
        ...config,
        ...asObject(await readJsonFile(file('special_tokens_map.json')), file('special_tokens_map.json')),
      };
    }
    if (await exists(file('tokenizer.json'))) {
      return HfTokenizer.fromJson(await readJsonFile(file('tokenizer.json')), config, options);
    }
    const vocabName = (await exists(file('vocab.json')))
      ? 'vocab.json'
      : (await exists(file('encoder.json')))
        ? 'encoder.json'
        : undefined;
    const mergesName = (await exists(file('merges.txt')))
      ? 'merges.txt'
      : (await exists(file('vocab.bpe')))
        ? 'vocab.bpe'
        : undefined;
    if (vocabName && mergesName) {
      const vocab = asObject(await readJsonFile(file(vocabName)), file(vocabName)) as Record<string, number>;
      const merges = await readFile(file(mergesName), 'utf8');
      const full = { bos_token: '<|endoftext|>', eos_token: '<|endoftext|>', unk_token: '<|endoftext|>', ...config };
      return HfTokenizer.fromJson(gpt2TokenizerJson(vocab, merges, full, file(mergesName)), full, options);
    }
    if (await exists(file('vocab.txt'))) {
      const full = {
        do_lower_case: true,
        unk_token: '[UNK]',
        sep_token: '[SEP]',
        pad_token: '[PAD]',
        cls_token: '[CLS]',
        mask_token: '[MASK]',
        ...config,
      };
      return HfTokenizer.fromJson(
        bertTokenizerJson(await readFile(file('vocab.txt'), 'utf8'), full, file('vocab.txt')),
        full,
        options,
      );
    }
    const what = (await exists(dir)) ? 'no tokenizer files' : 'folder not found';
    throw new LorakitError(
      'LK_FILE_NOT_FOUND',
      `${dir}: ${what}; expected tokenizer.json, or vocab.json + merges.txt (GPT-2 BPE), or vocab.txt (BERT WordPiece)`,
      { path: dir },
    );
  }

  /** Token ids of `text`. */
  encode(text: string, { addSpecialTokens = true }: EncodeOptions = {}): number[] {
    if (typeof text !== 'string')
      throw new LorakitError('LK_INVALID_ARGUMENT', `encode: text must be a string, got ${typeof text}`);
    if (this.joinedPairs !== undefined && text.length > this.longInputChars) {
      const ids = this.encodeByWords(text, this.joinedPairs, addSpecialTokens);
      if (ids !== undefined) return ids;
    }
    return this.backend.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  /** Encodes several texts and pads them to the longest (pad side from tokenizer_config unless given). */
  encodeBatch(texts: readonly string[], options: EncodeBatchOptions = {}): BatchEncoding {
    const { maxLength, paddingSide = this.paddingSide } = options;
    const padId = this.padTokenId ?? options.padTokenId;
    if (padId === undefined) {
      throw new LorakitError(
        'LK_INVALID_ARGUMENT',
        'encodeBatch: the tokenizer has no pad token (tokenizer_config.json "pad_token" is missing or null); pass ' +
          '{padTokenId}, e.g. the eos id',
      );
    }
    if (maxLength !== undefined && !(Number.isInteger(maxLength) && maxLength > 0)) {
      throw new LorakitError(
        'LK_INVALID_ARGUMENT',
        `encodeBatch: maxLength must be a positive integer, got ${maxLength}`,
      );
    }
    const left = this.config.truncation_side === 'left';
    const seqs = texts.map((t) => {
      const ids = this.encode(t, options);
      if (maxLength === undefined || ids.length <= maxLength) return ids;
      return left ? ids.slice(ids.length - maxLength) : ids.slice(0, maxLength);
    });
    const T = Math.max(0, ...seqs.map((s) => s.length));
    const ids: number[][] = [];
    const attentionMask: number[][] = [];
    for (const s of seqs) {
      const pad = new Array<number>(T - s.length).fill(padId);
      const zeros = new Array<number>(T - s.length).fill(0);
      const ones = new Array<number>(s.length).fill(1);
      ids.push(paddingSide === 'left' ? [...pad, ...s] : [...s, ...pad]);
      attentionMask.push(paddingSide === 'left' ? [...zeros, ...ones] : [...ones, ...zeros]);
    }
    return { ids, attentionMask };
  }

  /** Text of `ids`. */
  decode(
    ids: readonly number[],
    { skipSpecialTokens = false, cleanUpTokenizationSpaces = this.cleanUp }: DecodeOptions = {},
  ): string {
    for (let i = 0; i < ids.length; i++) {
      const v = ids[i]!;
      if (!Number.isInteger(v) || v < 0 || v >= this.vocabSize) {
        throw new LorakitError(
          'LK_INVALID_ARGUMENT',
          `decode: ids[${i}] must be an integer in [0, ${this.vocabSize}), got ${v}`,
        );
      }
    }
    if (ids.length === 0) return '';
    return this.backend.decode(ids as number[], {
      skip_special_tokens: skipSpecialTokens,
      clean_up_tokenization_spaces: cleanUpTokenizationSpaces,
    });
  }

  /** Id of a token string (added tokens included), or undefined. */
  tokenToId(token: string): number | undefined {
    return this.backend.token_to_id(token);
  }

  /** Token string of an id, or undefined. */
  idToToken(id: number): string | undefined {
    return this.backend.id_to_token(id);
  }

  /** The added tokens (`<|eot_id|>`, `[CLS]`, ...) in id order. */
  addedTokens(): AddedTokenInfo[] {
    return [...this.backend.get_added_tokens_decoder().values()]
      .map((t) => ({ id: t.id, content: t.content, special: t.special }))
      .sort((a, b) => a.id - b.id);
  }

  /**
   * A decoder for generated ids. Byte-level BPE and byte-fallback tokenizers can split one UTF-8 character over
   * several tokens, and some decoders drop a leading space at the start of a text, so decoding token by token is
   * wrong. This decodes a short window that grows until its text no longer ends in an incomplete character, and
   * emits the part after the previous window (as vLLM/TGI do; transformers' TextStreamer decodes the growing
   * sequence too). The pieces join to `decode(ids, {cleanUpTokenizationSpaces: false})`.
   */
  createStreamDecoder({ skipSpecialTokens = false }: { skipSpecialTokens?: boolean } = {}): StreamDecoder {
    let ids: number[] = [];
    let prefixOffset = 0;
    let readOffset = 0;
    const text = (a: number, b: number) =>
      this.decode(ids.slice(a, b), { skipSpecialTokens, cleanUpTokenizationSpaces: false });
    return {
      push: (more) => {
        for (const id of typeof more === 'number' ? [more] : more) ids.push(id);
        const prefix = text(prefixOffset, readOffset);
        const full = text(prefixOffset, ids.length);
        if (full.length <= prefix.length || full.endsWith('\uFFFD')) return '';
        // Drop what no window will read again, so a long generation keeps a short id list.
        ids = ids.slice(readOffset);
        prefixOffset = 0;
        readOffset = ids.length;
        return full.slice(prefix.length);
      },
      flush: () => {
        const rest = text(prefixOffset, ids.length).slice(text(prefixOffset, readOffset).length);
        ids = [];
        prefixOffset = readOffset = 0;
        return rest;
      },
    };
  }

  /** Normalises, cuts into words where no merge can cross (see `longInputChars`), runs BPE on each word. */
  private encodeByWords(text: string, pairs: Set<string>, addSpecialTokens: boolean): number[] | undefined {
    const { normalizer, model, post_processor: post } = this.backend;
    const normalized = normalizer ? normalizer(text) : text;
    // Added tokens split the text into sections that are normalised separately; leave those texts to the library.
    if (model === null || this.addedContents.some((c) => text.includes(c) || normalized.includes(c))) return undefined;
    const words: string[] = [];
    let word = '';
    let prev = '';
    for (const ch of normalized) {
      if (word !== '' && !pairs.has(prev + ch)) {
        words.push(word);
        word = '';
      }
      word += ch;
      prev = ch;
    }
    if (word !== '') words.push(word);
    const tokens = model(words);
    const processed = post ? post(tokens, null, addSpecialTokens).tokens : tokens;
    return processed.map((t) => this.backend.token_to_id(t) ?? this.unkTokenId ?? internalMissing(t));
  }
}

function internalMissing(token: string): never {
  throw new Error(`internal: token ${JSON.stringify(token)} produced by the tokenizer has no id`);
}

/** The string of a special-token entry: "<s>", or an AddedToken object {content: "<s>", ...}; else undefined. */
export function tokenContent(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && v !== null && typeof (v as Json).content === 'string')
    return (v as Json).content as string;
  return undefined;
}

function asObject(v: unknown, what: string): Json {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw new LorakitError(
      'LK_FILE_INVALID',
      `${what}: expected a JSON object, got ${v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v}`,
    );
  }
  return v as Json;
}

/**
 * For a BPE tokenizer without pre-tokenizer: every pair of characters that sits side by side inside some vocab
 * entry. Every merge result is a vocab entry (the Rust loader insists), so no symbol can ever span two characters
 * outside this set, and cutting the text there gives the same tokens. Undefined when a model option makes the
 * result depend on word boundaries (ignore_merges, fuse_unk without byte_fallback, subword prefixes, dropout).
 */
function joinedPairs(json: Json): Set<string> | undefined {
  const model = json.model as Json;
  if (json.pre_tokenizer != null || model.type !== 'BPE') return undefined;
  if (model.ignore_merges === true || model.dropout || model.continuing_subword_prefix || model.end_of_word_suffix)
    return undefined;
  if (model.fuse_unk === true && model.byte_fallback !== true) return undefined;
  const vocab = model.vocab as Record<string, number>;
  for (const m of model.merges as (string | string[])[]) {
    const [a, b] = typeof m === 'string' ? m.split(' ') : m;
    if (!Object.hasOwn(vocab, `${a}${b}`)) return undefined;
  }
  const pairs = new Set<string>();
  for (const token of Object.keys(vocab)) {
    const chars = Array.from(token);
    for (let i = 1; i < chars.length; i++) pairs.add(chars[i - 1]! + chars[i]!);
  }
  return pairs;
}

/**
 * Writes merges as [left, right] pairs when some "left right" strings hold more than one space (the Llama-2 file
 * has vocab entries made of spaces, e.g. merge "   " = " " + "  "); the split is the one the vocab confirms.
 */
function repairMerges(json: Json): Json {
  const model = json.model as Json;
  const merges = model.merges;
  if (!Array.isArray(merges) || !merges.some((m) => typeof m === 'string' && m.split(' ').length !== 2)) return json;
  const vocab = model.vocab as Record<string, number>;
  const pairs = merges.map((m: string | string[]) => {
    if (typeof m !== 'string') return m;
    const parts = m.split(' ');
    if (parts.length === 2) return parts;
    for (let i = 0; i < m.length; i++) {
      if (m[i] !== ' ') continue;
      const a = m.slice(0, i),
        b = m.slice(i + 1);
      if (a in vocab && b in vocab && a + b in vocab) return [a, b];
    }
    throw new LorakitError(
      'LK_FILE_INVALID',
      `tokenizer.json: merge ${JSON.stringify(m)} cannot be split into two vocab entries`,
    );
  });
  return { ...json, model: { ...model, merges: pairs } };
}

/** transformers' LlamaTokenizerFast rebuilds the post-processor from add_bos_token/add_eos_token; so do we. */
function applyLlamaFlags(json: Json, config: Json): Json {
  if (!/^(Code)?LlamaTokenizer(Fast)?$/.test(String(config.tokenizer_class))) return json;
  if (typeof config.add_bos_token !== 'boolean' && typeof config.add_eos_token !== 'boolean') return json;
  const addBos = config.add_bos_token !== false,
    addEos = config.add_eos_token === true;
  const bos = tokenContent(config.bos_token),
    eos = tokenContent(config.eos_token);
  if ((addBos && bos === undefined) || (addEos && eos === undefined)) {
    throw new LorakitError(
      'LK_CONFIG_INVALID',
      `tokenizer_config.json: field "${addBos && bos === undefined ? 'bos_token' : 'eos_token'}" expected a token ` +
        `because add_${addBos && bos === undefined ? 'bos' : 'eos'}_token is true, got ` +
        `${JSON.stringify(config[addBos && bos === undefined ? 'bos_token' : 'eos_token'])}`,
    );
  }
  const idOf = (t: string) =>
    ((json.added_tokens as Json[] | undefined) ?? []).find((a) => a.content === t)?.id ??
    ((json.model as Json).vocab as Json)[t];
  const special = (t: string, typeId: number) => ({ SpecialToken: { id: t, type_id: typeId } });
  const seq = (id: string, typeId: number) => ({ Sequence: { id, type_id: typeId } });
  const single = [...(addBos ? [special(bos!, 0)] : []), seq('A', 0), ...(addEos ? [special(eos!, 0)] : [])];
  const pair = [...single, ...(addBos ? [special(bos!, 1)] : []), seq('B', 1), ...(addEos ? [special(eos!, 1)] : [])];
  const specialTokens: Json = {};
  for (const t of [...(addBos ? [bos!] : []), ...(addEos ? [eos!] : [])])
    specialTokens[t] = { id: t, ids: [idOf(t)], tokens: [t] };
  return { ...json, post_processor: { type: 'TemplateProcessing', single, pair, special_tokens: specialTokens } };
}

/** tokenizer.json for GPT-2 files (vocab.json + merges.txt), as transformers' GPT2Converter builds it. */
export function gpt2TokenizerJson(
  vocabFile: Record<string, number>,
  mergesText: string,
  config: Json,
  source = 'merges.txt',
): Json {
  const vocab = { ...vocabFile };
  const merges: string[][] = [];
  mergesText.split('\n').forEach((line, i) => {
    if (line === '' || (i === 0 && line.startsWith('#version'))) return;
    const parts = line.split(' ');
    if (parts.length !== 2)
      throw new LorakitError(
        'LK_FILE_INVALID',
        `${source}: line ${i + 1} expected "left right", got ${JSON.stringify(line)}`,
      );
    merges.push(parts);
  });
  const addPrefixSpace = config.add_prefix_space === true;
  const bos = tokenContent(config.bos_token);
  const postProcessor =
    config.add_bos_token === true && bos !== undefined
      ? {
          type: 'TemplateProcessing',
          single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
          pair: [
            { SpecialToken: { id: bos, type_id: 0 } },
            { Sequence: { id: 'A', type_id: 0 } },
            { Sequence: { id: 'B', type_id: 1 } },
          ],
          special_tokens: { [bos]: { id: bos, ids: [vocab[bos]], tokens: [bos] } },
        }
      : { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: specialAddedTokens(vocab, config, ['bos_token', 'eos_token', 'unk_token', 'pad_token'], true),
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: addPrefixSpace, trim_offsets: true, use_regex: true },
    post_processor: postProcessor,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
}

/** tokenizer.json for a BERT vocab.txt, as transformers' BertConverter builds it. */
export function bertTokenizerJson(vocabText: string, config: Json, source = 'vocab.txt'): Json {
  const lines = vocabText.split('\n');
  if (lines.at(-1) === '') lines.pop();
  const vocab: Record<string, number> = {};
  lines.forEach((t, i) => (vocab[t] = i));
  const name = (field: string) => tokenContent(config[field])!;
  const [cls, sep, unk] = [name('cls_token'), name('sep_token'), name('unk_token')];
  for (const t of [cls, sep, unk]) {
    if (!(t in vocab))
      throw new LorakitError(
        'LK_FILE_INVALID',
        `${source}: special token ${JSON.stringify(t)} is not in the vocabulary`,
      );
  }
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: specialAddedTokens(
      vocab,
      config,
      ['pad_token', 'unk_token', 'cls_token', 'sep_token', 'mask_token'],
      false,
    ),
    normalizer: {
      type: 'BertNormalizer',
      clean_text: true,
      handle_chinese_chars: config.tokenize_chinese_chars !== false,
      strip_accents: typeof config.strip_accents === 'boolean' ? config.strip_accents : null,
      lowercase: config.do_lower_case !== false,
    },
    pre_tokenizer: { type: 'BertPreTokenizer' },
    post_processor: {
      type: 'TemplateProcessing',
      single: [
        { SpecialToken: { id: cls, type_id: 0 } },
        { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: sep, type_id: 0 } },
      ],
      pair: [
        { SpecialToken: { id: cls, type_id: 0 } },
        { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: sep, type_id: 0 } },
        { Sequence: { id: 'B', type_id: 1 } },
        { SpecialToken: { id: sep, type_id: 1 } },
      ],
      special_tokens: {
        [cls]: { id: cls, ids: [vocab[cls]], tokens: [cls] },
        [sep]: { id: sep, ids: [vocab[sep]], tokens: [sep] },
      },
    },
    decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
    model: { type: 'WordPiece', unk_token: unk, continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab },
  };
}

/**
 * The special tokens of a converted legacy tokenizer as tokenizer.json `added_tokens` (sorted by id, each once);
 * a token missing from the vocab gets the next free id, as transformers' add_special_tokens does.
 */
function specialAddedTokens(
  vocab: Record<string, number>,
  config: Json,
  fields: string[],
  normalized: boolean,
): Json[] {
  // Adds missing tokens to `vocab` (a copy made by the caller).
  const names = fields.map((f) => tokenContent(config[f]));
  const extra = Array.isArray(config.additional_special_tokens)
    ? config.additional_special_tokens.map(tokenContent)
    : [];
  let next = Math.max(-1, ...Object.values(vocab)) + 1;
  const out = new Map<string, Json>();
  for (const t of [...names, ...extra]) {
    if (t === undefined || out.has(t)) continue;
    const id = t in vocab ? vocab[t]! : next++;
    vocab[t] = id;
    out.set(t, { id, content: t, single_word: false, lstrip: false, rstrip: false, normalized, special: true });
  }
  return [...out.values()].sort((a, b) => (a.id as number) - (b.id as number));
}
