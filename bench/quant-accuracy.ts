/**
 * Held-out loss of the demo's LoRA run (models/demo-base on Brown fiction, src/demo) with a float32, int8 or 4-bit
 * frozen base, at the same seed, steps and data: one mode per process (each run stays under ~2 minutes on a loaded
 * 2-core machine), appended to bench/results/quant-accuracy.jsonl. docs/quantization.md holds the table.
 *   node --import tsx bench/quant-accuracy.ts --mode none|int8|q4 [--steps 30] [--seed 0]
 */
import { appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { runDemo } from '../src/demo/index.ts';
import type { QuantMode } from '../src/nn/index.ts';
import { shutdownRuntime } from '../src/runtime/index.ts';
import { RESULTS } from './common.ts';

const arg = (name: string, d: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : d;
};

async function main(): Promise<void> {
  const mode = arg('mode', 'none') as QuantMode;
  const settings = {
    steps: Number(arg('steps', '30')),
    batch: 4,
    seqLen: 128,
    evalWindows: 32,
    seed: Number(arg('seed', '0')),
  };
  const r = await runDemo({ ...settings, quantize: mode, sampleBytes: 1, log: (l) => console.log(l) });
  const row = {
    date: new Date().toISOString(),
    mode,
    ...settings,
    heldOutBefore: r.heldOutBefore,
    heldOutAfter: r.heldOutAfter,
    finalTrainLoss: r.trainLosses[r.trainLosses.length - 1],
    seconds: r.seconds,
    peakRssMB: process.resourceUsage().maxRSS / 1024,
  };
  console.log(JSON.stringify(row));
  mkdirSync(RESULTS, { recursive: true });
  appendFileSync(join(RESULTS, 'quant-accuracy.jsonl'), `${JSON.stringify(row)}\n`);
  await shutdownRuntime();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
