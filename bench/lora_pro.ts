/**
 * LoRA-Pro's cost per optimizer step against plain LoRA with AdamW, on the same model, data, rank and seed: the
 * adapter contract's toy model (test/peft/toy.ts, r 2) and the demo base model (models/demo-base, 4 Llama blocks,
 * width 256, q/k/v/o/gate/up/down). Times `StepEngine.run` (the one-graph step) and, separately, the host step inputs
 * (LoRA-Pro's r×r eigendecompositions, computed before each step), and counts the optimizer or rule state the step
 * carries. A script, not a test: it prints a table and writes nothing.
 *
 *   node --import tsx bench/lora_pro.ts [--steps N] [--rank R] [--batch B] [--seq T] [--only toy|demo]
 */
import { parseArgs } from 'node:util';
import { Rng } from '../src/linalg/index.ts';
import { loadModel } from '../src/models/index.ts';
import { adamw } from '../src/optim/index.ts';
import { adaptable, PeftModel } from '../src/peft/index.ts';
import { shutdownRuntime } from '../src/runtime/index.ts';
import { causalLmTask, StepEngine, type TrainTask } from '../src/train/index.ts';
import { TokenDataset } from '../src/train/data/index.ts';
import { toyBase, toyTask } from '../test/peft/toy.ts';
import { machine, table } from './common.ts';

const { values: args } = parseArgs({
  options: {
    steps: { type: 'string', default: '20' },
    rank: { type: 'string', default: '8' },
    batch: { type: 'string', default: '4' },
    seq: { type: 'string', default: '128' },
    only: { type: 'string' },
  },
});
const STEPS = Number(args.steps),
  RANK = Number(args.rank),
  BATCH = Number(args.batch),
  SEQ = Number(args.seq);

const VARIANTS: [string, Record<string, unknown>][] = [
  ['LoRA + AdamW', {}],
  ['LoRA-Pro full', { lora_pro: { mode: 'full' } }],
  ['LoRA-Pro lowrank', { lora_pro: { mode: 'lowrank' } }],
];

interface Row {
  model: string;
  variant: string;
  step: string;
  host: string;
  state: string;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Median ms of the step graph and of the host step inputs over STEPS steps (after 2 untimed ones). */
async function measure(task: TrainTask, feeds: () => Record<string, unknown>, weight: number) {
  const engine = await StepEngine.create(
    task,
    { optimizer: adamw(), accumulation: 1, weightDecay: 0 },
    (await task.initialParams(new Rng(0))) as Record<string, Float32Array>,
  );
  const rng = new Rng(1);
  const [stepMs, hostMs] = [[] as number[], [] as number[]];
  for (let i = 1; i <= STEPS + 2; i++) {
    let t = performance.now();
    const inputs = task.stepInputs?.({ step: i, micro: 0, rng, params: engine.params() }) ?? {};
    const host = performance.now() - t;
    t = performance.now();
    await engine.run([{ feeds: { ...feeds(), ...inputs } as never, weight }], 1e-3);
    if (i > 2) [stepMs, hostMs].forEach((xs, k) => xs.push(k ? host : performance.now() - t));
  }
  const state = [...engine.optimizerState().values()].reduce((s, v) => s + v.length, 0);
  await engine.dispose();
  return { step: median(stepMs), host: median(hostMs), state };
}

async function main() {
  const rows: Row[] = [];
  const add = (model: string, variant: string, m: Awaited<ReturnType<typeof measure>>) =>
    rows.push({
      model,
      variant,
      step: m.step.toFixed(2),
      host: m.host.toFixed(3),
      state: m.state.toLocaleString('en-US'),
    });

  for (const [variant, extra] of args.only === 'demo' ? [] : VARIANTS) {
    const peft = new PeftModel(toyBase());
    await peft.addAdapter('default', { r: 2, lora_alpha: 4, target_modules: ['q_proj', 'c_fc'], ...extra });
    const task = toyTask(peft, 'default');
    const r = new Rng(5);
    const ids = BigInt64Array.from({ length: 8 }, () => BigInt(Math.floor(r.next() * 11)));
    add('toy (r 2)', variant, await measure(task, () => ({ ids, labels: ids }), 8));
  }

  const demo = args.only === 'toy' ? [] : VARIANTS;
  const model = await loadModel('models/demo-base');
  const r = new Rng(3);
  const n = BATCH * SEQ;
  const ids = Int32Array.from({ length: n }, () => Math.floor(r.next() * 256));
  const rowsSet = { seqLen: SEQ, ids, labels: ids, lengths: new Uint32Array(BATCH).fill(SEQ) };
  const data = new TokenDataset(rowsSet, 258);
  const batch = data.batches({ batchSize: BATCH, seed: 0, start: { epoch: 0, index: 0 } }).next().value!; // endless
  const feeds = {
    input_ids: { data: batch.inputIds, shape: [BATCH, SEQ] },
    labels: { data: batch.labels, shape: [BATCH, SEQ] },
    attention_mask: { data: batch.attentionMask, shape: [BATCH, SEQ] },
  };
  for (const [variant, extra] of demo) {
    const peft = new PeftModel(adaptable(model));
    const targets = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
    await peft.addAdapter('default', { r: RANK, lora_alpha: 2 * RANK, target_modules: targets, ...extra });
    const task = causalLmTask({ model, peft, adapter: 'default', train: data, batchSize: BATCH });
    add(`demo-base (r ${RANK}, ${BATCH}×${SEQ})`, variant, await measure(task, () => feeds, batch.lossTokens));
  }

  const m = machine();
  console.log(`${m.cpu}, ${m.cores} cores, load ${m.loadBefore.join(' ')}`);
  console.log(`median of ${STEPS} steps after 2 untimed; step = StepEngine.run, host = step inputs on the host`);
  const header = ['model', 'variant', 'step ms', 'host ms', 'state floats'];
  console.log(table([header, ...rows.map((x) => [x.model, x.variant, x.step, x.host, x.state])]));
  await shutdownRuntime();
}

await main();
