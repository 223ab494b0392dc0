/**
 * The mixtures comparison (issue 16, part 4) on the real SmolLM2-135M-Instruct (the shared GGUF, int8 frozen base as
 * the pool runs) over the pool's four chat tasks, loss on the assistant's tokens only (scripts/smollm2-pool-tasks.ts):
 *
 *   node --import tsx scripts/smollm2-mixtures.ts own [--steps 24] [--examples 16]   # base, single LoRA, LoRA-Mixer
 *   node --import tsx scripts/smollm2-mixtures.ts pool [--steps 24] [--examples 16]  # needs POOL_READY: ReMix rows
 *   node --import tsx scripts/smollm2-mixtures.ts table [--examples 16]              # the Markdown of the JSON
 *
 * `own` trains on mixed-task chat rows (every batch holds one row of each task, rows of --seq-len tokens): a single
 * LoRA r 8 on q/k/v/o (the pool adapters' shape; a one-expert LoRA-Mixer in its hard stage, so the graphs and loop are
 * the mixtures') and LoRA-Mixer E 4 r 4 K 2 on q/k/v/o (the same activated parameter count: half the steps hard routed
 * by task, half soft top-k router training; --entropy-sign). `pool` reads the four frozen pool adapters
 * (runs/smollm2-pool/<task>/run/final, LoRA r 8 on q/k/v/o): each alone, their uniform mean (ReMix with k = n, i.e.
 * composition's cat merge at weights 1/n), and ReMix routing k = 2 of them with the router trained by RLOO over M
 * sampled routings, with its untrained-router control. Every row is evaluated on the first --examples held-out chats
 * of each task at the pool table's tokens per row (SEQ_LEN), so the cells compare with runs/smollm2-pool/table-N.json;
 * SST-2 accuracy is the greedy first answer token of the same forward pass. Rows are saved to
 * runs/smollm2-mixtures/results-N.json as each finishes (a rerun skips rows already there; --redo reruns them).
 *
 * Not here: the methods (src/peft/mixture/), the loop (src/demo/mixture.ts), the task framing and pool.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { DatasetRows, datasetBatches, type LmBatch } from '../src/demo/data.ts';
import { evaluateMixture, type MixtureDomain, trainMixture } from '../src/demo/mixture.ts';
import { HfTokenizer } from '../src/io/index.ts';
import { type LoadedModel, loadModel, quantizeModel } from '../src/models/index.ts';
import { MixtureModel, parseMixtureConfig } from '../src/peft/mixture/index.ts';
import { shutdownRuntime } from '../src/runtime/index.ts';
import { IGNORE_INDEX, loadDataset } from '../src/train/data/index.ts';
import {
  firstTokenCorrect,
  MODEL,
  POOL_DIR,
  POOL_TASKS,
  type PoolTask,
  readTask,
  SEQ_LEN,
  SST2_LABELS,
} from './smollm2-pool-tasks.ts';

const ROOT = resolve(import.meta.dirname, '..');
const DATA = resolve(ROOT, '..', 'shared', 'data');
const OUT = join(ROOT, 'runs', 'smollm2-mixtures');
/** The pool's folder (scripts/smollm2-pool.ts writes it). */
const POOL = POOL_DIR;
const POOL_READY = join(POOL, 'POOL_READY');
const ATTN = ['q_proj', 'k_proj', 'v_proj', 'o_proj'];
/** Training records read per task: a run of S steps sees S of each (one row per task per step). */
const TRAIN_RECORDS = 256;

const { values: flags, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    steps: { type: 'string', default: '24' },
    batch: { type: 'string', default: '4' },
    'seq-len': { type: 'string', default: '256' },
    examples: { type: 'string', default: '16' },
    lr: { type: 'string', default: '1e-3' },
    seed: { type: 'string', default: '0' },
    samples: { type: 'string', default: '2' },
    'entropy-sign': { type: 'string', default: '+' },
    redo: { type: 'boolean', default: false },
  },
});
const steps = Number(flags.steps);
const B = Number(flags.batch);
const T = Number(flags['seq-len']);
const examples = Number(flags.examples);
const lr = Number(flags.lr);
const seed = Number(flags.seed);
const [E, r, k] = [POOL_TASKS.length, 4, 2];

