/**
 * The composition pool on the demo base: one LoRA adapter per Brown fiction genre (runDemo on that genre's train
 * files, held-out files of the genre kept apart), then merged adapters of the whole pool (PEFT's combination types
 * and LoRA-LEGO, through compose.mergeAdapterFolders), and one table: the held-out loss (nats/byte) of the base, of
 * every genre adapter and of every merge on every genre's held-out windows. Writes runs/compose-pool/ (adapters,
 * merges, results.json) and prints the table as Markdown (docs/composition.md holds a copy).
 *
 *   node --import tsx scripts/compose-pool.ts [--steps 40] [--batch 4] [--rank 8] [--eval-windows 16] [--seed 0] [--distinct-seeds]
 *
 * Not here: the training loop (demo/run.ts), the merge rules (peft/compose/).
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { type BrownSplit, readBrown, splitBrown } from '../src/demo/brown.ts';
import { DEMO_BASE_DIR } from '../src/demo/base.ts';
import { evalBatches, type LmBatch, tokenStream } from '../src/demo/data.ts';
import { adapterEvaluator } from '../src/demo/lm.ts';
import { runDemo } from '../src/demo/run.ts';
import { loadModel } from '../src/models/index.ts';
import { compose } from '../src/peft/index.ts';
import { shutdownRuntime } from '../src/runtime/index.ts';

const GENRES = ['adventure', 'mystery', 'romance', 'science_fiction'] as const;
const { values: flags } = parseArgs({
  options: {
    steps: { type: 'string', default: '40' },
    batch: { type: 'string', default: '4' },
    rank: { type: 'string', default: '8' },
    'eval-windows': { type: 'string', default: '16' },
    seed: { type: 'string', default: '0' },
    'distinct-seeds': { type: 'boolean', default: false },
    out: { type: 'string', default: 'runs/compose-pool' },
  },
});
const steps = Number(flags.steps);
const batch = Number(flags.batch);
const rank = Number(flags.rank);
const evalWindows = Number(flags['eval-windows']);
const seed = Number(flags.seed);
// by default every genre's adapter starts from the same A (one seed), as runs that share a config do
const distinct = flags['distinct-seeds'] === true;
const OUT = flags.out!;
const SEQ = 256;

/** One genre's train / held-out split (splitBrown's whole-file split, restricted to the genre). */
function genreSplit(genre: string): BrownSplit {
  const all = splitBrown(readBrown({ side: 'fiction' }), 'fiction');
  return {
    side: 'fiction',
    train: all.train.filter((f) => f.genre === genre),
    heldOut: all.heldOut.filter((f) => f.genre === genre),
  };
}

/** The merges of the pool: PEFT's types with weight 1/n (ties-type: 1, its disjoint mean already averages), LEGO. */
function merges(n: number): { name: string; combination: compose.MergeType; weight: number; extra: object }[] {
  return [
    { name: 'linear', combination: 'linear', weight: 1 / n, extra: {} },
    { name: 'cat', combination: 'cat', weight: 1 / n, extra: {} },
    { name: `svd r${rank}`, combination: 'svd', weight: 1 / n, extra: { rank } },
    { name: 'ties d0.5', combination: 'ties', weight: 1, extra: { density: 0.5 } },
    { name: 'dare_linear d0.5', combination: 'dare_linear', weight: 1 / n, extra: { density: 0.5, seed } },
    { name: 'dare_ties d0.5', combination: 'dare_ties', weight: 1, extra: { density: 0.5, seed } },
    { name: 'magnitude_prune d0.5', combination: 'magnitude_prune', weight: 1 / n, extra: { density: 0.5 } },
    { name: `lego r${rank}`, combination: 'lego', weight: 1 / n, extra: { rank } },
  ];
}

async function main() {
  const t0 = performance.now();
  await mkdir(OUT, { recursive: true });
  const trained: Record<string, { dir: string; before: number; after: number; seconds: number }> = {};
  for (const [i, g] of GENRES.entries()) {
    const runDir = join(OUT, 'adapters', g);
    await rm(runDir, { recursive: true, force: true });
    const r = await runDemo({
      split: genreSplit(g),
      steps,
      batch,
      rank,
      alpha: 2 * rank,
      seed: distinct ? seed + i : seed,
      evalWindows,
      outDir: runDir,
      sampleBytes: 1,
    });
    trained[g] = { dir: r.adapterDir, before: r.heldOutBefore, after: r.heldOutAfter, seconds: r.seconds };
    console.error(
      `${g}: held-out ${r.heldOutBefore.toFixed(4)} -> ${r.heldOutAfter.toFixed(4)} (${r.seconds.toFixed(0)} s)`,
    );
  }
  const dirs: Record<string, string> = { base: '' };
  for (const g of GENRES) dirs[`lora ${g}`] = trained[g].dir;
  for (const m of merges(GENRES.length)) {
    const out = join(OUT, 'merges', m.name.replace(/ /g, '-'));
    await rm(out, { recursive: true, force: true });
    await compose.mergeAdapterFolders({
      adapters: GENRES.map((g) => ({ dir: trained[g].dir, weight: m.weight })),
      out,
      combination: m.combination,
      ...m.extra,
    });
    dirs[`merge ${m.name}`] = out;
  }

  const held: Record<string, LmBatch[]> = {};
  for (const g of GENRES) held[g] = evalBatches(tokenStream(genreSplit(g).heldOut), SEQ, batch, evalWindows);
  const model = await loadModel(DEMO_BASE_DIR);
  const table: Record<string, Record<string, number>> = {};
  try {
    for (const [row, dir] of Object.entries(dirs)) {
      const ev = await adapterEvaluator(model, dir, batch, SEQ); // one graph per row
      table[row] = {};
      for (const g of GENRES) table[row][g] = await ev.loss(held[g], new Map());
      const cells = GENRES.map((g) => table[row][g]);
      table[row].mean = cells.reduce((s, v) => s + v, 0) / cells.length;
      console.error(`${row}: ${cells.map((v) => v.toFixed(4)).join(' ')}`);
    }
  } finally {
    await model.close();
  }
  const seconds = (performance.now() - t0) / 1000;
  await writeFile(
    join(OUT, 'results.json'),
    `${JSON.stringify({ steps, batch, rank, evalWindows, seed, distinct, trained, table, seconds }, null, 2)}\n`,
  );
  const head = `| adapter | ${GENRES.join(' | ')} | mean |`;
  const rule = `|---|${GENRES.map(() => '---:').join('|')}|---:|`;
  const rows = Object.entries(table).map(([row, t]) => {
    const best = (g: string) => Math.min(...Object.values(table).map((r) => r[g]));
    const cell = (g: string) => (t[g] === best(g) ? `**${t[g].toFixed(4)}**` : t[g].toFixed(4));
    return `| ${row} | ${[...GENRES, 'mean'].map(cell).join(' | ')} |`;
  });
  console.log([head, rule, ...rows].join('\n'));
  console.log(
    `\n(${seconds.toFixed(0)} s; steps ${steps}, batch ${batch}×${SEQ} bytes, rank ${rank}, seed ${seed}${distinct ? ' + genre index' : ''})`,
  );
}

try {
  await main();
} finally {
  await shutdownRuntime();
}
