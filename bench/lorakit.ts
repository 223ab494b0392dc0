/**
 * Runs one workload (a JSON spec from workloads.ts, argv[2]) through lorakit's public API, in this process, and
 * prints one line `RESULT {json}`. One process per workload, so VmHWM (the peak RSS; the ORT worker thread is part
 * of this process) belongs to that workload alone. The model folder must exist (models.ts writes it).
 *   train: the Trainer's own step — causalLmTask (the one causal-LM loss) → StepEngine with the Trainer's options
 *   eval:  the task's evaluation graph (same forward and loss, no backward);   gen: models/generate.ts, adapter unmerged
 *   matmul: one [n, n]·[n, n] MatMul graph (constant right operand), best of the runs: the fp32 peak through ORT
 *   gemm:   a model's Linear shapes as a step runs them, forward and backward (gemm.ts)
 */
import { readFileSync } from 'node:fs';
import { Graph } from '../src/graph/index.ts';
import { HfTokenizer } from '../src/io/index.ts';
import { Rng } from '../src/linalg/index.ts';
import { loadModel, type LoadedModel, quantizeModel } from '../src/models/index.ts';
import { generate } from '../src/models/generate.ts';
import { PeftModel, adaptable } from '../src/peft/index.ts';
import { compile, shutdownRuntime, type CompileOptions } from '../src/runtime/index.ts';
import { TokenDataset } from '../src/train/data/index.ts';
import { StepEngine, Trainer, causalLmTask, engineOptions, type TrainBatch } from '../src/train/index.ts';
import { runGemm } from './gemm.ts';
import { ensureModel } from './models.ts';
import { loraConfig, modelDims, stepFlops, type Workload } from './workloads.ts';

/** Peak resident set of this process in MB (the kernel's high-water mark). */
export function peakRssMb(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) / 1024 : process.memoryUsage().rss / 2 ** 20;
}

/** Minor page faults of this process so far (Linux /proc/self/stat field 10); 0 where there is no /proc. */
function minorFaults(): number {
  try {
    const fields = readFileSync('/proc/self/stat', 'utf8').split(') ')[1].split(' ');
    return Number(fields[7]);
  } catch {
    return 0;
  }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
};

/** Deterministic token ids in [0, vocab) for `n` positions. */
function tokens(n: number, vocab: number, seed = 7): BigInt64Array {
  const out = new BigInt64Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    out[i] = BigInt(s % vocab);
  }
  return out;
}

const vocabOf = (m: LoadedModel) => m.config.vocab_size;

/** ORT options of a workload. */
export function compileOptions(w: Workload): CompileOptions {
  return { threads: w.threads, ...(w.compile as CompileOptions | undefined) };
}

/** The Trainer's step for a LoRA workload: its task graph and engine (`lorakit train` builds the same). */
export async function trainerStep(w: Workload, model: LoadedModel, headChunkRows?: number) {
  const peft = new PeftModel(adaptable(model));
  await peft.addAdapter('default', loraConfig(w));
  const [B, T] = [w.batch, w.seq];
  const ids = Int32Array.from(tokens(B * T, vocabOf(model)), Number);
  const rows = { seqLen: T, ids, labels: ids, lengths: new Uint32Array(B).fill(T) };
  const data = new TokenDataset(rows, 0);
  const task = causalLmTask({ model, peft, adapter: 'default', train: data, eval: data, batchSize: B, headChunkRows });
  task.compileOptions = compileOptions(w);
  const options = new Trainer(task, { outputDir: 'unused', steps: 1, lr: 1e-4, weightDecay: 0.01 }).options;
  const adapterParams = [...peft.trainableValues('default').values()].reduce((a, v) => a + v.length, 0);
  return { task, options, adapterParams };
}