/** One row of the table. */
interface Row {
  /** LoRA parameters active per token, summed over the targeted modules. */
  activated: number;
  /** Held-out loss per task (nats per assistant token). */
  loss: Record<PoolTask, number>;
  sst2Accuracy: number;
  /** Training wall seconds (0 for rows that do not train). */
  seconds: number;
  /** Mean effective support size of the applied weights and of the router's probabilities over the tasks. */
  ess: number;
  essRouter: number;
  /** What the row ran (steps, stage split, config). */
  setup: Record<string, unknown>;
}

const resultsFile = () => join(OUT, `results-${examples}.json`);
const readResults = (): Record<string, Row> =>
  existsSync(resultsFile()) ? JSON.parse(readFileSync(resultsFile(), 'utf8')) : {};

interface Ctx {
  model: LoadedModel;
  tokenizer: HfTokenizer;
  held: Record<PoolTask, LmBatch[]>;
  domains: MixtureDomain[];
}

/** The tasks' chats as JSONL under OUT/data (training records and the first `examples` held-out ones). */
async function setup(): Promise<Ctx> {
  mkdirSync(join(OUT, 'data'), { recursive: true });
  const model = await quantizeModel(await loadModel(MODEL), 'int8');
  const tokenizer = await HfTokenizer.fromDir(model.dir);
  const held = {} as Record<PoolTask, LmBatch[]>;
  const domains: MixtureDomain[] = [];
  for (const t of POOL_TASKS) {
    const s = readTask(t, DATA, TRAIN_RECORDS);
    const lines = (rs: object[]) => `${rs.map((x) => JSON.stringify(x)).join('\n')}\n`;
    const trainFile = join(OUT, 'data', `${t}-train.jsonl`);
    const heldFile = join(OUT, 'data', `${t}-valid-${examples}.jsonl`);
    writeFileSync(trainFile, lines(s.train));
    writeFileSync(heldFile, lines(s.heldOut.slice(0, examples)));
    const opts = { tokenizer, format: 'chat' as const, cacheDir: false as const };
    const train = (await loadDataset(trainFile, { ...opts, seqLen: T, onError: 'skip' })).train; // a few have an empty output
    domains.push({ name: t, rows: new DatasetRows(train, seed) });
    held[t] = datasetBatches((await loadDataset(heldFile, { ...opts, seqLen: SEQ_LEN[t] })).train, B);
  }
  return { model, tokenizer, held, domains };
}

/** Held-out loss per task, SST-2 accuracy (greedy first answer token) and the routing's effective support size. */
async function evaluate(c: Ctx, mixture: MixtureModel) {
  const loss = {} as Record<PoolTask, number>;
  let ess = 0,
    essRouter = 0,
    sst2Accuracy = 0;
  for (const t of POOL_TASKS) {
    const e = await evaluateMixture(c.model, mixture, c.held[t], B, SEQ_LEN[t], { firstTokens: t === 'sst2' });
    loss[t] = e.loss;
    ess += e.essWeights / POOL_TASKS.length;
    essRouter += e.essRouter / POOL_TASKS.length;
    if (e.firstTokens) sst2Accuracy = sst2Score(c, c.held[t], e.firstTokens);
  }
  return { loss, ess, essRouter, sst2Accuracy };
}

