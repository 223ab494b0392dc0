// The centralized row of docs/federated.md's table: one adapter trained on the three federated clients' training
// text together (test/federated/harness.ts writes the same files), for as many optimizer steps as one client takes
// in the federation (rounds × local steps) with three clients' batch, evaluated on their held-out files together.
// Run: node --import tsx scripts/fl-centralized.ts
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeClients } from '../test/federated/harness.ts';
import { loadRunConfig, runTraining } from '../src/train/index.ts';
import { shutdownRuntime } from '../src/runtime/index.ts';

const dir = await mkdtemp(join(tmpdir(), 'lorakit-fl-central-'));
const o = { dir, strategy: 'fedavg' as const, rounds: 3, localSteps: 4, lr: 1e-2, rank: 4, batch: 4, seqLen: 64 };
const small = { ...o, trainBytes: 30_000, evalBytes: 2_000 };
const yamls = await writeClients(small);
const join3 = async (name: string) =>
  (await Promise.all(yamls.map((y) => readFile(join(y, '..', name), 'utf8')))).join('\n\n');
await writeFile(join(dir, 'train.txt'), await join3('train.txt'));
await writeFile(join(dir, 'eval.txt'), await join3('eval.txt'));
const c = loadRunConfig(yamls[0]);
const steps = o.rounds * o.localSteps;
const config = {
  ...c,
  output_dir: join(dir, 'out'),
  data: { ...c.data, path: join(dir, 'train.txt'), validation_file: join(dir, 'eval.txt') },
  training: {
    ...c.training,
    max_steps: steps,
    per_device_train_batch_size: 3 * o.batch,
    learning_rate: o.lr,
    lr_scheduler_type: 'constant' as const,
    eval_steps: steps,
  },
};
const started = Date.now();
const out = await runTraining(config, { progress: 'none' });
const evals = (await readFile(out.metricsFile, 'utf8'))
  .trim()
  .split('\n')
  .map((l) => JSON.parse(l))
  .filter((m) => m.eval_loss !== undefined);
console.log(
  `| centralized | ${evals.map((m) => m.eval_loss.toFixed(4)).join(' → ')} after ${steps} steps | – | – | ` +
    `${((Date.now() - started) / 1000).toFixed(0)} s |`,
);
await shutdownRuntime();