async function runTrainOrEval(w: Workload, t0: number) {
  const loaded = await loadModel(await ensureModel(w.model));
  const model = await quantizeModel(loaded, w.quantize ?? 'none', { head: w.quantizeHead === true });
  const { task, options, adapterParams } = await trainerStep(w, model);
  const first = (task.batches({ epoch: 0, index: 0 }) as Iterable<TrainBatch>)[Symbol.iterator]().next().value!;
  const rng = new Rng(0);
  let run: () => Promise<number>;
  if (w.kind === 'train') {
    const engine = await StepEngine.create(task, engineOptions(options), await task.initialParams(rng));
    run = async () => {
      const feeds = {
        ...first.feeds,
        ...task.stepInputs?.({ step: engine.step + 1, micro: 0, rng, params: engine.params() }),
      };
      return (await engine.run([{ feeds, weight: first.weight ?? 1 }], 1e-4)).loss;
    };
  } else {
    const params = peftParams(await task.initialParams(rng));
    run = async () => (await task.evaluate!(params)).loss;
  }
  const compileMs = performance.now() - t0;
  const loss0 = await run();
  const firstStepMs = performance.now() - t0;
  for (let i = 0; i < w.warmup; i++) await run();
  const times: number[] = [];
  const faults0 = minorFaults();
  let loss = loss0;
  for (let i = 0; i < w.steps; i++) {
    const s = performance.now();
    loss = await run();
    times.push(performance.now() - s);
  }
  await model.close();
  const ms = median(times);
  const tokensPerStep = w.batch * w.seq;
  const flops = stepFlops(w.kind as 'train' | 'eval', modelDims(w.model), w.batch, w.seq, adapterParams);
  return {
    msPerStep: ms,
    stepTimesMs: times,
    // a fresh page per activation every step (no allocator reuse) costs a fault each: the allocator's price
    minorFaultsPerStep: (minorFaults() - faults0) / w.steps,
    tokensPerSec: (tokensPerStep * 1000) / ms,
    timeToFirstStepMs: firstStepMs,
    compileMs,
    loss0,
    lossLast: loss,
    adapterParams,
    flopsPerStep: flops,
    gflops: flops / ms / 1e6,
  };
}

const peftParams = (init: Record<string, Float32Array>) => new Map(Object.entries(init));

async function runGen(w: Workload) {
  const dir = await ensureModel(w.model);
  const model = await loadModel(dir);
  const tok = await HfTokenizer.fromDir(dir);
  const peft = new PeftModel(adaptable(model));
  await peft.addAdapter('default', { ...loraConfig(w), init_lora_weights: false }); // non-zero B: the adapter does work
  const adapter = { hooks: () => peft.hooks(), key: 'bench' };
  const ids = tokens(w.batch * w.seq, vocabOf(model));
  const inputIds = Array.from({ length: w.batch }, (_, b) =>
    Array.from(ids.subarray(b * w.seq, (b + 1) * w.seq), Number),
  );
  const opts = {
    inputIds,
    eosTokenId: null,
    adapter,
    compile: { threads: w.threads, ...(w.compile as CompileOptions | undefined) },
  };
  await generate(model, tok, { ...opts, maxNewTokens: 2 }); // compiles both graphs
  const prefill: number[] = [],
    decode: number[] = [];
  for (let i = 0; i < Math.max(1, w.steps); i++) {
    const r = await generate(model, tok, { ...opts, maxNewTokens: w.newTokens });
    prefill.push((w.batch * w.seq * 1000) / r.timings.prefillMs);
    decode.push((w.batch * r.timings.steps * 1000) / r.timings.decodeMs);
  }
  await model.close();
  return { prefillTokensPerSec: median(prefill), decodeTokensPerSec: median(decode) };
}

/** The best of `steps` runs of [n, n]·[n, n] with the right operand constant (prepacked, as frozen weights run). */
async function runMatmul(w: Workload) {
  const n = w.size ?? 2048;
  const g = new Graph('matmul');
  // Only the product is timed: in this thread (no copy to a worker) and a one-row slice out (not 16 MB back).
  const y = g.input('a', 'f32', [n, n]).matmul(g.initializer('b', 'f32', [n, n], new Float32Array(n * n).fill(0.25)));
  g.output('y', y.slice([0, 0], [1, n]));
  const s = await compile(g, { ...compileOptions(w), worker: false });
  const a = new Float32Array(n * n).fill(0.5);
  for (let i = 0; i < w.warmup; i++) await s.run({ a });
  const times: number[] = [];
  for (let i = 0; i < w.steps; i++) {
    const t = performance.now();
    await s.run({ a });
    times.push(performance.now() - t);
  }
  return { gflops: (2 * n ** 3) / Math.min(...times) / 1e6, msPerStep: Math.min(...times) };
}

async function main(): Promise<void> {
  const w = JSON.parse(process.argv[2]) as Workload;
  const t0 = performance.now();
  const r =
    w.kind === 'matmul'
      ? await runMatmul(w)
      : w.kind === 'gemm'
        ? await runGemm(w, compileOptions(w))
        : w.kind === 'gen'
          ? await runGen(w)
          : await runTrainOrEval(w, t0);
  await shutdownRuntime();
  console.log(`RESULT ${JSON.stringify({ id: w.id, side: 'lorakit', ...r, peakRssMb: peakRssMb() })}`);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
