/**
 * The Recycling study (spec methods-c §2) at small scale on the demo base: a pool of LoRAs, one per Brown genre
 * (scripts/adaptive-pool.ts), and a held-out target genre (humor) with 100 target samples (80 train, 20 validation)
 * cut from its training files; the held-out loss (nats per byte) is measured on the genre's held-out files. Every
 * method runs on three pools: the recycled LoRAs, the same pool with random matrices of matching std (the study's
 * control), and the recycled pool plus the target genre's own LoRA. Rows also include the base model and a fresh
 * LoRA trained on the same 80 samples. Prints a Markdown table (docs/composition.md holds a copy) and writes
 * <out>/results.json.
 *
 *   node --import tsx scripts/adaptive-pool.ts && node --import tsx scripts/adaptive-merge.ts [--steps 30]
 *     [--hub-budget 20] [--seq-len 128] [--top-k 5] [--batch 4] [--test-windows 32] [--out runs/adaptive]
 *     [--only fresh,mean,lorahub,adamerging-task,adamerging-layer,pi-tuning,pi-fisher,pi-closeness,arrow,recycle]
 *
 * The π-Tuning rows with a selection compare with the target genre's own LoRA (its "target expert"): quasi-fisher
 * (π-Tuning's) or closeness (the study's cosine of ΔW), then π-Tuning on the kept top-k.
 * Not here: the methods (src/adaptive/), the pool's training (adaptive-pool.ts).
 */
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import {
  adaMerging,
  arrow,
  loraHub,
  type MethodContext,
  piTuning,
  poolFromLoras,
  randomPool,
  type RecycledPool,
  recycle,
  runCoefficientMethod,
  type Selection,
  selectTopK,
  subPool,
  type TokenBatch,
} from '../src/adaptive/index.ts';
import type { BrownFile } from '../src/demo/brown.ts';
import { DEMO_BASE_DIR } from '../src/demo/base.ts';
import { evalBatches, tokenStream } from '../src/demo/data.ts';
import { runDemo } from '../src/demo/run.ts';
import { loadModel } from '../src/models/index.ts';
import { compose } from '../src/peft/index.ts';
import { shutdownRuntime } from '../src/runtime/index.ts';
import { genreSplit, POOL_GENRES, TARGET_GENRE } from './adaptive-pool.ts';

const { values: flags } = parseArgs({
  options: {
    steps: { type: 'string', default: '30' },
    'seq-len': { type: 'string', default: '128' },
    'hub-budget': { type: 'string', default: '20' },
    'top-k': { type: 'string', default: '5' },
    batch: { type: 'string', default: '4' },
    'test-windows': { type: 'string', default: '32' },
    'target-steps': { type: 'string', default: '100' },
    out: { type: 'string', default: 'runs/adaptive' },
    only: { type: 'string' },
  },
});
const STEPS = Number(flags.steps);
const BUDGET = Number(flags['hub-budget']);
const TOPK = Number(flags['top-k']);
const B = Number(flags.batch);
const SEQ = Number(flags['seq-len']);
const OUT = flags.out!;
const SAMPLE_CHARS = SEQ + 44; // each target sample is one window of SEQ bytes cut from a longer chunk

/** 100 target samples: chunks of the target genre's training text at evenly spaced offsets, as one-chunk "files". */
function targetSamples(): BrownFile[] {
  const text = genreSplit(TARGET_GENRE)
    .train.map((f) => f.text)
    .join('\n\n');
  const step = Math.floor((text.length - SAMPLE_CHARS) / 100);
  return Array.from({ length: 100 }, (_, i) => ({
    id: `sample${i}`,
    genre: TARGET_GENRE,
    side: 'fiction' as const,
    text: text.slice(i * step, i * step + SAMPLE_CHARS),
  }));
}

