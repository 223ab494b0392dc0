/**
 * The byte-level vocabulary of the demo base model: ids 0-255 are the UTF-8 bytes themselves, then `<s>` (256),
 * `</s>` (257) and `<pad>` (258). The tokenizer files are written in the standard tokenizer.json format that
 * @huggingface/tokenizers (HfTokenizer) and the Python tokenizers/transformers libraries load: a GPT-2 ByteLevel
 * pre-tokenizer and decoder over a BPE model whose 256 symbols are GPT-2's byte characters, with no merges, so every
 * byte is one token and any UTF-8 text round-trips. Training encodes text directly (`encodeDocument`), which gives
 * the same ids as the tokenizer (test/demo/bytes.test.ts checks that) without running BPE over megabytes.
 * Not here: the corpus (brown.ts), batching (data.ts).
 */

/** Id of `<s>` (begin of a document; the tokenizer adds it in front of every encoded text). */
export const BOS_ID = 256;
/** Id of `</s>` (end of a document; generation stops on it). */
export const EOS_ID = 257;
/** Id of `<pad>`. */
export const PAD_ID = 258;
/** Number of ids: 256 bytes and three special tokens. */
export const VOCAB_SIZE = 259;

/** GPT-2's printable stand-in character for each byte (bytes_to_unicode in GPT-2's encoder.py). */
export function byteCharacters(): string[] {
  const bs: number[] = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++)
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  const out = new Array<string>(256);
  bs.forEach((b, i) => {
    out[b] = String.fromCodePoint(cs[i]);
  });
  return out;
}

const special = (id: number, content: string) => ({
  id,
  content,
  single_word: false,
  lstrip: false,
  rstrip: false,
  normalized: false,
  special: true,
});

/** tokenizer.json of the byte-level vocabulary (BOS added by the post-processor, as Llama tokenizers do). */
export function byteTokenizerJson(): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  byteCharacters().forEach((c, b) => {
    vocab[c] = b;
  });
  const bos = { SpecialToken: { id: '<s>', type_id: 0 } };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [special(BOS_ID, '<s>'), special(EOS_ID, '</s>'), special(PAD_ID, '<pad>')],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: {
      type: 'TemplateProcessing',
      single: [bos, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [
        bos,
        { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: '<s>', type_id: 1 } },
        { Sequence: { id: 'B', type_id: 1 } },
      ],
      special_tokens: { '<s>': { id: '<s>', ids: [BOS_ID], tokens: ['<s>'] } },
    },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: [],
    },
  };
}

/** tokenizer_config.json: the special tokens and transformers' class for a tokenizer.json-only folder. */
export function byteTokenizerConfig(maxLength: number): Record<string, unknown> {
  return {
    tokenizer_class: 'PreTrainedTokenizerFast',
    bos_token: '<s>',
    eos_token: '</s>',
    pad_token: '<pad>',
    add_bos_token: true,
    add_eos_token: false,
    clean_up_tokenization_spaces: false,
    model_max_length: maxLength,
    padding_side: 'left',
  };
}

/** Ids of a document as training sees it: `<s>`, its UTF-8 bytes, `</s>`. */
export function encodeDocument(text: string): Uint16Array {
  const bytes = new TextEncoder().encode(text);
  const ids = new Uint16Array(bytes.length + 2);
  ids[0] = BOS_ID;
  ids.set(bytes, 1);
  ids[ids.length - 1] = EOS_ID;
  return ids;
}
