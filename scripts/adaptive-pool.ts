/**
 * The recycled-LoRA pool of the adaptive-merging study (docs/composition.md, "Adaptive merging") on the demo base:
 * one LoRA per Brown genre, trained by runDemo on that genre's train files with its own seed (independent users),
 * written to <out>/<genre>/final. Genres that already have a folder are skipped, so an interrupted run resumes.
 * The target genre's own LoRA is trained the same way (the "target LoRA in the pool" condition).
 *
 *   node --import tsx scripts/adaptive-pool.ts [--steps 30] [--batch 4] [--rank 8] [--out runs/adaptive/pool]
 *
 * Not here: the merging methods and their table (scripts/adaptive-merge.ts).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { readBrown, sideOf, splitBrown, type BrownSplit } from '../src/demo/brown.ts';
import { runDemo } from '../src/demo/run.ts';
import { shutdownRuntime } from '../src/runtime/index.ts';

/** The pool's genres (fiction and non-fiction) and the held-out target genre, last. */
export const POOL_GENRES = [
  'adventure',
  'mystery',
  'romance',
  'science_fiction',
  'fiction',
  'news',
  'religion',
  'hobbies',
  'government',
] as const;
export const TARGET_GENRE = 'humor';

/** One genre's train / held-out split (splitBrown's whole-file split of its side, restricted to the genre). */
export function genreSplit(genre: string): BrownSplit {
  const side = sideOf(genre);
  const all = splitBrown(readBrown({ side }), side);
  return {
    side,
    train: all.train.filter((f) => f.genre === genre),
    heldOut: all.heldOut.filter((f) => f.genre === genre),
  };
}

async function main() {
  const { values: flags } = parseArgs({
    options: {
      steps: { type: 'string', default: '30' },
      batch: { type: 'string', default: '4' },
      rank: { type: 'string', default: '8' },
      out: { type: 'string', default: 'runs/adaptive/pool' },
    },
  });
  const rank = Number(flags.rank);
  for (const [i, g] of [...POOL_GENRES, TARGET_GENRE].entries()) {
    const runDir = join(flags.out!, g);
    if (existsSync(join(runDir, 'final', 'adapter_model.safetensors'))) continue;
    const r = await runDemo({
      split: genreSplit(g),
      steps: Number(flags.steps),
      batch: Number(flags.batch),
      rank,
      alpha: 2 * rank,
      seed: i,
      evalWindows: 8,
      outDir: runDir,
      sampleBytes: 1,
    });
    console.error(
      `${g}: held-out ${r.heldOutBefore.toFixed(4)} -> ${r.heldOutAfter.toFixed(4)} (${r.seconds.toFixed(0)} s)`,
    );
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  try {
    await main();
  } finally {
    await shutdownRuntime();
  }
}
