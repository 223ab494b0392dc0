/**
 * Pretrains the demo base model (models/demo-base/) from scratch with lorakit's own engine: a small byte-level
 * LlamaForCausalLM (src/demo/base.ts) on the Brown corpus's non-fiction genres, seq len 256, AdamW with warmup and
 * cosine decay, each step one ONNX graph on onnxruntime-node. Checkpoints (parameters, AdamW state, data RNG) are
 * written atomically every few hundred steps to runs/pretrain-demo/, and `--resume` continues from the last one.
 * At the end it evaluates train and held-out loss and writes the Hugging Face folder with its model card (the run's
 * numbers are also kept in runs/pretrain-demo/stats.json; `--card-only` rewrites the card from them).
 *
 *   node --import tsx scripts/pretrain-demo.ts [--minutes 30] [--steps N] [--seed 1] [--resume]
 *     [--hidden 256 --intermediate 688 --layers 4 --heads 4 --kv-heads 2 --out DIR --ckpt DIR]
 *
 * The shape flags make a sibling base of the same family on the same corpus (the transfer work's second base:
 * `--hidden 128 --intermediate 344 --heads 2 --kv-heads 1 --out models/demo-base-128 --ckpt runs/pretrain-demo-128`).
 *
 * With --minutes (default) the cosine decay follows wall time and the run stops when the budget is spent, however
 * fast the shared machine is; with --steps it follows steps and the run is deterministic. Not here: the model's
 * definition (base.ts),
 * the graphs (lm.ts), the data (brown.ts, data.ts).
 */
import { cpus } from 'node:os';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { SafetensorsFile, writeFileAtomic, writeSafetensors } from '../src/io/index.ts';
import { familyOf, memoryContext } from '../src/models/index.ts';
import { adamw } from '../src/optim/index.ts';
import { shutdownRuntime } from '../src/runtime/index.ts';
import { NON_FICTION_GENRES, byteCount, readBrown, splitBrown } from '../src/demo/brown.ts';
import {
  DEMO_BASE_DIR,
  DEMO_SEQ_LEN,
  DEMO_SHAPE,
  type DemoShape,
  type PretrainStats,
  demoConfig,
  demoModelCard,
  initDemoWeights,
  writeDemoModel,
} from '../src/demo/base.ts';
import { WindowSampler, evalBatches, tokenStream } from '../src/demo/data.ts';
import { type ContextFactory, LmEvaluator, compileTrainStep, warmupCosine } from '../src/demo/lm.ts';

const { values: args } = parseArgs({
  options: {
    minutes: { type: 'string', default: '30' },
    steps: { type: 'string' },
    batch: { type: 'string', default: '8' },
    lr: { type: 'string', default: '2e-3' },
    warmup: { type: 'string', default: '100' },
    seed: { type: 'string', default: '1' },
    'eval-every': { type: 'string', default: '250' },
    'ckpt-every': { type: 'string', default: '200' },
    out: { type: 'string', default: DEMO_BASE_DIR },
    ckpt: { type: 'string', default: 'runs/pretrain-demo' },
    resume: { type: 'boolean', default: false },
    'final-windows': { type: 'string' }, // cap on final evaluation windows (smoke runs); default: every held-out window
    'card-only': { type: 'boolean', default: false }, // rewrite README.md from the finished run's stats.json, no training
    hidden: { type: 'string', default: String(DEMO_SHAPE.hidden_size) },
    intermediate: { type: 'string', default: String(DEMO_SHAPE.intermediate_size) },
    layers: { type: 'string', default: String(DEMO_SHAPE.num_hidden_layers) },
    heads: { type: 'string', default: String(DEMO_SHAPE.num_attention_heads) },
    'kv-heads': { type: 'string', default: String(DEMO_SHAPE.num_key_value_heads) },
  },
});
const shape: DemoShape = {
  hidden_size: Number(args.hidden),
  intermediate_size: Number(args.intermediate),
  num_hidden_layers: Number(args.layers),
  num_attention_heads: Number(args.heads),
  num_key_value_heads: Number(args['kv-heads']),
};
const modelName = args.out.replace(/\/+$/, '').split('/').pop()!;
const B = Number(args.batch),
  T = DEMO_SEQ_LEN,
  LR = Number(args.lr),
  WARMUP = Number(args.warmup),
  SEED = Number(args.seed);
const EVAL_EVERY = Number(args['eval-every']),
  CKPT_EVERY = Number(args['ckpt-every']);
