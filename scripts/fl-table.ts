// The strategies table of docs/federated.md: one real federation per strategy (a Flower 1.42 SuperLink on loopback,
// the ServerApp of interop/flower_app, three lorakit clients on non-IID Brown-fiction genres: the setting of
// test/federated/e2e.test.ts, which runs FedSmoothLoRA alone), each federation's per-round history written to
// <out>/<strategy>.json and the table's rows printed. The centralized row is scripts/fl-centralized.ts.
// Needs interop/.venv-flower. Run: node --import tsx scripts/fl-table.ts [out-dir] [strategy ...]
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type FederationOptions, noFlower, runFederation } from '../test/federated/harness.ts';
import { shutdownRuntime } from '../src/runtime/index.ts';

if (noFlower) throw new Error(noFlower);
const out = process.argv[2] ?? 'fl-table';
const all: FederationOptions['strategy'][] = ['fedavg', 'ffa', 'fair', 'fedsmooth'];
const strategies = process.argv.length > 3 ? (process.argv.slice(3) as typeof all) : all;
await mkdir(out, { recursive: true });
const rows: string[] = [];
for (const strategy of strategies) {
  const dir = await mkdtemp(join(tmpdir(), `lorakit-fl-${strategy}-`));
  try {
    const r = await runFederation({
      dir,
      strategy,
      rounds: 3,
      localSteps: 4,
      lr: 1e-2,
      rank: 4,
      batch: 4,
      seqLen: 64,
      trainBytes: 30_000,
      evalBytes: 2_000,
    });
    await writeFile(join(out, `${strategy}.json`), JSON.stringify(r.history, null, 1));
    const losses = r.history.map((h) => (h.eval_loss ?? Number.NaN).toFixed(4)).join(' → ');
    const up = r.history.slice(1).map((h) => h.bytes_up);
    const down = r.history.slice(1).map((h) => h.bytes_down);
    rows.push(`| ${strategy} | ${losses} | ${up.join(' / ')} | ${down.join(' / ')} | ${r.seconds.toFixed(0)} s |`);
    console.log(rows.at(-1));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
console.log('\n| strategy | held-out loss, rounds 0 → 3 | bytes up, rounds 1/2/3 | bytes down, rounds 1/2/3 | wall |');
console.log('|---|---|---|---|---|');
for (const r of rows) console.log(r);
await shutdownRuntime();
