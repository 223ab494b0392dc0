/**
 * tokenizer.json for a GGUF SentencePiece vocabulary (`tokenizer.ggml.model` "llama": Llama 1/2, Mistral, TinyLlama),
 * built as transformers' GGUF loading builds it (integrations/ggml.py GGUFLlamaConverter on the legacy LlamaConverter):
 * a BPE with byte fallback over the GGUF's tokens, its merges taken from `tokenizer.ggml.merges` or, as in most files
 * (llama.cpp writes none for SentencePiece), recovered from the piece scores; a normalizer that prepends "▁" (unless
 * `add_space_prefix` is false) and turns spaces into "▁"; no pre-tokenizer; the byte-fallback decoder; control tokens
 * (token_type 3) as special added tokens. The same ids as transformers on every text (test/io/gguf-spm.test.ts).
 * Not here: reading the metadata and the post-processor (gguf-tokenizer.ts), byte-level BPE (tokenizer.ts).
 */
import { LorakitError } from '../errors.ts';

type Json = Record<string, unknown>;

/** llama.cpp token type of control tokens (<s>, </s>, chat markers): transformers' special added tokens. */
const CONTROL = 3;

/** The GGUF tokenizer fields a SentencePiece tokenizer.json is built from. */
export interface SpmVocab {
  /** `tokenizer.ggml.tokens`: the piece of each id. */
  tokens: readonly string[];
  /** `tokenizer.ggml.scores` (one per token), or undefined when the file has none. */
  scores?: readonly number[];
  /** `tokenizer.ggml.token_type` (one per token), or undefined when the file has none. */
  types?: readonly number[];
  /** `tokenizer.ggml.merges` ("left right" each), or undefined when the file has none. */
  merges?: readonly string[];
  /** Ids of the unknown, BOS and EOS tokens (`tokenizer.ggml.*_token_id`), when given. */
  unkId?: number;
  bosId?: number;
  eosId?: number;
  /** `tokenizer.ggml.add_space_prefix` (transformers' add_prefix_space; default true). */
  addSpacePrefix?: boolean;
  /** Where the fields came from, for error messages. */
  source: string;
}

/**
 * BPE merges recovered from SentencePiece scores, as transformers does when a GGUF has no merges: every split of
 * every piece into two pieces of the vocabulary becomes a merge ranked by the whole piece's score (higher first;
 * splits of one piece ordered by their halves' scores, higher first; ties keep vocabulary order). SentencePiece's BPE
 * merges the adjacent pair whose union scores highest, so ranking each union by its score reproduces it.
 */
export function mergesFromScores(tokens: readonly string[], scores: readonly number[]): [string, string][] {
  const score = new Map<string, number>(); // insertion order = first id, value = last score (a Python dict built in order)
  tokens.forEach((t, i) => score.set(t, scores[i]!));
  const merges: { left: string; right: string; score: number }[] = [];
  for (const [piece, s] of score) {
    const chars = Array.from(piece); // code points, as Python slices strings
    const local: { left: string; right: string; score: number }[] = [];
    for (let k = 1; k < chars.length; k++) {
      const left = chars.slice(0, k).join('');
      const right = chars.slice(k).join('');
      if (score.has(left) && score.has(right)) local.push({ left, right, score: s });
    }
    // sorted by (score of left, score of right), descending; Array.prototype.sort is stable like Python's sorted
    local.sort((a, b) => score.get(b.left)! - score.get(a.left)! || score.get(b.right)! - score.get(a.right)!);
    merges.push(...local);
  }
  merges.sort((a, b) => b.score - a.score);
  return merges.map((m) => [m.left, m.right]);
}

/** "left right" merges as pairs; a merge with more than one space is split where both halves are pieces. */
function parseMerges(merges: readonly string[], vocab: ReadonlySet<string>, source: string): [string, string][] {
  return merges.map((m, i) => {
    const at = m.indexOf(' ');
    if (at > 0 && m.indexOf(' ', at + 1) < 0) return [m.slice(0, at), m.slice(at + 1)];
    for (let k = 0; k < m.length; k++)
      if (m[k] === ' ' && vocab.has(m.slice(0, k)) && vocab.has(m.slice(k + 1))) return [m.slice(0, k), m.slice(k + 1)];
    throw new LorakitError(
      'LK_FILE_INVALID',
      `${source}: metadata "tokenizer.ggml.merges"[${i}]: expected "left right" of two tokens, found ${JSON.stringify(m)}`,
      { file: source, field: 'tokenizer.ggml.merges' },
    );
  });
}

/** tokenizer.json (no post-processor: the caller adds BOS/EOS) of a GGUF SentencePiece vocabulary. */
export function spmTokenizerJson(v: SpmVocab): Json {
  const { tokens, source } = v;
  for (const [key, arr] of [
    ['scores', v.scores],
    ['token_type', v.types],
  ] as const)
    if (arr !== undefined && arr.length !== tokens.length)
      throw new LorakitError(
        'LK_FILE_INVALID',
        `${source}: metadata "tokenizer.ggml.${key}": expected ${tokens.length} entries (one per token), found ` +
          `${arr.length}`,
        { file: source, field: `tokenizer.ggml.${key}` },
      );
  const vocab: Record<string, number> = {};
  tokens.forEach((t, i) => {
    vocab[t] = i; // a duplicate piece keeps its last id, as transformers' dict comprehension does
  });
  let merges: [string, string][];
  if (v.merges !== undefined) merges = parseMerges(v.merges, new Set(tokens), source);
  else if (v.scores !== undefined) merges = mergesFromScores(tokens, v.scores);
  else
    throw new LorakitError(
      'LK_FILE_INVALID',
      `${source}: a "llama" (SentencePiece) tokenizer needs "tokenizer.ggml.merges" or "tokenizer.ggml.scores"; ` +
        'found neither',
      { file: source, field: 'tokenizer.ggml.scores' },
    );
  const unk = v.unkId !== undefined ? tokens[v.unkId] : undefined;
  // control tokens are special, and so are unk, bos and eos (transformers' tokenizer adds its named special tokens)
  const named = [v.unkId, v.bosId, v.eosId].filter((id) => id !== undefined);
  const specialIds = [...new Set([...(v.types ?? []).flatMap((t, id) => (t === CONTROL ? [id] : [])), ...named])].sort(
    (a, b) => a - b,
  );
  const addedTokens = specialIds.map((id) => ({
    id,
    content: tokens[id],
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }));
  const prefix = v.addSpacePrefix !== false;
  const replace = (from: string, to: string) => ({ type: 'Replace', pattern: { String: from }, content: to });
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: {
      type: 'Sequence',
      normalizers: [...(prefix ? [{ type: 'Prepend', prepend: '▁' }] : []), replace(' ', '▁')],
    },
    pre_tokenizer: null,
    post_processor: null,
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        replace('▁', ' '),
        ...(prefix ? [{ type: 'Strip', content: ' ', start: 1, stop: 0 }] : []),
      ],
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: unk ?? null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
}
