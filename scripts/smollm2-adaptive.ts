/**
 * The Recycling study (spec methods-c §2) on the real SmolLM2 pool (issue 16, part 3): leave-one-out targets. For a
 * target task, 100 target chats (80 train, every fifth of the 100 for validation) are cut from its training split
 * AFTER the first 2,000 records that the pool's adapter was trained from (so disjoint from them; Code Alpaca has no
 * such records and is refused), and the held-out loss (nats per assistant token) is measured on the first
 * `--test-chats` of the task's fixed held-out chats (the pool table's). Each method runs on three pools: the other
 * three task adapters (recycled), the same with random matrices of each factor's std (the study's control), and all
 * four (the target's own pool adapter included). Rows also hold the base, the target's own pool adapter alone and a
 * fresh LoRA trained on the 80 chats (the pool's run settings). Results go to runs/smollm2-adaptive/<target>.json
 * after every cell; the Markdown table goes to stdout.
 *
 * `--seed N` drives every random choice: the random pool's matrices, LoraHub's CMA-ES draws and the fresh LoRA's
 * init and data order. The other methods are deterministic (fixed initial coefficients, full-batch Adam in a fixed
 * order), so their cells on the recycled and + target LoRA pools do not depend on it. `--sample-block K` takes the
 * 100 target chats from records 2,000 + 100K + 1 … 2,000 + 100(K + 1) instead (the sample's own spread); the held-out
 * chats stay fixed. Seed 0 of block 0 is the published table; any other goes to
 * runs/smollm2-adaptive-seeds/<target>[-seed<N>][-block<K>].json.
 *
 *   node --import tsx scripts/smollm2-adaptive.ts [--targets sst2,alpaca] [--steps 10] [--hub-budget 12]
 *     [--hub-chats 20] [--test-chats 16] [--top-k 2] [--fresh-steps 40] [--only base,own,fresh,mean,lorahub,...]
 *     [--columns recycled,random,+ target LoRA]     # processes side by side may each take some columns
 *     [--seed 0] [--sample-block 0] [--out runs/smollm2-adaptive]
 *   node --import tsx scripts/smollm2-adaptive.ts --table            # the Markdown of the saved results only
 *   node --import tsx scripts/smollm2-adaptive.ts --table --seeds 0,1,2 [--targets alpaca]   # mean ± sd per cell
 *   node --import tsx scripts/smollm2-adaptive.ts --table --sample-blocks 0,1,2 [--targets alpaca]
 *
 * The chats are the causal-LM task's rows (the `chat` format: SmolLM2's template, loss on the assistant's tokens),
 * given to the methods by adaptive.rowBatches, so every loss here is the Trainer's eval_loss on the same chats.
 * Not here: the methods (src/adaptive/), the tasks' framing (smollm2-pool-tasks.ts), the pool (smollm2-pool.ts).
 */
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import {
  adaMerging,
  arrow,
  loraHub,
  type MethodContext,
  piTuning,
  poolFromLoras,
  type RecycledPool,
  randomPool,
  recycle,
  rowBatches,
  runCoefficientMethod,
  type TargetSet,
} from '../src/adaptive/index.ts';
import { HfTokenizer } from '../src/io/index.ts';
import { type LoadedModel, loadModel, quantizeModel } from '../src/models/index.ts';
import { compose } from '../src/peft/index.ts';
import { shutdownRuntime } from '../src/runtime/index.ts';
import { loadDataset, type TokenDataset } from '../src/train/data/index.ts';
import { loadRunConfig, runTraining } from '../src/train/index.ts';
import {
  adapterDir,
  type ChatRecord,
  MODEL,
  POOL_TASKS,
  type PoolTask,
  readTask,
  SEQ_LEN,
  SHARED_DATA,
  TRAIN_RECORDS,
} from './smollm2-pool-tasks.ts';

const RUNS = resolve(import.meta.dirname, '..', 'runs');
const METHODS = [
  'fresh',
  'own',
  'mean',
  'lorahub',
  'adamerging-task',
  'adamerging-layer',
  'pi-tuning',
  'arrow',
  'recycle',
] as const;

