/**
 * The SmolLM2 half of the composition pool (issue 16, parts 1–2): four real task adapters on SmolLM2-135M-Instruct
 * (the shared GGUF, int8 frozen base, LoRA r 8 on q/k/v/o, the run settings of examples/smollm2-chat; 256 tokens per
 * row for GSM8K, whose prompts do not fit in 128: SEQ_LEN), the held-out
 * loss of the base, of each adapter and of merges of the four on every task's held-out chats, and SST-2 accuracy.
 * One command per phase, each its own process (one SmolLM2 process at a time fits this machine's memory):
 *
 *   node --import tsx scripts/smollm2-pool.ts data                # runs/smollm2-pool/<task>/{train,valid}.jsonl
 *   node --import tsx scripts/smollm2-pool.ts train <task> [steps] # runs/smollm2-pool/<task>/run/final (via runTraining)
 *   node --import tsx scripts/smollm2-pool.ts merge [name…]       # runs/smollm2-pool/merges/<name> (mergeAdapterFolders)
 *   node --import tsx scripts/smollm2-pool.ts table [N] [row…]    # rows not yet in table-N.json on N held-out chats per task
 *
 * Not here: the task framing (scripts/smollm2-pool-tasks.ts), the training loop (train/run.ts, the CLI's), the merge
 * rules (peft/compose/), the evaluation (scripts/smollm2-pool-eval.ts).
 */
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { compose } from '../src/peft/index.ts';
import { shutdownRuntime } from '../src/runtime/index.ts';
import { loadRunConfig, runTraining } from '../src/train/index.ts';
import { evaluateRows, type RowResult } from './smollm2-pool-eval.ts';
import {
  adapterDir,
  HELD_OUT,
  MODEL,
  POOL_DIR,
  POOL_TASKS,
  type PoolTask,
  readTask,
  SEQ_LEN,
  SHARED_DATA,
  TRAIN_RECORDS,
} from './smollm2-pool-tasks.ts';

const DATA = SHARED_DATA;
const OUT = POOL_DIR;
const RANK = 8;

const taskDir = (t: PoolTask) => join(OUT, t);

function isTask(s: string | undefined): s is PoolTask {
  return (POOL_TASKS as readonly string[]).includes(s ?? '');
}

function data() {
  for (const t of POOL_TASKS) {
    const s = readTask(t, DATA, TRAIN_RECORDS);
    mkdirSync(taskDir(t), { recursive: true });
    const lines = (rs: object[]) => `${rs.map((r) => JSON.stringify(r)).join('\n')}\n`;
    writeFileSync(join(taskDir(t), 'train.jsonl'), lines(s.train));
    writeFileSync(join(taskDir(t), 'valid.jsonl'), lines(s.heldOut));
    console.log(`${t}: ${s.train.length} train, ${s.heldOut.length} held out`);
  }
}

/** The run config of one task: examples/smollm2-chat's settings on the task's chats (written beside its data). */
function runYaml(t: PoolTask, steps: number): string {
  return `# written by scripts/smollm2-pool.ts: examples/smollm2-chat's run on this task's chats
model: ${MODEL}
quantize: int8
output_dir: run
data: {path: train.jsonl, format: chat, seq_len: ${SEQ_LEN[t]}}   # held-out loss: the table phase
adapter: {target_modules: [q_proj, k_proj, v_proj, o_proj], r: ${RANK}, lora_alpha: ${2 * RANK}, lora_dropout: 0.0}
training:
  max_steps: ${steps}
  per_device_train_batch_size: 4
  learning_rate: 1.0e-3
  lr_scheduler_type: cosine
  warmup_steps: 3
  save_steps: ${steps}
  logging_steps: 2
  seed: 0
`;
}

async function train(t: PoolTask, steps: number) {
  const file = join(taskDir(t), 'run.yaml');
  if (!existsSync(join(taskDir(t), 'train.jsonl'))) throw new Error(`no data for ${t}: run the data phase first`);
  writeFileSync(file, runYaml(t, steps));
  rmSync(join(taskDir(t), 'run'), { recursive: true, force: true });
  const t0 = performance.now();
  const out = await runTraining(loadRunConfig(file));
  const seconds = (performance.now() - t0) / 1000;
  const r = out.result;
  const evals = r.history.filter((h) => h.eval_loss !== undefined).map((h) => ({ step: h.step, loss: h.eval_loss }));
  const summary = { task: t, steps, seconds, evals, peakRssMiB: process.resourceUsage().maxRSS / 1024 };
  writeFileSync(join(taskDir(t), 'train-summary.json'), `${JSON.stringify(summary, null, 2)}\n`);
  console.log(JSON.stringify(summary));
}

/**
 * The merges of the pool: PEFT's types at weight 1/n where the rule sums (linear, cat, svd, dare_linear_svd,
 * magnitude_prune_svd), 1 where TIES's disjoint mean already averages; density 0.5 and DARE seed 0; the svd types at
 * PEFT's default rank (the largest source rank, 8). The svd types no longer run a dense SVD of each 576 × 576 ΔW
 * (65 s under load, 120 per merge): combine.ts factors `svd` from the stacked factors and takes the top 8 of the
 * pruned ΔW by subspace iteration (bench/svd-merge.ts).
 */
