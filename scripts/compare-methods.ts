/**
 * The worked comparison of docs/methods.md: the initialisations and optimisers of the LoRA family against plain LoRA
 * at the same trainable budget (r 16 on the seven projections of the demo base, Brown fiction, 100 steps), each over
 * a three-value learning-rate sweep around the rate its kind needs; held-out loss and wall time per run.
 *
 *   node --import tsx scripts/compare-methods.ts [name ...]      # prints the markdown table
 */
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

async function main(names: string[]): Promise<void> {
  const rows: string[] = [];
  for (const name of names.length ? names : Object.keys(SWEEPS)) {
    const run = RUNS[name];
    const sweep = SWEEPS[name];
    if (!run || !sweep) throw new Error(`no comparison for ${name}`);
    const cells: string[] = [];
    let params = 0;
    for (const lr of sweep) {
      const r = await runDemo({ adapter: run.adapter, lr, steps: 100, seed: 0, sampleBytes: 1 });
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

if (import.meta.url === `file://${process.argv[1]}`) await main(process.argv.slice(2));