const { values: flags } = parseArgs({
  options: {
    targets: { type: 'string' }, // runs: sst2,alpaca when absent; --table: every target when absent
    steps: { type: 'string', default: '10' },
    'hub-budget': { type: 'string', default: '12' },
    'test-chats': { type: 'string', default: '16' },
    'top-k': { type: 'string', default: '2' },
    'hub-chats': { type: 'string', default: '20' },
    columns: { type: 'string', default: 'recycled,random,+ target LoRA' },
    'fresh-steps': { type: 'string', default: '40' },
    batch: { type: 'string', default: '4' },
    only: { type: 'string' },
    table: { type: 'boolean', default: false },
    seed: { type: 'string', default: '0' },
    'sample-block': { type: 'string', default: '0' },
    out: { type: 'string' },
    seeds: { type: 'string' },
    'sample-blocks': { type: 'string' },
  },
});
const STEPS = Number(flags.steps);
const BUDGET = Number(flags['hub-budget']);
const TEST = Number(flags['test-chats']);
const TOPK = Number(flags['top-k']);
const B = Number(flags.batch);
const HUB_CHATS = Number(flags['hub-chats']);
const SEED = Number(flags.seed);
const BLOCK = Number(flags['sample-block']);
for (const [name, v] of [
  ['--seed', SEED],
  ['--sample-block', BLOCK],
] as const)
  if (!Number.isInteger(v) || v < 0) throw new Error(`${name}: expected an integer ≥ 0, got ${v}`);

/** One run's variant: the seed of its random choices and the block of 100 target chats. */
interface Variant {
  seed: number;
  block: number;
}
/** The published table is variant (0, 0); every other variant has its own file and work folder. */
const variantName = (t: PoolTask, v: Variant) =>
  `${t}${v.seed ? `-seed${v.seed}` : ''}${v.block ? `-block${v.block}` : ''}`;
const defaultOut = (v: Variant) =>
  join(RUNS, v.seed === 0 && v.block === 0 ? 'smollm2-adaptive' : 'smollm2-adaptive-seeds');
const OUT = flags.out ? resolve(flags.out) : defaultOut({ seed: SEED, block: BLOCK });

/** One cell: held-out (test) and validation loss, wall seconds, and what the method chose. */
interface Cell {
  loss: number;
  val: number | null;
  seconds: number;
  note?: string;
}
/** A target's results: row → pool column → cell, and the settings they were run with. */
interface TargetResults {
  target: PoolTask;
  settings: Record<string, number>;
  rows: { train: number; val: number; test: number; seqLen: number };
  table: Record<string, Record<string, Cell>>;
}

const COLUMNS = ['recycled', 'random', '+ target LoRA'] as const;
const resultsFile = (t: PoolTask, v: Variant = { seed: SEED, block: BLOCK }, out = OUT) =>
  join(out, `${variantName(t, v)}.json`);

/**
 * The target's 100 chats of block K after the pool's first 2,000 training records (block 0: records 2,001–2,100):
 * 80 train, every fifth for validation.
 */
function targetChats(t: PoolTask): { train: ChatRecord[]; val: ChatRecord[]; test: ChatRecord[] } {
  const from = TRAIN_RECORDS + 100 * BLOCK;
  const split = readTask(t, SHARED_DATA, from + 100);
  const samples = split.train.slice(from);
  if (samples.length < 100)
    throw new Error(
      `${t}: only ${samples.length} training records after the first ${from}; the target samples ` +
        'would overlap the pool adapter’s training file or the held-out chats',
    );
  return {
    train: samples.filter((_, i) => i % 5 !== 4),
    val: samples.filter((_, i) => i % 5 === 4),
    test: split.heldOut.slice(0, TEST),
  };
}

const writeJsonl = (file: string, rs: object[]) =>
  writeFileSync(file, `${rs.map((r) => JSON.stringify(r)).join('\n')}\n`);

/**
 * The three sets as token rows. Rows are padded to the task's SEQ_LEN; when every row is shorter (SST-2's chats), the
 * sets are read again at the longest row rounded up to 8: right padding under causal attention changes no counted
 * term, so the losses are the same and the forward passes shorter.
 */
async function targetRows(
  dir: string,
  t: PoolTask,
  tokenizer: HfTokenizer,
): Promise<{ sets: Record<'train' | 'val' | 'test', TokenDataset>; seqLen: number }> {
  const read = async (seqLen: number) => {
    const sets = {} as Record<'train' | 'val' | 'test', TokenDataset>;
    for (const s of ['train', 'val', 'test'] as const)
      sets[s] = (
        await loadDataset(join(dir, `${s}.jsonl`), { tokenizer, seqLen, format: 'chat', cacheDir: false })
      ).train;
    return sets;
  };
  const full = await read(SEQ_LEN[t]);
  let longest = 0;
  for (const ds of Object.values(full))
    for (let r = 0; r < ds.size; r++) longest = Math.max(longest, ds.row(r).inputIds.length);
  const seqLen = Math.ceil(longest / 8) * 8;
  return seqLen < SEQ_LEN[t] ? { sets: await read(seqLen), seqLen } : { sets: full, seqLen: SEQ_LEN[t] };
}