/** Each real row's label is its decoded answer tokens; the greedy token counts by the pool table's prefix rule. */
function sst2Score(c: Ctx, batches: LmBatch[], first: number[]): number {
  const T2 = SEQ_LEN.sst2;
  let right = 0,
    rows = 0;
  batches.forEach((b, i) => {
    for (let j = 0; j < B; j++) {
      const ids = [...b.labels.subarray(j * T2, (j + 1) * T2)].filter((y) => y !== BigInt(IGNORE_INDEX)).map(Number);
      if (ids.length === 0) continue; // a filler row
      const answer = c.tokenizer.decode(ids, { skipSpecialTokens: true }).trim();
      const label = SST2_LABELS.find((l) => answer === l);
      if (!label) throw new Error(`smollm2-mixtures: an SST-2 held-out answer reads ${JSON.stringify(answer)}`);
      rows++;
      if (firstTokenCorrect(c.tokenizer.decode([first[i * B + j]]), label)) right++;
    }
  });
  return right / rows;
}

async function runRow(
  c: Ctx,
  done: Record<string, Row>,
  name: string,
  mixture: MixtureModel,
  train: { steps: number; hardSteps: number; routerLrRatio?: number } | null,
) {
  if (name in done && !flags.redo) return console.error(`${name}: already in ${resultsFile()}`);
  const t0 = performance.now();
  if (train)
    await trainMixture({
      model: c.model,
      mixture,
      domains: c.domains,
      ...train,
      batch: B,
      seqLen: T,
      lr,
      seed,
      onStep: (s) =>
        console.error(`  ${name} ${s.stage} step ${s.step}: ce ${s.ce.toFixed(4)} loss ${s.loss.toFixed(4)}`),
    });
  const seconds = train ? (performance.now() - t0) / 1000 : 0;
  if (train) await mixture.save(join(OUT, name.replace(/[^A-Za-z0-9.-]+/g, '-')), MODEL);
  const e = await evaluate(c, mixture);
  const setup = { ...mixture.config, train, B, T, lr, seed };
  const activated = name === 'base' ? 0 : mixture.activatedParams(); // the base row's experts are all zero
  const row: Row = { activated, seconds, ...e, setup };
  Object.assign(done, readResults(), { [name]: row }); // re-read: a side-by-side phase keeps its rows
  writeFileSync(resultsFile(), `${JSON.stringify(done, null, 2)}\n`);
  console.error(
    `${name}: ${JSON.stringify({ ...row, setup: undefined })} (${((performance.now() - t0) / 1000).toFixed(0)} s)`,
  );
}

const make = (c: Ctx, cfg: Record<string, unknown>, name: string) =>
  MixtureModel.create(parseMixtureConfig(cfg, name), c.model.modules());

async function own(c: Ctx) {
  const done = readResults();
  const single = {
    method: 'lora_mixer',
    target_modules: ATTN,
    num_experts: 1,
    r: k * r,
    top_k: 1,
    lora_alpha: 2 * k * r,
  };
  await runRow(c, done, 'base', make(c, single, 'base'), null);
  await runRow(c, done, `LoRA r${k * r} on attention, mixed tasks`, make(c, single, 'single'), {
    steps: 0,
    hardSteps: steps,
  });
  const sign = flags['entropy-sign'];
  const mixer = { method: 'lora_mixer', target_modules: ATTN, num_experts: E, r, top_k: k, lora_alpha: 2 * r };
  await runRow(
    c,
    done,
    `LoRA-Mixer E${E} r${r} K${k} on attention, entropy ${sign}`,
    make(c, { ...mixer, entropy_sign: sign }, 'mixer'),
    { steps: steps - Math.floor(steps / 2), hardSteps: Math.floor(steps / 2) },
  );
}

