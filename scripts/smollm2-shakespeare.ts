/**
 * Tiny Shakespeare for the SmolLM2 transfer scripts (smollm2-transfer.ts, smollm2-transfer-filter.ts): the first
 * 90 % of the characters train (cut at a speech boundary), the last 10 % are held out, and the held-out LM batches.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type LmBatch, evalBatches } from '../src/demo/data.ts';
import type { HfTokenizer } from '../src/io/index.ts';
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