/** The pool's run settings on the 80 training chats (a fresh LoRA: the study's "target-task LoRA"). */
async function freshLora(dir: string, seqLen: number): Promise<string> {
  const steps = Number(flags['fresh-steps']);
  const file = join(dir, 'fresh.yaml');
  writeFileSync(
    file,
    `# written by scripts/smollm2-adaptive.ts: the pool's run (smollm2-pool.ts) on the target's 80 training chats
model: ${MODEL}
quantize: int8
output_dir: fresh
data: {path: train.jsonl, format: chat, seq_len: ${seqLen}}
adapter: {target_modules: [q_proj, k_proj, v_proj, o_proj], r: 8, lora_alpha: 16, lora_dropout: 0.0}
training:
  max_steps: ${steps}
  per_device_train_batch_size: 4
  learning_rate: 1.0e-3
  lr_scheduler_type: cosine
  warmup_steps: 3
  save_steps: ${steps}
  logging_steps: 10
  seed: ${SEED}
`,
  );
  rmSync(join(dir, 'fresh'), { recursive: true, force: true });
  await runTraining(loadRunConfig(file));
  return join(dir, 'fresh', 'final');
}

async function runTarget(model: LoadedModel, tokenizer: HfTokenizer, t: PoolTask) {
  const dir = join(OUT, variantName(t, { seed: SEED, block: BLOCK }));
  mkdirSync(dir, { recursive: true });
  const chats = targetChats(t);
  for (const s of ['train', 'val', 'test'] as const) writeJsonl(join(dir, `${s}.jsonl`), chats[s]);
  const { sets, seqLen } = await targetRows(dir, t, tokenizer);
  const data: TargetSet = {
    train: rowBatches(sets.train, B),
    val: rowBatches(sets.val, B),
    test: rowBatches(sets.test, B),
  };
  const file = resultsFile(t);
  const res: TargetResults = existsSync(file)
    ? JSON.parse(readFileSync(file, 'utf8'))
    : { target: t, settings: {}, rows: {}, table: {} };
  res.settings = { steps: STEPS, hubBudget: BUDGET, hubChats: HUB_CHATS, topK: TOPK, batch: B, testChats: TEST };
  Object.assign(res.settings, { seed: SEED, sampleBlock: BLOCK });
  res.rows = { train: sets.train.size, val: sets.val.size, test: sets.test.size, seqLen };
  console.error(`${t}: ${JSON.stringify(res.rows)}`);
  const put = (row: string, col: string, c: Cell) => {
    // re-read first: processes running other columns side by side (`--columns random`) keep each other's cells
    if (existsSync(file)) res.table = JSON.parse(readFileSync(file, 'utf8')).table;
    res.table[row] ??= {};
    res.table[row][col] = c;
    writeFileSync(file, `${JSON.stringify(res, null, 2)}\n`); // after every cell: a killed run keeps what it did
    console.error(
      `${t} | ${row} | ${col}: test ${c.loss.toFixed(4)}, val ${c.val?.toFixed(4) ?? '-'} (${c.seconds.toFixed(0)} s)`,
    );
  };

  const others = POOL_TASKS.filter((x) => x !== t);
  const read = (x: PoolTask) => compose.readLora(adapterDir(x));
  const recycled = poolFromLoras(others, await Promise.all(others.map(read)));
  const pools: Record<(typeof COLUMNS)[number], RecycledPool> = {
    recycled,
    random: randomPool(recycled, SEED),
    '+ target LoRA': poolFromLoras([...POOL_TASKS], await Promise.all(POOL_TASKS.map(read))),
  };
  const only = flags.only?.split(',');
  const want = (m: string) => !only || only.includes(m);
  const fixed = (name: string, pool: RecycledPool, w: number) =>
    runCoefficientMethod(name, { model, pool, data, batch: B, seqLen }, { granularity: 'task', phi: 'linear' }, w, {
      lr: 1,
      steps: 0,
    });

  if (want('base')) {
    const r = await fixed('base', recycled, 0);
    put('base model', 'recycled', { loss: r.testLoss!, val: r.valLoss, seconds: r.seconds });
  }
  if (want('own')) {
    const r = await fixed('own', poolFromLoras([t], [await read(t)]), 1);
    put("the target's pool LoRA alone (96 other chats)", 'recycled', {
      loss: r.testLoss!,
      val: r.valLoss,
      seconds: r.seconds,
    });
  }
  if (want('fresh')) {
    const t0 = performance.now();
    const fresh = await freshLora(dir, seqLen);
    const r = await fixed('fresh', poolFromLoras(['fresh'], [await compose.readLora(fresh)]), 1);
    put(`LoRA trained on the 80 chats (${flags['fresh-steps']} steps)`, 'recycled', {
      loss: r.testLoss!,
      val: r.valLoss,
      seconds: (performance.now() - t0) / 1000,
    });
  }
  for (const col of flags.columns!.split(',') as (typeof COLUMNS)[number][]) {
    const pool = pools[col];
    if (!pool) throw new Error(`unknown column ${col}: one of ${COLUMNS.join(', ')}`);
    const ctx: MethodContext = { model, pool, data, batch: B, seqLen, log: (l) => console.error(`  ${l}`) };
    const names = (ws: ArrayLike<number>) => pool.names.map((n, i) => `${n} ${Number(ws[i]).toFixed(2)}`).join(', ');
    if (want('mean')) {
      const r = await fixed('mean', pool, 1 / pool.names.length);
      put('mean of the pool (fixed 1/n)', col, { loss: r.testLoss!, val: r.valLoss, seconds: r.seconds });
    }
    if (want('lorahub')) {
      // its search scores each candidate on the first HUB_CHATS training chats (all 80 cost too much here)
      const hubData = { ...data, train: data.train.slice(0, Math.ceil(HUB_CHATS / B)) };
      const r = await loraHub({ ...ctx, data: hubData }, { budget: BUDGET, seed: SEED });
      put(`LoraHub (CMA-ES, ${BUDGET} evaluations on ${HUB_CHATS} chats)`, col, {
        loss: r.testLoss!,
        val: r.valLoss,
        seconds: r.seconds,
        note: names(r.weights),
      });
    }
    if (want('adamerging-task')) {
      const r = await adaMerging(ctx, { granularity: 'task', steps: STEPS });
      put('AdaMerging task-wise', col, {
        loss: r.testLoss!,
        val: r.valLoss,
        seconds: r.seconds,
        note: names(r.coefficients[0]),
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
        note: r.selected.join(', '),
      });
    }
  }
}

