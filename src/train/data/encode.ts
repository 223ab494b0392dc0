/**
 * Records to token examples: each record becomes `{ids, labels}` with labels aligned to the ids (the
 * transformers convention: `labels[i]` is the token at position i, or -100 where no loss is taken; the model's
 * loss shifts them, so logits at i are scored against labels[i + 1]). Not here: file parsing (`records.ts`),
 * cutting into fixed-length rows (`rows.ts`).
 *
 * - plain: the whole file is encoded once with the tokenizer's default special tokens and cut into consecutive
 *   windows of seqLen tokens (as transformers' run_clm `group_texts`, but the shorter tail is kept).
 * - text: all tokens carry loss; EOS is appended when the tokenizer has one and did not add it.
 * - prompt/completion and Alpaca: `prompt + completion` is encoded as one text; the tokens it shares with the
 *   encoding of the prompt alone are masked (so a token that merges the end of the prompt with the start of the
 *   completion carries loss), then EOS is appended (with loss) so the model learns to stop.
 * - chat: `encodeChat` (src/io/chat.ts) renders the model's chat template; the assistant tokens (content and the
 *   end-of-turn token) carry loss, everything else is -100. The template decides where EOS goes.
 * In every example labels[0] is -100: no token of the example precedes it, so it is never a target of this
 * example (in a packed row this stops the first token of one example being trained on the end of the previous one).
 */
import type { HfTokenizer } from '../../io/tokenizer.ts';
import { encodeChat } from '../../io/chat.ts';
import { LorakitError } from '../../errors.ts';
import { formatLocation, type DataRecord, type RecordProblem } from './records.ts';

/** The label of a position without loss (PyTorch CrossEntropyLoss `ignore_index`). */
export const IGNORE_INDEX = -100;

/** Tokenised examples stored flat: example k is `ids[offsets[k] .. offsets[k + 1])`, and likewise its labels. */
export interface ExampleSet {
  offsets: Uint32Array;
  ids: Int32Array;
  labels: Int32Array;
}

/** What encoding needs besides the record. */
export interface EncodeContext {
  tokenizer: HfTokenizer;
  /** The chat template for chat records (required only when there are some). */
  chatTemplate?: string;
  /** Window length for plain text files. */
  seqLen: number;
}

/** Collects examples into growing typed arrays. */
class ExampleSetBuilder {
  private ids = new Int32Array(1 << 16);
  private labels = new Int32Array(1 << 16);
  private offsets: number[] = [0];
  private size = 0;

  add(ids: readonly number[], labels: readonly number[]): void {
    if (ids.length !== labels.length)
      throw new Error(`internal: example has ${ids.length} ids and ${labels.length} labels`);
    while (this.size + ids.length > this.ids.length) {
      const grow = (a: Int32Array) => {
        const b = new Int32Array(a.length * 2);
        b.set(a);
        return b;
      };
      this.ids = grow(this.ids);
      this.labels = grow(this.labels);
    }
    this.ids.set(ids, this.size);
    this.labels.set(labels, this.size);
    this.size += ids.length;
    this.offsets.push(this.size);
  }

  build(): ExampleSet {
    return {
      offsets: Uint32Array.from(this.offsets),
      ids: this.ids.slice(0, this.size),
      labels: this.labels.slice(0, this.size),
    };
  }
}

function commonPrefixLength(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

/** `ids` with EOS appended (carrying loss) unless the tokenizer has none or already ended with it. */
function withEos(tokenizer: HfTokenizer, ids: number[], labels: number[]): void {
  const eos = tokenizer.eosTokenId;
  if (eos === undefined || ids.at(-1) === eos) return;
  ids.push(eos);
  labels.push(eos);
}

/** The examples of one record (one, or for a plain text file one per window). */
export function encodeRecord(
  record: DataRecord,
  { tokenizer, chatTemplate, seqLen }: EncodeContext,
): { ids: number[]; labels: number[] }[] {
  switch (record.kind) {
    case 'plain': {
      const all = tokenizer.encode(record.text, { addSpecialTokens: true });
      const out: { ids: number[]; labels: number[] }[] = [];
      // A window of one token has nothing to predict.
      for (let i = 0; i + 1 < all.length; i += seqLen) {
        const ids = all.slice(i, i + seqLen);
        out.push({ ids, labels: [IGNORE_INDEX, ...ids.slice(1)] });
      }
      return out;
    }
    case 'text': {
      const ids = tokenizer.encode(record.text, { addSpecialTokens: true });
      const labels = ids.slice();
      withEos(tokenizer, ids, labels);
      labels[0] = IGNORE_INDEX;
      return [{ ids, labels }];
    }
    case 'pair': {
      const ids = tokenizer.encode(record.prompt + record.completion, { addSpecialTokens: true });
      const promptLength = commonPrefixLength(tokenizer.encode(record.prompt, { addSpecialTokens: true }), ids);
      const labels = ids.map((id, i) => (i < promptLength ? IGNORE_INDEX : id));
      withEos(tokenizer, ids, labels);
      labels[0] = IGNORE_INDEX;
      return [{ ids, labels }];
    }
    case 'chat': {
      if (chatTemplate === undefined)
        throw new Error('internal: chat records reached encodeRecord without a chat template');
      const { ids, assistantMask } = encodeChat(tokenizer, chatTemplate, record.messages);
      const labels = ids.map((id, i) => (assistantMask[i] === 1 ? id : IGNORE_INDEX));
      if (labels.length > 0) labels[0] = IGNORE_INDEX;
      return [{ ids, labels }];
    }
  }
}

/** Options of `encodeRecords`. */
export interface EncodeRecordsOptions extends EncodeContext {
  /** 'fail' throws LK_FILE_INVALID at the first record that cannot be encoded; 'skip' reports it in `problems`. */
  onError: 'skip' | 'fail';
}

/**
 * Encodes every record. A record the tokenizer or chat template rejects (e.g. a template that rewrites the
 * assistant text) is a record problem like a malformed one; a record with no loss token left is one too.
 */
export function encodeRecords(
  records: readonly DataRecord[],
  options: EncodeRecordsOptions,
): { examples: ExampleSet; problems: RecordProblem[] } {
  const builder = new ExampleSetBuilder();
  const problems: RecordProblem[] = [];
  for (const record of records) {
    let examples: { ids: number[]; labels: number[] }[];
    try {
      examples = encodeRecord(record, options);
      if (record.kind !== 'plain' && !examples[0]!.labels.some((l) => l !== IGNORE_INDEX)) {
        throw new LorakitError(
          'LK_FILE_INVALID',
          'no token carries loss (the completion or assistant turns are empty after tokenisation)',
        );
      }
    } catch (e) {
      if (!(e instanceof LorakitError)) throw e;
      const problem = { ...record.where, message: e.message };
      if (options.onError === 'fail') {
        throw new LorakitError(
          'LK_FILE_INVALID',
          `${formatLocation(problem)}: ${problem.message} (pass onError: 'skip' to skip such records)`,
          { ...problem },
        );
      }
      problems.push(problem);
      continue;
    }
    for (const ex of examples) builder.add(ex.ids, ex.labels);
  }
  return { examples: builder.build(), problems };
}

/** Number of examples in a set. */
export function exampleCount(set: ExampleSet): number {
  return set.offsets.length - 1;
}