/** Batches of B samples, each sample's first window of SEQ bytes. */
function batchesOf(samples: BrownFile[]): TokenBatch[] {
  const out: TokenBatch[] = [];
  for (let i = 0; i < samples.length; i += B) {
    const rows = samples.slice(i, i + B).map((s) => evalBatches(tokenStream([s]), SEQ, 1, 1)[0]);
    const inputIds = new BigInt64Array(B * SEQ);
    const labels = new BigInt64Array(B * SEQ).fill(-100n);
    rows.forEach((r, k) => {
      inputIds.set(r.inputIds, k * SEQ);
      labels.set(r.labels, k * SEQ);
    });
    out.push({ inputIds, labels });
  }
  return out;
}

interface Row {
  loss: number;
  val: number | null;
  seconds: number;
  note?: string;
}

async function main() {
  const t0 = performance.now();
  const samples = targetSamples();
  // interleaved: every fifth sample is validation
  const trainS = samples.filter((_, i) => i % 5 !== 4);
  const valS = samples.filter((_, i) => i % 5 === 4);
  const test = evalBatches(tokenStream(genreSplit(TARGET_GENRE).heldOut), SEQ, B, Number(flags['test-windows']));
  const data = { train: batchesOf(trainS), val: batchesOf(valS), test };

  const read = (g: string) => compose.readLora(join(OUT, 'pool', g, 'final'));
  const recycled = poolFromLoras([...POOL_GENRES], await Promise.all(POOL_GENRES.map(read)));
  const pools: Record<string, RecycledPool> = {
    recycled,
    random: randomPool(recycled, 0),
    '+ target LoRA': poolFromLoras(
      [...POOL_GENRES, TARGET_GENRE],
      await Promise.all([...POOL_GENRES, TARGET_GENRE].map(read)),
    ),
  };
  const table: Record<string, Record<string, Row>> = {};
  const put = (row: string, col: string, r: Row) => {
    table[row] ??= {};
    table[row][col] = r;
    console.error(
      `${row} | ${col}: test ${r.loss.toFixed(4)}, val ${r.val?.toFixed(4) ?? '-'} (${r.seconds.toFixed(0)} s)`,
    );
  };

  const only = flags.only?.split(',');
  const want = (m: string) => !only || only.includes(m);
  const model = await loadModel(DEMO_BASE_DIR);
  try {
    // a fresh LoRA on the 80 training samples (the study's "target-task LoRA"), validation = the 20 others
    if (want('fresh')) {
      const tl = performance.now();
      await rm(join(OUT, 'target-lora'), { recursive: true, force: true });
      const fresh = await runDemo({
        split: { side: 'fiction', train: trainS, heldOut: genreSplit(TARGET_GENRE).heldOut },
        steps: Number(flags['target-steps']),
        batch: B,
        seqLen: SEQ,
        rank: 8,
        alpha: 16,
        seed: 0,
        evalWindows: Number(flags['test-windows']),
        outDir: join(OUT, 'target-lora'),
        sampleBytes: 1,
      });
      const freshPool = poolFromLoras(['fresh'], [await compose.readLora(fresh.adapterDir)]);
      const one = await runCoefficientMethod(
        'fresh',
        { model, pool: freshPool, data, batch: B, seqLen: SEQ },
        { granularity: 'task', phi: 'linear' },
        1,
        { lr: 1, steps: 0 },
      );
      put('LoRA trained on the 80 samples', 'recycled', {
        loss: one.testLoss!,
        val: one.valLoss,
        seconds: (performance.now() - tl) / 1000,
      });
    }
    const base = await runCoefficientMethod(
      'base',
      { model, pool: recycled, data, batch: B, seqLen: SEQ },
      { granularity: 'task', phi: 'linear' },
      0,
      { lr: 1, steps: 0 },
    );
    put('base model', 'recycled', { loss: base.testLoss!, val: base.valLoss, seconds: base.seconds });

    for (const [col, pool] of Object.entries(pools)) {
      const ctx: MethodContext = { model, pool, data, batch: B, seqLen: SEQ, log: (l) => console.error(`  ${l}`) };
      const n = pool.names.length;
      if (want('mean')) {
        const r = await runCoefficientMethod('mean', ctx, { granularity: 'task', phi: 'linear' }, 1 / n, {
          lr: 1,
          steps: 0,
        });
        put('mean of the pool (fixed 1/n)', col, { loss: r.testLoss!, val: r.valLoss, seconds: r.seconds });
      }
      if (want('lorahub')) {
        const r = await loraHub(ctx, { budget: BUDGET });
        put(`LoraHub (CMA-ES, ${BUDGET} evaluations)`, col, {
          loss: r.testLoss!,
          val: r.valLoss,
          seconds: r.seconds,
          note: r.weights.map((v) => v.toFixed(2)).join(' '),
        });
      }
      if (want('adamerging-task')) {
        const r = await adaMerging(ctx, { granularity: 'task', steps: STEPS });
        put('AdaMerging task-wise', col, {
          loss: r.testLoss!,
          val: r.valLoss,
          seconds: r.seconds,
          note: r.coefficients[0].map((v) => v.toFixed(2)).join(' '),
        });
      }
      if (want('adamerging-layer')) {
        const r = await adaMerging(ctx, { granularity: 'module', steps: STEPS });
        put('AdaMerging layer-wise', col, { loss: r.testLoss!, val: r.valLoss, seconds: r.seconds });
      }
      if (want('pi-tuning')) {
        const r = await piTuning(ctx, { steps: STEPS });
        put('π-Tuning', col, { loss: r.testLoss!, val: r.valLoss, seconds: r.seconds });
      }
      const selections: [string, Selection, string][] = [
        ['pi-fisher', 'quasi-fisher', `π-Tuning (quasi-Fisher top-${TOPK})`],
        ['pi-closeness', 'closeness', `π-Tuning (closeness top-${TOPK})`],
      ];
      for (const [key, strategy, label] of selections) {
        if (!want(key)) continue;
        const ts = performance.now();
        const target = poolFromLoras([TARGET_GENRE], [await read(TARGET_GENRE)]);
        const s = await selectTopK(pool, {
          strategy,
          k: TOPK,
          model,
          train: data.train,
          batch: B,
          seqLen: SEQ,
          target,
        });
        const r = await piTuning({ ...ctx, pool: subPool(pool, s.keep) }, { steps: STEPS });
        put(label, col, {
          loss: r.testLoss!,
          val: r.valLoss,
          seconds: (performance.now() - ts) / 1000,
          note: s.keep.map((i) => `${pool.names[i]} ${s.scores![i].toFixed(3)}`).join(', '),
        });
      }
      if (want('arrow')) {
        const r = await arrow(ctx);
        put('Arrow (top-3, no training)', col, { loss: r.testLoss!, val: r.valLoss, seconds: r.seconds });
      }
      if (want('recycle')) {
        const r = await recycle(ctx, { topK: TOPK, steps: STEPS });
        put(`the study's method (evaluation top-${TOPK})`, col, {
          loss: r.testLoss!,
          val: r.valLoss,
          seconds: r.seconds,
          note: r.selected.join(' '),
        });
      }
    }
  } finally {
    await model.close();
  }
  const seconds = (performance.now() - t0) / 1000;
  await writeFile(
    join(OUT, 'results.json'),
    `${JSON.stringify({ steps: STEPS, budget: BUDGET, topK: TOPK, batch: B, table, seconds }, null, 2)}\n`,
  );
  const cols = Object.keys(pools);
  const lines = [`| method | ${cols.join(' | ')} |`, `|---|${cols.map(() => '---:').join('|')}|`];
  for (const [row, cells] of Object.entries(table))
    lines.push(
      `| ${row} | ${cols.map((c) => (cells[c] ? `${cells[c].loss.toFixed(4)} (${cells[c].seconds.toFixed(0)} s)` : '')).join(' | ')} |`,
    );
  console.log(lines.join('\n'));
  console.log(`\n(${seconds.toFixed(0)} s; ${STEPS} steps, LoraHub budget ${BUDGET}, batch ${B}×${SEQ} bytes)`);
  for (const [row, cells] of Object.entries(table))
    for (const [c, r] of Object.entries(cells)) if (r.note) console.log(`- ${row}, ${c}: ${r.note}`);
}

try {
  await main();
} finally {
  await shutdownRuntime();
}
