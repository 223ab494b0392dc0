/**
 * Where the time to a training step's first result goes, in one process: model load, int8 quantization (from the
 * quantized-weight cache when warm), the step's task, ORT's session (from the saved optimised model when warm), the
 * first and the second step; each phase with its end time, the process's page faults, CPU time and peak RSS (Linux
 * /proc). Run it twice on one cache folder: the first run is cold, the second warm (what bench:quant's warm row
 * times, less the process start).
 *   LORAKIT_CACHE=/tmp/lk node --import tsx bench/first-step.ts [gpt2|smollm] [attn|all] [--quantize-head]
 */
import { readFileSync } from 'node:fs';
import { loadModel, quantizeModel } from '../src/models/index.ts';
import { Rng } from '../src/linalg/index.ts';
import { StepEngine, engineOptions, type TrainBatch } from '../src/train/index.ts';
import { trainerStep } from './lorakit.ts';
import { ensureModel, type ModelName } from './models.ts';
import type { Targets, Workload } from './workloads.ts';

const args = process.argv.slice(2);
const [model = 'smollm', targets = 'attn'] = args.filter((a) => !a.startsWith('--')) as [ModelName?, Targets?];
const w: Workload = {
  ...{ id: `train ${model} ${targets}`, kind: 'train', model, targets, batch: 4, seq: 256, rank: 16 },
  ...{ newTokens: 0, warmup: 0, steps: 1, threads: 2 },
};
const t0 = performance.now();
const proc = (file: string) => readFileSync(`/proc/self/${file}`, 'utf8');
const lap = (what: string) => {
  const faults = Number(proc('stat').split(') ')[1].split(' ')[7]); // minflt
  const cpu = process.cpuUsage();
  const hwm = /VmHWM:\s+(\d+)/.exec(proc('status'))?.[1];
  const s = ((performance.now() - t0) / 1000).toFixed(2);
  console.log(`${what}: ${s} s, faults ${faults}, cpu ${((cpu.user + cpu.system) / 1e6).toFixed(1)} s, hwm ${hwm} kB`);
};
const loaded = await loadModel(await ensureModel(model));
lap('load');
const quantized = await quantizeModel(loaded, 'int8', { head: args.includes('--quantize-head') });
lap('quantize');
const { task, options } = await trainerStep(w, quantized);
const first = (task.batches({ epoch: 0, index: 0 }) as Iterable<TrainBatch>)[Symbol.iterator]().next().value!;
const rng = new Rng(0);
const params = await task.initialParams(rng);
lap('task');
const engine = await StepEngine.create(task, engineOptions(options), params);
lap('session');
const feeds = { ...first.feeds, ...task.stepInputs?.({ step: 1, micro: 0, rng, params: engine.params() }) };
for (const what of ['first step', 'second step']) {
  await engine.run([{ feeds, weight: first.weight ?? 1 }], 1e-4);
  lap(what);
}
await engine.dispose();
await loaded.close(); // the model's weight files (a FileHandle left to GC draws Node's warning)