async function pool(c: Ctx) {
  if (!existsSync(POOL_READY)) throw new Error(`smollm2-mixtures pool: ${POOL_READY} does not exist yet`);
  const done = readResults();
  const dirs = POOL_TASKS.map((t) => join(POOL, t, 'run', 'final'));
  const R = 8; // the pool adapters' rank
  for (const [i, t] of POOL_TASKS.entries()) {
    const one = make(
      c,
      { method: 'remix', target_modules: ATTN, num_experts: 1, r: R, top_k: 1, lora_alpha: 2 * R },
      t,
    );
    await one.plugLoraFolders([dirs[i]]);
    await runRow(c, done, `pool LoRA ${t}`, one, null);
  }
  const remix = (topK: number) => ({
    method: 'remix',
    target_modules: ATTN,
    num_experts: E,
    r: R,
    top_k: topK,
    lora_alpha: 2 * topK * R,
    samples: Number(flags.samples),
    train_experts: false,
  });
  const mean = make(c, remix(E), 'mean');
  await mean.plugLoraFolders(dirs);
  await runRow(c, done, `mean of the ${E} pool LoRAs (ReMix k = n)`, mean, null);
  const routed = make(c, remix(k), 'remix');
  await routed.plugLoraFolders(dirs);
  await runRow(c, done, `ReMix k${k} of the ${E} pool LoRAs, untrained router`, routed, null);
  await runRow(
    c,
    done,
    `ReMix k${k} of the ${E} pool LoRAs, router by RLOO (M ${flags.samples}, ${steps} steps)`,
    routed,
    {
      steps,
      hardSteps: 0,
    },
  );
}

function table() {
  const rows = readResults();
  // table order: the base, the rows trained here, the pool's adapters (then the oracle), the mixtures over them
  const order = ['base', 'LoRA r', 'LoRA-Mixer', 'pool LoRA', 'mean', 'ReMix'];
  const rank = (n: string) => order.findIndex((p) => n.startsWith(p));
  const names = Object.keys(rows).sort((a, b) => rank(a) - rank(b));
  const head = `| run | activated | ${POOL_TASKS.join(' | ')} | mean | SST-2 acc | train s | ESS weights | ESS router |`;
  const rule = `|---|---:|${POOL_TASKS.map(() => '---:').join('|')}|---:|---:|---:|---:|---:|`;
  const pools = names.filter((n) => n.startsWith('pool LoRA '));
  const lines = names.map((n) => {
    const x = rows[n];
    const mean = POOL_TASKS.reduce((s, t) => s + x.loss[t], 0) / POOL_TASKS.length;
    const cells = [...POOL_TASKS.map((t) => x.loss[t].toFixed(4)), mean.toFixed(4), x.sst2Accuracy.toFixed(3)];
    const ess = (v: number) => (x.activated && v ? v.toFixed(2) : '—');
    return `| ${n} | ${x.activated} | ${cells.join(' | ')} | ${x.seconds.toFixed(0)} | ${ess(x.ess)} | ${ess(x.essRouter)} |`;
  });
  if (pools.length === POOL_TASKS.length) {
    const at = names.indexOf(pools[pools.length - 1]) + 1;
    // the oracle: each task's best pool adapter (a choice made on the held-out chats themselves)
    const best = POOL_TASKS.map((t) => Math.min(...pools.map((n) => rows[n].loss[t])));
    const mean = best.reduce((a, b) => a + b, 0) / best.length;
    lines.splice(
      at,
      0,
      `| best single pool LoRA per task (oracle) | ${rows[pools[0]].activated} | ${best.map((v) => v.toFixed(4)).join(' | ')} | ${mean.toFixed(4)} | ${Math.max(...pools.map((n) => rows[n].sst2Accuracy)).toFixed(3)} | — | — | — |`,
    );
  }
  console.log([head, rule, ...lines].join('\n'));
}

const phase = positionals[0];
try {
  if (phase === 'table') table();
  else if (phase === 'own' || phase === 'pool') {
    const c = await setup();
    try {
      await (phase === 'own' ? own(c) : pool(c));
    } finally {
      await c.model.close();
    }
    table();
  } else {
    console.error('usage: smollm2-mixtures.ts own | pool | table [--steps N] [--examples N] (see the file header)');
    process.exitCode = 2;
  }
} finally {
  await shutdownRuntime();
}
