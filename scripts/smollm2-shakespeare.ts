/**
 * Tiny Shakespeare for the SmolLM2 transfer scripts (smollm2-transfer.ts, smollm2-transfer-filter.ts): the first
 * 90 % of the characters train (cut at a speech boundary), the last 10 % are held out, and the held-out LM batches;
 * the step cache both scripts keep their results in, and their NOT organ training.
 */
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { type LmBatch, evalBatches } from '../src/demo/data.ts';
import type { HfTokenizer } from '../src/io/index.ts';
import type { LoadedModel } from '../src/models/index.ts';
import { transfer } from '../src/train/index.ts';
import { SHARED_DATA } from './smollm2-pool-tasks.ts';

/** Rows per batch and tokens per row of the SmolLM2 transfer runs. */
export const B = 4,
  SEQ = 128;

export interface Shakespeare {
  text: string;
  /** The character where the held-out part starts. */
  cut: number;
  trainIds: number[];
  heldIds: number[];
  /** At most `windows` held-out windows of SEQ tokens in batches of B, every next token counted. */
  held: LmBatch[];
}

export async function shakespeare(tokenizer: HfTokenizer, windows: number): Promise<Shakespeare> {
  const text = await readFile(join(SHARED_DATA, 'tinyshakespeare', 'input.txt'), 'utf8');
  const cut = text.lastIndexOf('\n\n', Math.floor(text.length * 0.9)) + 2; // split at a speech boundary
  const trainIds = tokenizer.encode(text.slice(0, cut), { addSpecialTokens: false });
  const heldIds = tokenizer.encode(text.slice(cut), { addSpecialTokens: false });
  // Infinity: no id is a byte-tokenizer special
  const held = evalBatches(Uint16Array.from(heldIds), SEQ, B, windows, Number.POSITIVE_INFINITY);
  return { text, cut, trainIds, heldIds, held };
}

/** Results of a run by step name, read from `file` when a previous run left it. */
export type Results = Record<string, unknown>;

/**
 * The scripts' step cache in `file` (JSON): `cached(key, run)` gives a saved step's value or runs it and saves the
 * result, so a rerun skips finished steps; `log` prints a line with the seconds since the cache was opened.
 */
export function stepCache(file: string) {
  const results: Results = existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')) : {};
  const t0 = performance.now();
  const log = (s: string) => console.log(`[${((performance.now() - t0) / 1000).toFixed(0).padStart(5)} s] ${s}`);
  async function cached<T>(key: string, run: () => Promise<T>): Promise<T> {
    if (key in results) return results[key] as T;
    const v = await run();
    results[key] = v;
    await mkdir(dirname(file), { recursive: true });
    await writeFile(file, JSON.stringify(results, null, 1));
    return v;
  }
  /** Saves the results with the run's flags, and prints and writes the run's table (table.md beside `file`). */
  async function finish(flags: Results, md: string): Promise<void> {
    results.flags = flags;
    await writeFile(file, JSON.stringify(results, null, 1));
    console.log(`\n${md}\n`);
    const out = join(dirname(file), 'table.md');
    await writeFile(out, `${md}\n`);
    log(`done; ${out}`);
  }
  return { results, cached, log, finish };
}

/** transfer.trainOrgan on windows of the training ids (B × SEQ), with the loss of its first and last step. */
export async function trainOrganOn(
  base: LoadedModel,
  organ: transfer.Organ,
  trainIds: number[],
  o: { steps: number; lr: number; seed: number },
): Promise<{ trained: transfer.Organ; first: number; last: number }> {
  let first = Number.NaN;
  let last = Number.NaN;
  const trained = await transfer.trainOrgan({
    base,
    organ,
    batch: (i) => transfer.windowBatch(trainIds, B, SEQ, o.seed, i),
    batchSize: B,
    seqLen: SEQ,
    steps: o.steps,
    lr: o.lr,
    onStep: (s, l) => {
      if (s === 1) first = l;
      last = l;
    },
  });
  return { trained, first, last };
}