const log = (s: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${s}`);

if (args['card-only']) {
  const stats = JSON.parse(readFileSync(join(args.ckpt, 'stats.json'), 'utf8')) as PretrainStats;
  await writeFileAtomic(join(args.out, 'README.md'), demoModelCard(stats, shape, modelName));
  log(`rewrote ${join(args.out, 'README.md')} from ${join(args.ckpt, 'stats.json')}`);
  process.exit(0);
}

// ---- data: non-fiction train / held-out files, as byte streams
const t0 = performance.now();
const split = splitBrown(readBrown({ side: 'nonfiction' }), 'nonfiction');
const trainStream = tokenStream(split.train),
  heldStream = tokenStream(split.heldOut);
log(
  `non-fiction: ${split.train.length} train files (${byteCount(split.train)} bytes), ${split.heldOut.length} held ` +
    `out (${byteCount(split.heldOut)} bytes)`,
);
const heldMonitor = evalBatches(heldStream, T, B, 64); // fixed subset, evaluated during training
const unigram = unigramLoss(trainStream, heldStream);
log(`unigram byte model, held out: ${unigram.toFixed(4)} nats/byte`);

// ---- model: every weight is a trainable graph input
const config = demoConfig(shape);
const make: ContextFactory = (g) => {
  const ctx = memoryContext(config, g, {
    trainable: familyOf(config)
      .parameters(config)
      .map((p) => p.name),
  });
  return { ctx, trainable: () => ctx.weights.inputs };
};
let weights = initDemoWeights(config, SEED);
const params = [...weights.values()].reduce((s, w) => s + w.length, 0);
log(`model: ${params} parameters`);
const runner = await compileTrainStep(
  make,
  {
    batch: B,
    seqLen: T,
    optimizer: adamw({ beta1: 0.9, beta2: 0.95, eps: 1e-8 }),
    clipNorm: 1.0,
    groups: (tr) => [
      { params: [...tr.values()].filter((t) => t.rank === 2), weightDecay: 0.1 },
      { params: [...tr.values()].filter((t) => t.rank === 1), weightDecay: 0 },
    ],
  },
  weights,
);
const evaluator = await LmEvaluator.create(make, B, T);
const sampler = new WindowSampler(trainStream, T, SEED);

// ---- resume
interface State {
  step: number;
  totalSteps: number | null;
  elapsedMs: number;
  warmupMs: number;
  curve: { step: number; heldOut: number }[];
  argv: string[];
}
const statePath = join(args.ckpt, 'state.json'),
  ckptPath = join(args.ckpt, 'checkpoint.safetensors');
let state: State = {
  step: 0,
  totalSteps: args.steps ? Number(args.steps) : null,
  elapsedMs: 0,
  warmupMs: 0,
  curve: [],
  argv: process.argv.slice(2),
};
if (args.resume && existsSync(statePath)) {
  state = JSON.parse(readFileSync(statePath, 'utf8')) as State;
  if (args.steps) state.totalSteps = Number(args.steps); // a resumed run may be given a new length
  const st = await SafetensorsFile.open(ckptPath);
  for (const name of runner.values.keys()) runner.values.set(name, await st.readAs(name, 'f32'));
  await st.close();
  runner.stepCount = state.step;
  log(`resumed at step ${state.step} (${(state.elapsedMs / 60000).toFixed(1)} min done)`);
}

async function checkpoint(): Promise<void> {
  await mkdir(args.ckpt, { recursive: true });
  const tensors = [...runner.values].map(([name, data]) => ({
    name,
    dtype: 'F32' as const,
    shape: [data.length],
    data,
  }));
  await writeSafetensors(ckptPath, tensors);
  await writeFileAtomic(statePath, JSON.stringify(state, null, 1));
}

const currentWeights = () => new Map([...weights.keys()].map((k) => [k, runner.param(k)]));
const budgetMs = Number(args.minutes) * 60_000;
const timed = state.totalSteps === null;
const startWall = performance.now() - state.elapsedMs;
let window: number[] = [];
log(
  `training: batch ${B} x ${T}, lr ${LR}, warmup ${WARMUP}, ` +
    `${timed ? `${args.minutes} minutes` : `${state.totalSteps} steps`}; setup ` +
    `${((performance.now() - t0) / 1000).toFixed(1)} s`,
);
while (timed ? state.elapsedMs < budgetMs : state.step < state.totalSteps!) {
  // With --minutes the cosine runs over wall time (the machine is shared, so speed varies); with --steps, over steps.
  if (state.step === WARMUP) state.warmupMs = state.elapsedMs;
  const lr =
    LR *
    (timed && state.step >= WARMUP
      ? cosineAt((state.elapsedMs - state.warmupMs) / (budgetMs - state.warmupMs))
      : warmupCosine(state.step, state.totalSteps ?? WARMUP, WARMUP));
  const batch = sampler.batch(state.step, B);
  const m = await runner.step({ input_ids: batch.inputIds, labels: batch.labels }, lr);
  if (!Number.isFinite(m.loss)) throw new Error(`pretrain: loss is ${m.loss} at step ${state.step + 1}; lower --lr`);
  state.step++;
  window.push(m.loss);
  state.elapsedMs = performance.now() - startWall;
  if (state.step % 10 === 0) {
    const avg = window.reduce((a, b) => a + b, 0) / window.length;
    const tokS = (state.step * B * T) / (state.elapsedMs / 1000);
    const where = timed
      ? `${(state.elapsedMs / 60000).toFixed(1)}/${args.minutes} min`
      : `${state.step}/${state.totalSteps}`;
    log(
      `step ${state.step}  loss ${avg.toFixed(4)}  lr ${lr.toExponential(2)}  gnorm ${m.grad_norm.toFixed(3)}  ` +
        `${tokS.toFixed(0)} tok/s  ${where}`,
    );
    window = [];
  }
  const last = timed ? state.elapsedMs >= budgetMs : state.step === state.totalSteps;
  if (state.step % EVAL_EVERY === 0 || last) {
    const held = await evaluator.loss(heldMonitor, currentWeights());
    state.curve.push({ step: state.step, heldOut: held });
    log(`step ${state.step}: held-out loss ${held.toFixed(4)} nats/byte (${(held / Math.LN2).toFixed(3)} bits/byte)`);
  }
  if (state.step % CKPT_EVERY === 0) await checkpoint();
}
await checkpoint();

// ---- final evaluation and the model folder
weights = currentWeights();
log('final evaluation: every held-out window, and 512 fixed train windows');
const heldAll = evalBatches(heldStream, T, B, args['final-windows'] ? Number(args['final-windows']) : Infinity);
const heldOutLoss = await evaluator.loss(heldAll, weights);
const trainLoss = await evaluator.loss(evalBatches(trainStream, T, B, Math.min(512, heldAll.length * B)), weights);
const wallSeconds = (performance.now() - startWall) / 1000;
log(
  `train loss ${trainLoss.toFixed(4)}, held-out loss ${heldOutLoss.toFixed(4)} nats/byte (unigram ` +
    `${unigram.toFixed(4)}), ${(wallSeconds / 60).toFixed(1)} min`,
);
const stats: PretrainStats = {
  command: [state.argv, ...(args.resume ? [process.argv.slice(2)] : [])]
    .map((a) => `node --import tsx scripts/pretrain-demo.ts ${a.join(' ')}`.trim())
    .join('\n'),
  schedule: timed
    ? `cosine over the ${args.minutes}-minute wall-clock budget (the step count follows the machine's speed)`
    : `cosine over ${state.totalSteps} steps`,
  params,
  seed: SEED,
  steps: state.step,
  batch: B,
  seqLen: T,
  lr: LR,
  warmup: WARMUP,
  tokensSeen: state.step * B * T,
  wallSeconds,
  cores: cpus().length,
  data: {
    genres: NON_FICTION_GENRES,
    trainFiles: split.train.length,
    trainBytes: byteCount(split.train),
    heldOutFiles: split.heldOut.length,
    heldOutBytes: byteCount(split.heldOut),
    heldOutIds: split.heldOut.map((f) => f.id),
  },
  trainLoss,
  heldOutLoss,
  unigramLoss: unigram,
  curve: state.curve,
};
await writeFileAtomic(join(args.ckpt, 'stats.json'), JSON.stringify(stats, null, 1));
await writeDemoModel(args.out, config, weights, demoModelCard(stats, shape, modelName), shape);
log(`wrote ${args.out}`);
await shutdownRuntime();

/** Cosine decay from 1 to 0.1 over progress p in [0, 1]. */
function cosineAt(p: number): number {
  return 0.1 + 0.9 * 0.5 * (1 + Math.cos(Math.PI * Math.min(1, Math.max(0, p))));
}

/** Cross-entropy (nats/byte) on `held` of a unigram byte model fitted on `train` (add-one smoothing over 256 bytes). */
function unigramLoss(train: Uint16Array, held: Uint16Array): number {
  const counts = new Float64Array(256).fill(1);
  let n = 256;
  for (const t of train)
    if (t < 256) {
      counts[t]++;
      n++;
    }
  let sum = 0,
    m = 0;
  for (const t of held)
    if (t < 256) {
      sum -= Math.log(counts[t] / n);
      m++;
    }
  return sum / m;
}
