/**
 * Batches for byte-level language modelling on the Brown corpus: files become one token stream (`<s>` bytes `</s>`
 * per file), training draws windows of T + 1 tokens at seeded random offsets (batch i is a function of the seed and
 * i, so a resumed run sees the same batches), and evaluation reads fixed, non-overlapping windows whose
 * special-token targets are ignored, so its loss is nats per byte of text. Tokenised datasets (chat rows with their
 * assistant-only labels) enter the same loops through `DatasetRows` and `datasetBatches`, which shift their aligned
 * labels to next-token targets.
 * Not here: reading the corpus (brown.ts), the graphs (lm.ts).
 */
import { LorakitError } from '../errors.ts';
import { IGNORE_INDEX } from '../train/data/encode.ts';
import type { Batch, TokenDataset } from '../train/data/dataset.ts';
import { Rng, seedFrom } from '../linalg/index.ts';
import type { BrownFile } from './brown.ts';
import { BOS_ID, encodeDocument } from './bytes.ts';

/** Label value that the loss skips (PyTorch's ignore_index). */
export const IGNORE = IGNORE_INDEX;

/** One batch: input ids and next-token labels, both [B·T] row-major int64. */
export interface LmBatch {
  inputIds: BigInt64Array;
  labels: BigInt64Array;
}

/** Where a loop's training rows come from: batch `index` is B rows of T tokens with next-token labels. */
export interface RowSource {
  readonly T: number;
  batch(index: number, B: number): LmBatch;
}

/** A dataset batch (labels aligned with the inputs, as transformers has them) with next-token labels instead. */
export function nextTargets(b: Batch): LmBatch {
  const [B, T] = b.shape;
  const labels = new BigInt64Array(B * T).fill(BigInt(IGNORE));
  for (let r = 0; r < B; r++) labels.set(b.labels.subarray(r * T + 1, (r + 1) * T), r * T);
  // no attention mask is needed: padding is on the right, so under causal attention no counted target sees it
  return { inputIds: b.inputIds, labels };
}

/**
 * A tokenised dataset's rows as a row source: batch `index` holds the rows of `data.batches({batchSize: B, seed})` at
 * that position (epoch after epoch, each in its seeded order), so it is a function of the seed and the index.
 */
export class DatasetRows implements RowSource {
  readonly T: number;
  constructor(
    readonly data: TokenDataset,
    readonly seed: number,
  ) {
    this.T = data.seqLen;
  }

  batch(index: number, B: number): LmBatch {
    const per = this.data.batchesPerEpoch(B);
    if (per < 1)
      throw new LorakitError(
        'LK_INVALID_ARGUMENT',
        `DatasetRows: the dataset has ${this.data.size} rows, fewer than one batch of ${B}`,
      );
    const start = { epoch: Math.floor(index / per), index: index % per };
    return nextTargets(this.data.batches({ batchSize: B, seed: this.seed, start }).next().value as Batch);
  }
}

/** Every row of a dataset once, in order, in batches of B (the last one filled with ignored rows): for evaluation. */
export function datasetBatches(data: TokenDataset, B: number): LmBatch[] {
  return [...data.batches({ batchSize: B, shuffle: false, epochs: 1, dropLast: false })].map(nextTargets);
}

/** The files' token streams joined: `<s>` text `</s>` for each file, in order. */
export function tokenStream(files: readonly BrownFile[]): Uint16Array {
  const parts = files.map((f) => encodeDocument(f.text));
  const out = new Uint16Array(parts.reduce((s, p) => s + p.length, 0));
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

/** Copies window `stream[start .. start + T]` into row `row` of a batch (inputs are the first T, labels the last T). */
function fillRow(
  batch: LmBatch,
  stream: Uint16Array,
  start: number,
  row: number,
  T: number,
  firstSpecial: number,
): void {
  for (let t = 0; t < T; t++) {
    batch.inputIds[row * T + t] = BigInt(stream[start + t]);
    const y = stream[start + t + 1];
    batch.labels[row * T + t] = BigInt(y >= firstSpecial ? IGNORE : y);
  }
}

/** Random training windows of a stream: batch i depends only on (seed, i), so a run resumes at any step. */
export class WindowSampler implements RowSource {
  constructor(
    readonly stream: Uint16Array,
    readonly T: number,
    readonly seed: number,
  ) {
    if (stream.length < T + 2) {
      throw new LorakitError(
        'LK_INVALID_ARGUMENT',
        `WindowSampler: the text has ${stream.length} tokens, fewer than one window of ${T + 1}`,
      );
    }
  }

  /** Batch `index` (0-based): B windows at uniform random offsets. */
  batch(index: number, B: number): LmBatch {
    const T = this.T;
    const rng = new Rng(seedFrom(this.seed, `batch ${index}`));
    const batch: LmBatch = { inputIds: new BigInt64Array(B * T), labels: new BigInt64Array(B * T) };
    const span = this.stream.length - T - 1;
    for (let b = 0; b < B; b++) fillRow(batch, this.stream, Math.floor(rng.next() * span), b, T, Infinity);
    return batch;
  }
}

/**
 * Fixed evaluation batches: the stream cut into non-overlapping windows of T + 1 tokens (consecutive windows share
 * their boundary token, so every byte but the first is a target once), `maxWindows` of them evenly spaced when
 * given, grouped into batches of B (the last one padded with ignored rows). Targets at or above `firstSpecial` are
 * ignored: by default the byte tokenizer's special tokens (BOS_ID and up); a stream of a model's own tokenizer, whose
 * ids are all text, passes Infinity.
 */
export function evalBatches(
  stream: Uint16Array,
  T: number,
  B: number,
  maxWindows = Infinity,
  firstSpecial = BOS_ID,
): LmBatch[] {
  const total = Math.floor((stream.length - 1) / T);
  if (total < 1)
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `evalBatches: the text has ${stream.length} tokens, fewer than one window of ${T + 1}`,
    );
  const n = Math.min(total, maxWindows);
  const starts = Array.from({ length: n }, (_, i) => Math.floor((i * total) / n) * T);
  const batches: LmBatch[] = [];
  for (let i = 0; i < n; i += B) {
    const batch: LmBatch = {
      inputIds: new BigInt64Array(B * T),
      labels: new BigInt64Array(B * T).fill(BigInt(IGNORE)),
    };
    for (let b = 0; b < B && i + b < n; b++) fillRow(batch, stream, starts[i + b], b, T, firstSpecial);
    batches.push(batch);
  }
  return batches;
}

/** Number of counted targets (labels that are not IGNORE) in batches. */
export function targetCount(batches: readonly LmBatch[]): number {
  let n = 0;
  for (const b of batches) for (const y of b.labels) if (y !== BigInt(IGNORE)) n++;
  return n;
}
