/**
 * The task data of the transfer commands, from one plain-text file: windows of its tokens (the discriminator's real
 * rows, the organ's training batches), the seed examples Trans-LoRA keeps (the first characters of the first
 * paragraphs), and the discriminator's question tokens looked up in the tokenizer. What `lorakit transfer` reads;
 * the report script uses the Brown corpus helpers instead. Not here: the methods (trans-lora.ts, organ.ts).
 */
import { LorakitError } from '../../errors.ts';
import type { HfTokenizer } from '../../io/index.ts';
import { Rng } from '../../linalg/index.ts';
import type { DiscriminatorTokens } from './discriminator.ts';

/** `count` windows of `length` token ids from `ids`, at seeded uniform offsets. */
export function tokenWindows(ids: ArrayLike<number>, length: number, count: number, seed: number): number[][] {
  if (ids.length < length + 1)
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `tokenWindows: the text has ${ids.length} tokens, fewer than one window of ${length} + 1`,
    );
  const rng = new Rng(seed);
  return Array.from({ length: count }, () => {
    const start = Math.floor(rng.next() * (ids.length - length));
    return Array.from({ length }, (_, t) => ids[start + t]);
  });
}

/** Batch `i` of `B` next-token windows of `T` tokens (inputs and labels, i64 row-major), deterministic in (seed, i). */
export function windowBatch(
  ids: ArrayLike<number>,
  B: number,
  T: number,
  seed: number,
  i: number,
): { input_ids: BigInt64Array; labels: BigInt64Array } {
  const rows = tokenWindows(ids, T + 1, B, seed * 7919 + i);
  const input = new BigInt64Array(B * T),
    labels = new BigInt64Array(B * T);
  rows.forEach((r, b) => {
    for (let t = 0; t < T; t++) {
      input[b * T + t] = BigInt(r[t]);
      labels[b * T + t] = BigInt(r[t + 1]);
    }
  });
  return { input_ids: input, labels };
}

/** The first `chars` characters of the first `n` non-empty paragraphs (blank-line separated) of `text`. */
export function seedExamples(text: string, n: number, chars: number): string[] {
  const paras = text
    .split(/\n\s*\n/)
    .map((p) => p.trim())
    .filter((p) => p.length > 0);
  if (paras.length === 0) throw new LorakitError('LK_INVALID_ARGUMENT', 'seedExamples: the text has no paragraphs');
  return paras.slice(0, n).map((p) => p.slice(0, chars));
}

/** The question tokens as single tokens of `tokenizer` (default '|', 'Y', 'N'). */
export function questionTokens(tokenizer: HfTokenizer, chars = { separator: '|', real: 'Y', synthetic: 'N' }) {
  const one = (what: string, s: string): number => {
    const ids = tokenizer.encode(s, { addSpecialTokens: false });
    if (ids.length !== 1)
      throw new LorakitError(
        'LK_INVALID_ARGUMENT',
        `questionTokens: the ${what} "${s}" is ${ids.length} tokens in this tokenizer, expected exactly 1`,
      );
    return ids[0];
  };
  const t: DiscriminatorTokens = {
    separator: one('separator', chars.separator),
    real: one('real answer', chars.real),
    synthetic: one('synthetic answer', chars.synthetic),
  };
  return t;
}