/** The references first (processes side by side finish cells in any order), then the methods as run. */
function sortedRows<T>(table: Record<string, T>): [string, T][] {
  const refs = ['base model', "the target's pool LoRA", 'LoRA trained on'];
  const rank = (row: string) => {
    const k = refs.findIndex((p) => row.startsWith(p));
    return k < 0 ? refs.length : k;
  };
  return Object.entries(table).sort(([a], [b]) => rank(a) - rank(b));
}

const tableHead = [`| method | ${COLUMNS.join(' | ')} |`, `|---|${COLUMNS.map(() => '---:').join('|')}|`];

/** The targets named by --targets (checked), or without it: all of them for a table, sst2 and alpaca for a run. */
function targetList(absent: readonly PoolTask[]): PoolTask[] {
  const targets = flags.targets ? (flags.targets.split(',') as PoolTask[]) : [...absent];
  const bad = targets.filter((x) => !(POOL_TASKS as readonly string[]).includes(x));
  if (bad.length) throw new Error(`unknown target ${bad.join(', ')}: one of ${POOL_TASKS.join(', ')}`);
  return targets;
}
const tableTargets = () => targetList(POOL_TASKS);

/** The saved results of every target as one Markdown table per target, and the notes (weights, selections). */
function markdown(): string {
  const out: string[] = [];
  for (const t of tableTargets()) {
    if (!existsSync(resultsFile(t))) continue;
    const r: TargetResults = JSON.parse(readFileSync(resultsFile(t), 'utf8'));
    out.push(
      `**Target ${t}** (${r.rows.train} train / ${r.rows.val} validation chats, ${r.rows.test} held-out chats, ` +
        `${r.rows.seqLen} tokens per row; ${JSON.stringify(r.settings)})`,
      '',
      ...tableHead,
    );
    for (const [row, cells] of sortedRows(r.table))
      out.push(
        `| ${row} | ${COLUMNS.map((c) => (cells[c] ? `${cells[c].loss.toFixed(4)} (${cells[c].seconds.toFixed(0)} s)` : '')).join(' | ')} |`,
      );
    out.push('');
    for (const [row, cells] of Object.entries(r.table))
      for (const [c, cell] of Object.entries(cells)) if (cell.note) out.push(`- ${row}, ${c}: ${cell.note}`);
    out.push('');
  }
  return out.join('\n');
}

