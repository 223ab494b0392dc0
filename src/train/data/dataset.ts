/**
 * A tokenised dataset of fixed-length rows and its batch iterator. Batches have a fixed shape [B, T] and hold
 * int64 arrays ready to feed an ONNX graph's input_ids / labels / attention_mask. Order is deterministic: epoch e
 * visits the rows in a seeded Fisher–Yates permutation drawn from seed + e, so a run resumed from a saved
 * `{epoch, index}` yields exactly the batches an uninterrupted run would have. Not here: reading files, tokenising,
 * packing (`index.ts`, `encode.ts`, `rows.ts`).
 */
import { LorakitError } from '../../errors.ts';
import { mulberry32 } from '../../linalg/index.ts';
import { IGNORE_INDEX } from './encode.ts';
import { rowCount, type RowSet } from './rows.ts';

/** Where a batch iterator stands: `index` is the batch number inside epoch `epoch` (both from 0). */
export interface DataPosition {
  epoch: number;
  index: number;
}

/** One batch; every array is [B, T] flattened row-major (B = batchSize, T = seqLen). */
export interface Batch {
  inputIds: BigInt64Array;
  /** Aligned with inputIds (the model's loss shifts them); -100 where no loss is taken. */
  labels: BigInt64Array;
  /** 1 on real tokens, 0 on padding (padding is always on the right). */
  attentionMask: BigInt64Array;
  /** [B, T]. */
  shape: [number, number];
  /** This batch's own position. */
  position: DataPosition;
  /** The position to resume from after this batch (what a checkpoint stores). */
  next: DataPosition;
  /** Real (non-padding) tokens in the batch. */
  tokens: number;
  /** Tokens with a label other than -100: the number of terms in the loss. */
  lossTokens: number;
  /** Rows of the batch that are filler (only in the last batch of an epoch when dropLast is false). */
  fillerRows: number;
}

/** Options of `TokenDataset.batches`. */
export interface BatchOptions {
  batchSize: number;
  /** Seed of the shuffle; epoch e uses seed + e (default 0). */
  seed?: number;
  /** Visit rows in a seeded random order per epoch (default true; false visits them in order, for evaluation). */
  shuffle?: boolean;
  /** Resume here: the `next` of the last batch consumed (default {epoch: 0, index: 0}). */
  start?: DataPosition;
  /** Stop before this epoch (default Infinity: a trainer stops by step count). */
  epochs?: number;
  /**
   * Drop an epoch's last, incomplete batch (default true). When false it is filled up with filler rows (pad ids,
   * labels -100, attention on the first token only so no attention row is fully masked) to keep the shape fixed.
   */
  dropLast?: boolean;
}

/** A 32-bit seed → generator of uniform floats in [0, 1) (mulberry32; the seed is mixed first, so seed and seed+1
 * differ). */
export function seededRandom(seed: number): () => number {
  return mulberry32(Math.imul((seed >>> 0) ^ 0x9e3779b9, 0x85ebca6b));
}

/** A permutation of 0..n-1 by Fisher–Yates with `seededRandom(seed)`. */
export function permutation(n: number, seed: number): Uint32Array {
  const p = new Uint32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  const random = seededRandom(seed);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    const t = p[i]!;
    p[i] = p[j]!;
    p[j] = t;
  }
  return p;
}

function checkInteger(v: unknown, name: string, min: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `batches: ${name} must be an integer >= ${min}, got ${typeof v === 'number' ? v : JSON.stringify(v)}`,
    );
  }
  return v;
}

/** Fixed-length token rows (T = seqLen) and the batches made of them. */
export class TokenDataset {
  /** Tokens per row (T). */
  readonly seqLen: number;
  /** Number of rows. */
  readonly size: number;
  /** Real tokens over all rows. */
  readonly tokens: number;
  /** Tokens with loss over all rows. */
  readonly lossTokens: number;
  private readonly rows: RowSet;
  private readonly padId: number;

  constructor(rows: RowSet, padId: number) {
    this.rows = rows;
    this.seqLen = rows.seqLen;
    this.size = rowCount(rows);
    this.padId = padId;
    let tokens = 0,
      loss = 0;
    for (const n of rows.lengths) tokens += n;
    for (const l of rows.labels) if (l !== IGNORE_INDEX) loss++;
    this.tokens = tokens;
    this.lossTokens = loss;
  }