function merges(n: number) {
  return [
    { name: 'linear', combination: 'linear' as const, weight: 1 / n, extra: {} },
    { name: 'ties-d0.5', combination: 'ties' as const, weight: 1, extra: { density: 0.5 } },
    { name: 'dare_ties-d0.5', combination: 'dare_ties' as const, weight: 1, extra: { density: 0.5, seed: 0 } },
    { name: 'cat', combination: 'cat' as const, weight: 1 / n, extra: {} },
    { name: 'svd', combination: 'svd' as const, weight: 1 / n, extra: {} },
    { name: 'ties_svd-d0.5', combination: 'ties_svd' as const, weight: 1, extra: { density: 0.5 } },
    {
      name: 'dare_linear_svd-d0.5',
      combination: 'dare_linear_svd' as const,
      weight: 1 / n,
      extra: { density: 0.5, seed: 0 },
    },
    {
      name: 'dare_ties_svd-d0.5',
      combination: 'dare_ties_svd' as const,
      weight: 1,
      extra: { density: 0.5, seed: 0 },
    },
    {
      name: 'magnitude_prune_svd-d0.5',
      combination: 'magnitude_prune_svd' as const,
      weight: 1 / n,
      extra: { density: 0.5 },
    },
  ];
}

/** Runs the merges named in `only` (all when empty), adding each one's wall time to merges/merge-times.json. */
async function merge(only: string[]) {
  const all = merges(POOL_TASKS.length);
  const unknown = only.filter((n) => !all.some((m) => m.name === n));
  if (unknown.length > 0)
    throw new Error(`unknown merge ${unknown.join(', ')}: one of ${all.map((m) => m.name).join(', ')}`);
  const timesFile = join(OUT, 'merges', 'merge-times.json');
  const times: Record<string, number> = existsSync(timesFile) ? JSON.parse(readFileSync(timesFile, 'utf8')) : {};
  for (const m of all.filter((x) => only.length === 0 || only.includes(x.name))) {
    const out = join(OUT, 'merges', m.name);
    rmSync(out, { recursive: true, force: true });
    const t0 = performance.now();
    await compose.mergeAdapterFolders({
      adapters: POOL_TASKS.map((t) => ({ dir: adapterDir(t), weight: m.weight })),
      out,
      combination: m.combination,
      ...m.extra,
    });
    times[m.name] = (performance.now() - t0) / 1000;
    writeFileSync(timesFile, `${JSON.stringify(times, null, 2)}\n`);
    console.log(`${m.name}: ${out} (${times[m.name].toFixed(1)} s)`);
  }
}

/** Every row of the table: the base, the four adapters, the merges that exist. */
function rows(): Record<string, string> {
  const r: Record<string, string> = { base: '' };
  for (const t of POOL_TASKS) r[`lora ${t}`] = adapterDir(t);
  for (const m of merges(POOL_TASKS.length)) r[`merge ${m.name}`] = join(OUT, 'merges', m.name);
  return r;
}

function markdown(table: Record<string, RowResult>): string {
  const names = Object.keys(table);
  const best = (t: PoolTask) => Math.min(...names.map((n) => table[n].loss[t]));
  const head = `| adapter | ${POOL_TASKS.join(' | ')} | mean | SST-2 acc |`;
  const rule = `|---|${POOL_TASKS.map(() => '---:').join('|')}|---:|---:|`;
  const body = names.map((n) => {
    const l = table[n].loss;
    const cell = (t: PoolTask) => (l[t] === best(t) ? `**${l[t].toFixed(4)}**` : l[t].toFixed(4));
    const mean = POOL_TASKS.reduce((s, t) => s + l[t], 0) / POOL_TASKS.length;
    return `| ${n} | ${POOL_TASKS.map(cell).join(' | ')} | ${mean.toFixed(4)} | ${table[n].sst2Accuracy.toFixed(3)} |`;
  });
  return [head, rule, ...body].join('\n');
}

/**
 * Evaluates the rows not in table.json yet on the first `examples` held-out chats of each task (a cell costs
 * examples × seq_len tokens of forward pass: ~70 tokens/s on this loaded machine), saving after every row.
 */
async function table(examples: number, only: string[]) {
  const file = join(OUT, `table-${examples}.json`);
  const done: Record<string, RowResult> = existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')) : {};
  const todo = Object.entries(rows()).filter(
    ([n, dir]) => !(n in done) && (only.length === 0 || only.includes(n)) && (dir === '' || existsSync(dir)),
  );
  const heldOut = {} as Record<PoolTask, string>;
  for (const t of POOL_TASKS) {
    heldOut[t] = join(taskDir(t), `valid-${examples}.jsonl`);
    const lines = readFileSync(join(taskDir(t), 'valid.jsonl'), 'utf8')
      .split('\n')
      .slice(0, examples);
    writeFileSync(heldOut[t], `${lines.join('\n')}\n`);
  }
  await evaluateRows({ model: MODEL, rows: todo, heldOut }, (name, r) => {
    // re-read first: row processes running side by side (`table 16 "<row>"`) keep each other's rows
    if (existsSync(file)) Object.assign(done, JSON.parse(readFileSync(file, 'utf8')));
    done[name] = r;
    writeFileSync(file, `${JSON.stringify(done, null, 2)}\n`); // after every row: a killed run keeps what it did
    console.error(`${name}: ${JSON.stringify(r)}`);
  });
  const order = Object.keys(rows()).filter((n) => n in done);
  console.log(markdown(Object.fromEntries(order.map((n) => [n, done[n]]))));
}

const [phase, arg, arg2] = process.argv.slice(2);
try {
  if (phase === 'data') data();
  else if (phase === 'train' && isTask(arg)) await train(arg, Number(arg2 ?? 24));
  else if (phase === 'merge') await merge(process.argv.slice(3));
  else if (phase === 'table') await table(Number(arg ?? HELD_OUT), process.argv.slice(4));
  else {
    console.error(
      `usage: smollm2-pool.ts data | train <${POOL_TASKS.join('|')}> [steps] | merge [name…] | table [examples] [row…]`,
    );
    process.exitCode = 2;
  }
} finally {
  await shutdownRuntime();
}