/** Mean and sample standard deviation (n − 1; 0 for one value). */
function meanSd(xs: readonly number[]): { mean: number; sd: number } {
  const mean = xs.reduce((a, x) => a + x, 0) / xs.length;
  const ss = xs.reduce((a, x) => a + (x - mean) ** 2, 0);
  return { mean, sd: xs.length > 1 ? Math.sqrt(ss / (xs.length - 1)) : 0 };
}

/**
 * Mean ± sd over variants (seeds or sample blocks) per cell, for every target with a result of more than one variant.
 * A cell lists how many variants it has when some lack it (e.g. a cell the seed cannot change, run once).
 */
function spreadMarkdown(variants: Variant[], what: string): string {
  const out: string[] = [];
  for (const t of tableTargets()) {
    const runs = variants
      .map((v) => ({ v, file: resultsFile(t, v, flags.out ? OUT : defaultOut(v)) }))
      .filter((x) => existsSync(x.file))
      .map((x) => ({ ...x, r: JSON.parse(readFileSync(x.file, 'utf8')) as TargetResults }));
    if (runs.length < 2) {
      if (flags.targets) console.error(`${t}: ${runs.length} of the ${what} saved, no spread to show`);
      continue;
    }
    const rowNames = new Set(runs.flatMap((x) => Object.keys(x.r.table)));
    const table: Record<string, Record<string, number[]>> = {};
    for (const row of rowNames)
      for (const c of COLUMNS)
        for (const x of runs) {
          const cell = x.r.table[row]?.[c];
          if (cell) ((table[row] ??= {})[c] ??= []).push(cell.loss);
        }
    out.push(
      `**Target ${t}**, mean ± sd over ${what} ${runs.map((x) => (what === 'seeds' ? x.v.seed : x.v.block)).join(', ')} ` +
        `(${runs.map((x) => relative(process.cwd(), x.file)).join(', ')})`,
      '',
      ...tableHead,
    );
    for (const [row, cells] of sortedRows(table))
      out.push(
        `| ${row} | ${COLUMNS.map((c) => {
          const xs = cells[c];
          if (!xs) return '';
          if (xs.length === 1) return `${xs[0].toFixed(4)} (1 run)`;
          const { mean, sd } = meanSd(xs);
          return `${mean.toFixed(4)} ± ${sd.toFixed(4)}${xs.length < runs.length ? ` (${xs.length} runs)` : ''}`;
        }).join(' | ')} |`,
      );
    out.push('');
  }
  return out.join('\n');
}

const intList = (s: string) => s.split(',').map(Number);

async function main() {
  if (flags.table) {
    if (flags.seeds)
      console.log(
        spreadMarkdown(
          intList(flags.seeds).map((seed) => ({ seed, block: BLOCK })),
          'seeds',
        ),
      );
    else if (flags['sample-blocks'])
      console.log(
        spreadMarkdown(
          intList(flags['sample-blocks']).map((block) => ({ seed: SEED, block })),
          'sample blocks',
        ),
      );
    else console.log(markdown());
    return;
  }
  const targets = targetList(['sst2', 'alpaca']);
  const unknown = (flags.only?.split(',') ?? []).filter(
    (m) => m !== 'base' && !(METHODS as readonly string[]).includes(m),
  );
  if (unknown.length) throw new Error(`unknown method ${unknown.join(', ')}: base or one of ${METHODS.join(', ')}`);
  for (const x of POOL_TASKS)
    if (!existsSync(adapterDir(x))) throw new Error(`no pool adapter ${adapterDir(x)}: run smollm2-pool.ts train ${x}`);
  const model = await quantizeModel(await loadModel(MODEL), 'int8');
  try {
    const tokenizer = await HfTokenizer.fromDir(model.dir);
    for (const t of targets) await runTarget(model, tokenizer, t);
  } finally {
    await model.close();
  }
  console.log(markdown());
}

try {
  await main();
} finally {
  await shutdownRuntime();
}