  /** Batches per epoch for `batchSize` (an incomplete last batch counts only when dropLast is false). */
  batchesPerEpoch(batchSize: number, dropLast = true): number {
    checkInteger(batchSize, 'batchSize', 1);
    return dropLast ? Math.floor(this.size / batchSize) : Math.ceil(this.size / batchSize);
  }

  /** Row r as plain arrays (its real tokens only), for inspection and tests. */
  row(r: number): { inputIds: number[]; labels: number[] } {
    checkInteger(r, 'row', 0);
    if (r >= this.size)
      throw new LorakitError(
        'LK_INVALID_ARGUMENT',
        `row: index ${r} is out of range, the dataset has ${this.size} rows`,
      );
    const T = this.seqLen,
      n = this.rows.lengths[r]!;
    return {
      inputIds: Array.from(this.rows.ids.subarray(r * T, r * T + n)),
      labels: Array.from(this.rows.labels.subarray(r * T, r * T + n)),
    };
  }

  /** The batches from `start` on, epoch after epoch, in the order fixed by `seed` (see the file header). */
  *batches(options: BatchOptions): Generator<Batch> {
    const { seed = 0, shuffle = true, start = { epoch: 0, index: 0 }, epochs = Infinity, dropLast = true } = options;
    const B = checkInteger(options.batchSize, 'batchSize', 1);
    checkInteger(seed, 'seed', -(2 ** 31));
    checkInteger(start?.epoch, 'start.epoch', 0);
    checkInteger(start?.index, 'start.index', 0);
    const perEpoch = this.batchesPerEpoch(B, dropLast);
    if (perEpoch === 0) {
      throw new LorakitError(
        'LK_INVALID_ARGUMENT',
        `batches: batchSize ${B} is larger than the dataset (${this.size} rows of ${this.seqLen} tokens) and ` +
          `dropLast is true, so there is no batch; use a smaller batchSize or more data`,
      );
    }
    if (start.index > perEpoch) {
      throw new LorakitError(
        'LK_INVALID_ARGUMENT',
        `batches: start.index ${start.index} is past the end of an epoch (${perEpoch} batches of ${B}); was the ` +
          `position saved with another batchSize or dataset?`,
      );
    }
    let { epoch, index } = start;
    for (; epoch < epochs; epoch++, index = 0) {
      const order = shuffle ? permutation(this.size, seed + epoch) : undefined;
      for (; index < perEpoch; index++) {
        const next = index + 1 < perEpoch ? { epoch, index: index + 1 } : { epoch: epoch + 1, index: 0 };
        yield this.batchAt(order, index * B, B, { epoch, index }, next);
      }
    }
  }

  /** The batch of rows order[first .. first+B) (filler rows past the end). */
  private batchAt(
    order: Uint32Array | undefined,
    first: number,
    B: number,
    position: DataPosition,
    next: DataPosition,
  ): Batch {
    const T = this.seqLen;
    const inputIds = new BigInt64Array(B * T),
      labels = new BigInt64Array(B * T),
      attentionMask = new BigInt64Array(B * T);
    let tokens = 0,
      lossTokens = 0,
      fillerRows = 0;
    for (let b = 0; b < B; b++) {
      const o = b * T;
      if (first + b >= this.size) {
        fillerRows++;
        inputIds.fill(BigInt(this.padId), o, o + T);
        labels.fill(BigInt(IGNORE_INDEX), o, o + T);
        attentionMask[o] = 1n;
        continue;
      }
      const r = order ? order[first + b]! : first + b;
      const n = this.rows.lengths[r]!;
      for (let t = 0; t < T; t++) {
        const label = this.rows.labels[r * T + t]!;
        inputIds[o + t] = BigInt(this.rows.ids[r * T + t]!);
        labels[o + t] = BigInt(label);
        if (label !== IGNORE_INDEX) lossTokens++;
      }
      attentionMask.fill(1n, o, o + n);
      tokens += n;
    }
    return { inputIds, labels, attentionMask, shape: [B, T], position, next, tokens, lossTokens, fillerRows };
  }
}
