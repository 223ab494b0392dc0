/**
 * The worked comparison of docs/methods.md: the initialisations and optimisers of the LoRA family against plain LoRA
 * at the same trainable budget (r 16 on the seven projections of the demo base, Brown fiction, 100 steps), each over
 * a three-value learning-rate sweep around the rate its kind needs; held-out loss and wall time per run. With
 * `--task alpaca` the same base and budget train on the Alpaca subset of ../shared/data instead (one document per
 * record in a compact instruction template, the last 500 of the 5,000 records held out; the loss is over every byte,
 * as the demo's: the byte-level base has no chat template to mask by).
 *
 *   node --import tsx scripts/compare-methods.ts [--task demo|alpaca] [name ...]      # prints the markdown table
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { BrownFile, BrownSplit } from '../src/demo/brown.ts';
import { runDemo } from '../src/demo/index.ts';
import { shutdownRuntime } from '../src/runtime/index.ts';
import { RUNS } from './methods-table.ts';

/** Each compared entry and its sweep: Adam-sized rules around the demo's 2e-3, base-replacing inits around 2e-4,
 * AltLoRA (a momentum-SGD-sized step) around 5e-2. */
const SWEEPS: Record<string, number[]> = {
  lora: [1e-3, 2e-3, 4e-3],
  lora_ga: [1e-4, 2e-4, 4e-4],
  slora: [1e-3, 2e-3, 4e-3],
  nlora: [1e-3, 2e-3, 4e-3],
  altlora: [2e-2, 5e-2, 1e-1],
  allora: [1e-3, 2e-3, 4e-3],
  stable_lora: [1e-3, 2e-3, 4e-3],
};

const ALPACA = join(import.meta.dirname, '../../shared/data/alpaca/alpaca_5000.json');
const ALPACA_HELD_OUT = 500;

/** The Alpaca subset as train and held-out documents: `### Instruction` / `### Input` (when set) / `### Response`. */
function alpacaSplit(): BrownSplit {
  const records = JSON.parse(readFileSync(ALPACA, 'utf8')) as { instruction: string; input: string; output: string }[];
  const docs: BrownFile[] = records.map((r, i) => ({
    id: `alpaca${i}`,
    genre: 'alpaca',
    side: 'fiction',
    text: [
      `### Instruction:\n${r.instruction}`,
      ...(r.input ? [`### Input:\n${r.input}`] : []),
      `### Response:\n${r.output}`,
    ].join('\n\n'),
  }));
  const cut = docs.length - ALPACA_HELD_OUT;
  return { side: 'fiction', train: docs.slice(0, cut), heldOut: docs.slice(cut) };
}

async function main(task: string, names: string[]): Promise<void> {
  if (task !== 'demo' && task !== 'alpaca') throw new Error(`--task must be demo or alpaca, got ${task}`);
  if (task === 'alpaca' && !existsSync(ALPACA)) {
    console.error(`compare-methods: ${ALPACA} is absent (../shared/data); nothing to compare on`);
    return;
  }
  const split = task === 'alpaca' ? alpacaSplit() : undefined;
  const rows: string[] = [];
  for (const name of names.length ? names : Object.keys(SWEEPS)) {
    const run = RUNS[name];
    const sweep = SWEEPS[name];
    if (!run || !sweep) throw new Error(`no comparison for ${name}`);
    const cells: string[] = [];
    let params = 0;
    for (const lr of sweep) {
      const r = await runDemo({ adapter: run.adapter, lr, steps: 100, seed: 0, sampleBytes: 1, split });
      params = r.trainableParams;
      cells.push(`${lr}: ${r.heldOutAfter.toFixed(4)} (${r.seconds.toFixed(0)} s)`);
      console.error(`${name} lr ${lr}: ${r.heldOutBefore.toFixed(4)} -> ${r.heldOutAfter.toFixed(4)}`);
    }
    rows.push(`| \`${name}\` | ${params.toLocaleString('en-US')} | ${cells.join(' | ')} |`);
  }
  console.log('| method | trainable | lr: held-out (time) | | |');
  console.log('|---|--:|--:|--:|--:|');
  for (const r of rows) console.log(r);
  await shutdownRuntime();
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values, positionals } = parseArgs({
    options: { task: { type: 'string', default: 'demo' } },
    allowPositionals: true,
  });
  await main(values.task, positionals);
}
