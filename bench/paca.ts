/**
 * PaCA against LoRA at the same trainable-parameter count: the time of one training step (`StepEngine.run`, the
 * one-graph step with AdamW) and the memory it needs, on the demo base model (models/demo-base: 4 Llama blocks,
 * width 256, MLP 688, 2 kv heads; all 7 projections adapted). The paper claims PaCA trains faster and with less
 * memory than LoRA (22% less time, 16% less memory on LLaMA, spec methods-a §13); this measures what lorakit's PaCA
 * (y = base(x) + x[.., idx]·(s·P − W0[:, idx])ᵀ, one gathered [.., r] product) gives against its LoRA here.
 *
 * Counts match layer by layer: LoRA r_L costs r_L·(in + out) per layer, PaCA r·out, so PaCA gets
 * r = round(r_L·(in + out)/out) per projection (rank_pattern); the table prints both totals.
 * Each measurement runs in a child process of its own (so its peak RSS is its own), variants alternating, `--rounds`
 * times; a row is the median over rounds. step = median ms of `--steps` steps after 3 untimed; rss = the process's
 * peak resident memory; step rss = how much the peak grew during the steps (the step's activations, gradients and
 * workspace beyond what compiling the graph already took). A script, not a test: it prints a table, writes nothing.
 *
 *   node --import tsx bench/paca.ts [--rank 8] [--batch 4] [--seqs 128,256] [--steps 20] [--rounds 3]
 */
import { spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { Rng } from '../src/linalg/index.ts';
import { loadModel } from '../src/models/index.ts';
import { adamw } from '../src/optim/index.ts';
import { adaptable, PeftModel } from '../src/peft/index.ts';
import { shutdownRuntime } from '../src/runtime/index.ts';
import { causalLmTask, StepEngine } from '../src/train/index.ts';
import { TokenDataset } from '../src/train/data/index.ts';
import { machine, table } from './common.ts';

const { values: args } = parseArgs({
  options: {
    rank: { type: 'string', default: '8' },
    batch: { type: 'string', default: '4' },
    seqs: { type: 'string', default: '128,256' },
    steps: { type: 'string', default: '20' },
    rounds: { type: 'string', default: '3' },
    child: { type: 'string' }, // "<variant>,<seq>": measure one configuration and print one JSON line
  },
});
const RANK = Number(args.rank),
  BATCH = Number(args.batch),
  STEPS = Number(args.steps);

const TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
/** in, out of each projection of the demo base. */
const SHAPES: Record<string, [number, number]> = {
  q_proj: [256, 256],
  k_proj: [256, 128],
  v_proj: [256, 128],
  o_proj: [256, 256],
  gate_proj: [256, 688],
  up_proj: [256, 688],
  down_proj: [688, 256],
};

/** The adapter configs compared: LoRA of rank RANK, and PaCA with each layer's LoRA count. */
function configOf(variant: string): Record<string, unknown> {
  if (variant === 'lora') return { r: RANK, lora_alpha: 2 * RANK, target_modules: TARGETS };
  const ranks = Object.fromEntries(Object.entries(SHAPES).map(([k, [i, o]]) => [k, Math.round((RANK * (i + o)) / o)]));
  return { peft_type: 'PACA', r: RANK, paca_alpha: 2 * RANK, rank_pattern: ranks, target_modules: TARGETS };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** One configuration, in this process: trainable count, median step ms, peak RSS before and after the steps (MB). */
async function child(variant: string, seq: number) {
  const model = await loadModel('models/demo-base');
  const r = new Rng(3);
  const ids = Int32Array.from({ length: BATCH * seq }, () => Math.floor(r.next() * 256));
  const data = new TokenDataset({ seqLen: seq, ids, labels: ids, lengths: new Uint32Array(BATCH).fill(seq) }, 258);
  const batch = data.batches({ batchSize: BATCH, seed: 0, start: { epoch: 0, index: 0 } }).next().value!;
  const feeds = {
    input_ids: { data: batch.inputIds, shape: [BATCH, seq] },
    labels: { data: batch.labels, shape: [BATCH, seq] },
    attention_mask: { data: batch.attentionMask, shape: [BATCH, seq] },
  };
  const peft = new PeftModel(adaptable(model));
  await peft.addAdapter('default', configOf(variant), { seed: 1 });
  const count = [...peft.trainableValues('default').values()].reduce((n, v) => n + v.length, 0);
  const task = causalLmTask({ model, peft, adapter: 'default', train: data, batchSize: BATCH });
  const params = (await task.initialParams(new Rng(0))) as Record<string, Float32Array>;
  const engine = await StepEngine.create(task, { optimizer: adamw(), accumulation: 1, weightDecay: 0 }, params);
  const rssMb = () => process.resourceUsage().maxRSS / 1024;
  const times: number[] = [];
  let before = 0;
  for (let i = 1; i <= STEPS + 3; i++) {
    if (i === 2) before = rssMb(); // after the first run (sessions are created then)
    const t = performance.now();
    await engine.run([{ feeds: feeds as never, weight: batch.lossTokens }], 1e-3);
    if (i > 3) times.push(performance.now() - t);
  }
  const after = rssMb();
  await engine.dispose();
  await model.close();
  await shutdownRuntime();
  console.log(JSON.stringify({ count, step: median(times), rss: after, stepRss: after - before }));
}

async function main() {
  const seqs = args.seqs!.split(',').map(Number);
  const results = new Map<string, { count: number; step: number[]; rss: number[]; stepRss: number[] }>();
  for (let round = 0; round < Number(args.rounds); round++) {
    for (const seq of seqs) {
      for (const variant of round % 2 ? ['paca', 'lora'] : ['lora', 'paca']) {
        const argv = [
          ...['--import', 'tsx', 'bench/paca.ts', '--child', `${variant},${seq}`],
          ...['--rank', String(RANK), '--batch', String(BATCH), '--steps', String(STEPS)],
        ];
        const out = spawnSync(process.execPath, argv, { encoding: 'utf8' });
        if (out.status !== 0) throw new Error(`child ${variant},${seq} failed:\n${out.stderr}`);
        const m: { count: number; step: number; rss: number; stepRss: number } = JSON.parse(
          out.stdout.trim().split('\n').pop()!,
        );
        const key = `${variant},${seq}`;
        const acc = results.get(key) ?? {
          count: m.count as number,
          step: [] as number[],
          rss: [] as number[],
          stepRss: [] as number[],
        };
        acc.step.push(m.step);
        acc.rss.push(m.rss);
        acc.stepRss.push(m.stepRss);
        results.set(key, acc);
      }
    }
  }
  const mc = machine();
  console.log(`${mc.cpu}, ${mc.cores} cores, load before ${mc.loadBefore.join(' ')}`);
  console.log(`demo-base, all 7 projections, batch ${BATCH}, LoRA r ${RANK}; median over ${args.rounds} rounds`);
  const rows = [...results].map(([key, v]) => {
    const [variant, seq] = key.split(',');
    return [
      variant,
      seq,
      v.count.toLocaleString('en-US'),
      median(v.step).toFixed(1),
      median(v.rss).toFixed(0),
      median(v.stepRss).toFixed(0),
    ];
  });
  console.log(table([['method', 'seq', 'trainable', 'step ms', 'peak rss MB', 'step rss MB'], ...rows]));
}

if (args.child) {
  const [variant, seq] = args.child.split(',');
  await child(variant, Number(seq));
} else await main();
