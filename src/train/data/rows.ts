/**
 * Examples to fixed-length rows of seqLen (T) tokens, the unit a batch is made of. Two ways:
 *
 * - padding: one example per row, cut to T tokens when longer (counted, so the caller can warn) and padded on the
 *   right with the pad id (tokenizer pad, else EOS, else 0), label -100 and attention 0.
 * - packing: the examples are concatenated in order, each followed by an EOS separator when it does not already
 *   end with one (the separator has label -100: it was not part of the example), and the stream is cut into rows
 *   of exactly T tokens; only the last row is padded. An example may continue into the next row. Attention inside
 *   a row is not blocked between examples (the graph takes a [B, T] mask), so a token can attend to the previous
 *   example in its row; that is what packing implies. Loss never crosses a boundary: the first token of each
 *   example has label -100 (see encode.ts), so no example's token is predicted from another example.
 *
 * In both, the first position of every row has label -100 (under the shift it is never a target, so counting
 * labels != -100 counts loss terms exactly), and a row left without any loss token is dropped (counted).
 * Not here: tokenisation (`encode.ts`), shuffling and batches (`dataset.ts`).
 */
import { IGNORE_INDEX, type ExampleSet } from './encode.ts';

/** Rows of T tokens: row r is `ids[r*T .. (r+1)*T)`; `lengths[r]` real tokens come first, padding after. */
export interface RowSet {
  seqLen: number;
  ids: Int32Array;
  labels: Int32Array;
  lengths: Uint32Array;
}

/** Options of `buildRows`. */
export interface RowOptions {
  seqLen: number;
  packing: boolean;
  padId: number;
  /** The EOS id that separates packed examples; none when the tokenizer has no EOS. */
  eosId?: number;
}

/** What row building did, for the caller's stats and warnings. */
export interface RowStats {
  /** Examples longer than seqLen that were cut (padding mode only; packing never cuts). */
  truncated: number;
  /** Length of the longest example, in tokens. */
  longest: number;
  /** Rows dropped because no token in them carried loss (e.g. a prompt longer than seqLen). */
  droppedNoLoss: number;
}

/** Appends rows to growing arrays; a row is written through `row()` and kept or discarded by `commit()`. */
class RowWriter {
  private ids: Int32Array;
  private labels: Int32Array;
  private lengths: number[] = [];
  dropped = 0;

  constructor(
    private readonly T: number,
    private readonly padId: number,
    capacity: number,
  ) {
    this.ids = new Int32Array(Math.max(1, capacity) * T);
    this.labels = new Int32Array(Math.max(1, capacity) * T);
  }

  /** Writes `ids`/`labels` (at most T each) as the next row, padded; drops it when it has no loss token. */
  push(ids: Int32Array, labels: Int32Array): void {
    const T = this.T,
      r = this.lengths.length;
    if (ids.length === 0) return;
    let loss = false;
    for (let i = 1; i < labels.length; i++)
      if (labels[i] !== IGNORE_INDEX) {
        loss = true;
        break;
      }
    if (!loss) {
      this.dropped++;
      return;
    }
    if ((r + 1) * T > this.ids.length) {
      const grow = (a: Int32Array) => {
        const b = new Int32Array(a.length * 2);
        b.set(a);
        return b;
      };
      this.ids = grow(this.ids);
      this.labels = grow(this.labels);
    }
    this.ids.set(ids, r * T);
    this.labels.set(labels, r * T);
    this.labels[r * T] = IGNORE_INDEX;
    this.ids.fill(this.padId, r * T + ids.length, (r + 1) * T);
    this.labels.fill(IGNORE_INDEX, r * T + labels.length, (r + 1) * T);
    this.lengths.push(ids.length);
  }

  build(): RowSet {
    const n = this.lengths.length;
    return {
      seqLen: this.T,
      ids: this.ids.slice(0, n * this.T),
      labels: this.labels.slice(0, n * this.T),
      lengths: Uint32Array.from(this.lengths),
    };
  }
}

/** Builds the rows of the examples `which` (indices into `examples`, in the order given). */
export function buildRows(
  examples: ExampleSet,
  which: readonly number[],
  { seqLen: T, packing, padId, eosId }: RowOptions,
): { rows: RowSet; stats: RowStats } {
  const { offsets } = examples;
  let truncated = 0,
    longest = 0,
    total = 0;
  for (const k of which) {
    const n = offsets[k + 1]! - offsets[k]!;
    longest = Math.max(longest, n);
    total += n + 1;
  }
  const writer = new RowWriter(T, padId, packing ? Math.ceil(total / T) : which.length);
  if (!packing) {
    for (const k of which) {
      const start = offsets[k]!,
        end = offsets[k + 1]!;
      if (end - start > T) truncated++;
      const stop = Math.min(end, start + T);
      writer.push(examples.ids.subarray(start, stop), examples.labels.subarray(start, stop));
    }
    return { rows: writer.build(), stats: { truncated, longest, droppedNoLoss: writer.dropped } };
  }
  // Packing: fill one row buffer from the example stream; flush it whenever it holds T tokens.
  const rowIds = new Int32Array(T),
    rowLabels = new Int32Array(T);
  let fill = 0;
  const put = (id: number, label: number) => {
    rowIds[fill] = id;
    rowLabels[fill] = label;
    if (++fill === T) {
      writer.push(rowIds, rowLabels);
      fill = 0;
    }
  };
  for (const k of which) {
    const start = offsets[k]!,
      end = offsets[k + 1]!;
    for (let i = start; i < end; i++) put(examples.ids[i]!, examples.labels[i]!);
    if (eosId !== undefined && end > start && examples.ids[end - 1] !== eosId) put(eosId, IGNORE_INDEX);
  }
  if (fill > 0) writer.push(rowIds.subarray(0, fill), rowLabels.subarray(0, fill));
  return { rows: writer.build(), stats: { truncated, longest, droppedNoLoss: writer.dropped } };
}

/** Number of rows in a set. */
export function rowCount(rows: RowSet): number {
  return rows.lengths.length;
}
