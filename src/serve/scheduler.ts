/**
 * Admission for continuous (iteration-level) batching, by S-LoRA's rule (S-LoRA `router/req_queue.py`, after
 * LightLLM): a waiting request joins the running batch only if the KV cache can hold the worst case of every running
 * and admitted row at every future moment. Rows grow by one token per step until they finish; the worst case is
 * that every row runs to its token limit, so with rows sorted by tokens still to come (left_j, largest first) the
 * cache is fullest just before row j finishes: Σ_{i≤j} held_i + j·left_j (1-based j; rows after j are gone). The
 * peak over j must stay within the pool's tokens minus what the batch's adapters take in the same unit (S-LoRA's
 * unified accounting: an adapter counts its floats divided by one token's KV floats). Admission is strict FCFS: the
 * first request that does not fit waits, and so does everyone behind it (no starvation of long requests).
 * Not here: the slots themselves (kv-pool.ts, slots.ts), running steps (engine.ts).
 */

/** One row's cache: tokens it holds now and tokens it may still add. */
export interface CacheDemand {
  held: number;
  left: number;
}

/** The most KV tokens the rows can hold at once if each runs to its limit (S-LoRA's need_max_token_num). */
export function worstCaseTokens(rows: readonly CacheDemand[]): number {
  const sorted = [...rows].sort((x, y) => y.left - x.left);
  let held = 0,
    peak = 0;
  sorted.forEach((r, j) => {
    held += r.held;
    peak = Math.max(peak, held + (j + 1) * r.left);
  });
  return peak;
}

/** What the scheduler needs to know of a waiting request. */
export interface Schedulable {
  /** Completions asked (each is one row after the prefill). */
  n: number;
  promptTokens: number;
  /** New tokens per completion at most. */
  maxTokens: number;
  /** The adapter instance it runs with (null: the base model) and its size in KV-token units. */
  adapterKey: string | null;
  adapterTokens: number;
}

/** Bounds of one admission round. */
export interface AdmissionLimits {
  /** Tokens the KV pool holds. */
  kvTokens: number;
  /** Rows (completions) running at once at most (S-LoRA's running_max_req_size). */
  maxRows: number;
  /** Padded prompt tokens one prefill may take (S-LoRA's batch_max_tokens). */
  maxPrefillTokens: number;
}

/** The running batch as admission sees it. */
export interface RunningState {
  rows: readonly CacheDemand[];
  /** The distinct adapters of the running rows, with their size in KV-token units. */
  adapters: ReadonlyMap<string, number>;
}

/** The rows a request adds once prefilled: its prompt cached and one token sampled, per completion. */
export const demandsOf = (r: Schedulable): CacheDemand[] =>
  Array.from({ length: r.n }, () => ({ held: r.promptTokens, left: r.maxTokens - 1 }));

/** The waiting queue and its admission rule. */
export class Scheduler<R extends Schedulable> {
  private readonly queue: R[] = [];

  constructor(readonly limits: AdmissionLimits) {}

  /** Requests waiting, oldest first. */
  get waiting(): readonly R[] {
    return this.queue;
  }

  push(r: R): void {
    this.queue.push(r);
  }

  /** Takes `r` out of the queue (cancelled); false when it is not waiting. */
  remove(r: R): boolean {
    const i = this.queue.indexOf(r);
    if (i < 0) return false;
    this.queue.splice(i, 1);
    return true;
  }

  /**
   * Takes requests from the head of the queue while they fit: rows and prefill tokens within bounds, the worst-case
   * KV demand within the pool minus the batch's adapters, and an adapter slot (`takeSlot` reserves it; it returns
   * false when every slot is busy). Returns the admitted requests, in order.
   */
  admit(running: RunningState, takeSlot: (r: R) => boolean): R[] {
    const { kvTokens, maxRows, maxPrefillTokens } = this.limits;
    const rows = [...running.rows];
    const adapters = new Map(running.adapters);
    const admitted: R[] = [];
    let longest = 0;
    while (this.queue.length > 0) {
      const r = this.queue[0];
      const nextLongest = Math.max(longest, r.promptTokens);
      if (rows.length + r.n > maxRows) break;
      if (admitted.length > 0 && (admitted.length + 1) * nextLongest > maxPrefillTokens) break;
      const withR = new Map(adapters);
      if (r.adapterKey !== null) withR.set(r.adapterKey, r.adapterTokens);
      const adapterTokens = [...withR.values()].reduce((a, b) => a + b, 0);
      const newRows = [...rows, ...demandsOf(r)];
      if (worstCaseTokens(newRows) > kvTokens - adapterTokens) break;
      if (!takeSlot(r)) break;
      this.queue.shift();
      admitted.push(r);
      rows.push(...demandsOf(r));
      for (const [k, v] of withR) adapters.set(k, v);
      longest = nextLongest;
    }
    return admitted;
  }
}
