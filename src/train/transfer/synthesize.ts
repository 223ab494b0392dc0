/**
 * Trans-LoRA's synthetic task inputs: a base model continues prompts made from a handful of seed examples (the
 * paper keeps 5, with the client's permission), and, in the transfer phase, a discriminator filters the candidates:
 * rows it classifies as real are kept, in the order they were generated, until the intended number is reached.
 * Generation is seeded (row b of round k draws from stream b of seed + k), and end-of-sequence is disabled so every
 * row has exactly `newTokens` tokens. Not here: the discriminator (discriminator.ts), the distillation (trans-lora.ts).
 */
import { LorakitError } from '../../errors.ts';
import type { HfTokenizer } from '../../io/index.ts';
import { generate, type LoadedModel } from '../../models/index.ts';
import type { CompileOptions } from '../../runtime/index.ts';

/** Options of `synthesize`. */
export interface SynthesizeOptions {
  /** Seed examples; prompt i is seed i mod seeds.length. */
  seeds: readonly string[];
  /** Rows to generate and new tokens per row. */
  count: number;
  newTokens: number;
  /** Sampling seed, temperature (default 1) and top-k (default 0: all tokens). */
  seed: number;
  temperature?: number;
  topK?: number;
  /** Prompts per generate() call (default 16). */
  batch?: number;
  compile?: CompileOptions;
}

/** `count` sampled continuations of the seed prompts, `newTokens` token ids each. */
export async function synthesize(
  model: LoadedModel,
  tokenizer: HfTokenizer,
  o: SynthesizeOptions,
): Promise<number[][]> {
  if (o.seeds.length === 0) throw new LorakitError('LK_INVALID_ARGUMENT', 'synthesize: no seed examples');
  const B = o.batch ?? 16;
  const rows: number[][] = [];
  for (let start = 0, call = 0; start < o.count; start += B, call++) {
    const n = Math.min(B, o.count - start);
    const prompts = Array.from({ length: n }, (_, b) => o.seeds[(start + b) % o.seeds.length]);
    const r = await generate(model, tokenizer, {
      prompts,
      maxNewTokens: o.newTokens,
      temperature: o.temperature ?? 1,
      topK: o.topK ?? 0,
      seed: o.seed * 1009 + call,
      eosTokenId: null,
      compile: o.compile,
    });
    for (const row of r.rows) rows.push(row.tokenIds.slice(0, o.newTokens));
  }
  return rows;
}

/** What the filter kept. */
export interface Filtered {
  rows: number[][];
  /** Scores of the kept rows. */
  scores: number[];
  /** Candidates scored, and how many of them the discriminator classified as real. */
  candidates: number;
  passed: number;
  /** Kept rows that did not pass (the best-scoring rejected ones, when too few passed within the rounds). */
  filled: number;
}

/** "passed/candidates passed (filled filled)", or "unfiltered" for a run without the filter (null). */
export function describeFilter(f: Omit<Filtered, 'rows'> | null): string {
  return f ? `${f.passed}/${f.candidates} passed (${f.filled} filled)` : 'unfiltered';
}

/**
 * Keeps the candidates with score > 0 in order until `keep` are kept; when fewer pass, fills up with the
 * highest-scoring rejected candidates (and says how many in `filled`), so the student always sees `keep` rows.
 */
export function filterByScore(candidates: number[][], scores: ArrayLike<number>, keep: number): Filtered {
  if (scores.length !== candidates.length)
    throw new LorakitError(
      'LK_SHAPE_MISMATCH',
      `filterByScore: ${candidates.length} candidates but ${scores.length} scores`,
    );
  const kept: number[] = [];
  let passed = 0;
  for (let i = 0; i < candidates.length; i++) {
    if (!(scores[i] > 0)) continue;
    passed++;
    if (kept.length < keep) kept.push(i);
  }
  const rejected = candidates
    .map((_, i) => i)
    .filter((i) => !(scores[i] > 0))
    .sort((a, b) => scores[b] - scores[a] || a - b);
  const filled = Math.max(0, Math.min(keep - kept.length, rejected.length));
  const all = [...kept, ...rejected.slice(0, filled)];
  return {
    rows: all.map((i) => candidates[i]),
    scores: all.map((i) => scores[i]),
    candidates: candidates.length,
    passed,
    filled,
  };
}
