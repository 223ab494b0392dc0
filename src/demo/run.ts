/**
 * The embedded demo as one library call (`lorakit demo` is a thin shell over it): load the base model that ships
 * in models/demo-base/ (a byte-level Llama pretrained on Brown corpus non-fiction), measure its loss on held-out
 * Brown fiction, train a LoRA adapter on the other fiction files, save it as a PEFT folder, sample a continuation of
 * a fiction prompt before and after, and measure the held-out loss again. No download: the corpus is an npm
 * dependency and the model is in the repository. Deterministic in `seed` (data order, adapter init, sampling).
 * Not here: flag parsing and printing to the terminal (cli/demo.ts), the pretraining (scripts/pretrain-demo.ts).
 */
import { join, mkdtemp, tmpdir } from '../io/host.ts';
import { Writable } from 'node:stream';
import { LorakitError } from '../errors.ts';
import type { Tensor } from '../graph/index.ts';
import { HfTokenizer } from '../io/index.ts';
import { generate, loadModel, type LoadedModel, quantizeModel } from '../models/index.ts';
import type { QuantMode } from '../nn/index.ts';
import { type AdapterBinding, PeftModel, adaptable, projectionLoraConfig } from '../peft/index.ts';
import { adapterTraining, causalLmCalibrator, train, type TrainTask } from '../train/index.ts';
import { TokenDataset } from '../train/data/index.ts';
import { DEMO_BASE_DIR } from './base.ts';
import { type BrownSplit, byteCount, readBrown, splitBrown } from './brown.ts';
import { WindowSampler, evalBatches, tokenStream } from './data.ts';
import { type ContextFactory, LmEvaluator, lmLossGraph } from './lm.ts';

/** Options of `runDemo`; every field has a default that fits the 3-minute demo on 2 CPU cores. */
export interface DemoOptions {
  /** Base model folder (default: models/demo-base of this checkout). */
  modelDir?: string;
  /** Optimizer steps (default 100). */
  steps?: number;
  /** Windows per step (default 8) and their length in bytes (default 256, the base model's context). */
  batch?: number;
  seqLen?: number;
  /** Peak learning rate (default 2e-3; 10 % warmup, then cosine decay to 10 %). */
  lr?: number;
  /** LoRA rank and alpha (default 16 and 32), on q/k/v/o and the MLP's gate/up/down projections. */
  rank?: number;
  alpha?: number;
  /** Another adapter config (any registered method; default: LoRA with `rank` and `alpha`). */
  adapter?: Record<string, unknown>;
  /** Seeds the adapter init, the training windows and sampling (default 0). */
  seed?: number;
  /** Held-out fiction windows evaluated before and after (default 64, evenly spaced over the held-out files). */
  evalWindows?: number;
  /** The run folder; the adapter goes to `<outDir>/final` (default: a new folder under the OS temp folder). */
  outDir?: string;
  /** Fiction prompt for the samples, and how many bytes to sample (default 200). */
  prompt?: string;
  sampleBytes?: number;
  /** Quantize the frozen base's Linears (int8 or 4-bit blocks; default none): models/quantize.ts. */
  quantize?: QuantMode;
  /** The train and held-out files (default: Brown fiction, splitBrown's split); the composition pool passes one genre. */
  split?: BrownSplit;
  /** Called with each line of progress (default: nothing). */
  log?: (line: string) => void;
}

/** What the demo measured and wrote. */
export interface DemoResult {
  /** Mean held-out fiction loss in nats per byte, before and after training. */
  heldOutBefore: number;
  heldOutAfter: number;
  /** Training loss of each step. */
  trainLosses: number[];
  /** The PEFT adapter folder (`<runDir>/final`). */
  adapterDir: string;
  /** The Trainer's run folder: checkpoint, metrics.jsonl, loss.svg. */
  runDir: string;
  trainableParams: number;
  prompt: string;
  sampleBefore: string;
  sampleAfter: string;
  seconds: number;
}

/** The adapter the demo trains: PEFT's LoraConfig fields of a LoRA on every projection. */
export const demoLoraConfig: (rank: number, alpha: number) => Record<string, unknown> = projectionLoraConfig;

const DEFAULT_PROMPT = 'She looked at him for a long moment. "';

/** Runs the demo; see the file header. The caller shuts the runtime down (shutdownRuntime) when it is done. */
export async function runDemo(opts: DemoOptions = {}): Promise<DemoResult> {
  const t0 = performance.now();
  const o = {
    modelDir: DEMO_BASE_DIR,
    steps: 100,
    batch: 8,
    seqLen: 256,
    lr: 2e-3,
    rank: 16,
    alpha: 32,
    seed: 0,
    evalWindows: 64,
    prompt: DEFAULT_PROMPT,
    sampleBytes: 200,
    ...opts,
  };
  const log = opts.log ?? (() => {});
  for (const k of ['steps', 'batch', 'seqLen', 'rank', 'evalWindows', 'sampleBytes'] as const) {
    if (!Number.isInteger(o[k]) || o[k] < 1)
      throw new LorakitError('LK_INVALID_ARGUMENT', `demo: ${k} must be a positive integer, got ${o[k]}`, {
        option: k,
      });
  }
  if (!(o.lr > 0)) throw new LorakitError('LK_INVALID_ARGUMENT', `demo: lr must be > 0, got ${o.lr}`, { option: 'lr' });

  const loaded = await loadModel(o.modelDir);
  try {
    const model = await quantizeModel(loaded, o.quantize ?? 'none');
    const qb = model.quantizedBase;
    if (qb)
      log(
        `frozen Linears quantized to ${qb.mode}: ${(qb.floatBytes / 1e6).toFixed(2)} MB float32 -> ` +
          `${(qb.quantizedBytes / 1e6).toFixed(2)} MB`,
      );
    const maxPos = (model.config as { max_position_embeddings?: number }).max_position_embeddings ?? Infinity;
    if (o.seqLen > maxPos)
      throw new LorakitError(
        'LK_INVALID_ARGUMENT',
        `demo: seqLen ${o.seqLen} exceeds the model's ${maxPos} positions`,
        { option: 'seqLen' },
      );
    const tokenizer = await HfTokenizer.fromDir(o.modelDir);
    log(
      `base model ${o.modelDir}: ${model.config.model_type}, ${(model.paramCount / 1e6).toFixed(2)}M parameters, ` +
        `vocabulary ${model.config.vocab_size}`,
    );

    const split = opts.split ?? splitBrown(readBrown({ side: 'fiction' }), 'fiction');
    const trainStream = tokenStream(split.train);
    const held = evalBatches(tokenStream(split.heldOut), o.seqLen, o.batch, o.evalWindows);
    log(
      `Brown ${opts.split ? [...new Set(split.train.map((f) => f.genre))].join('/') : 'fiction'}: ${split.train.length} train files (${byteCount(split.train).toLocaleString('en-US')} bytes), ` +
        `${split.heldOut.length} held-out files (${split.heldOut.map((f) => f.id).join(' ')}); evaluating ` +
        `${Math.min(o.evalWindows, held.length * o.batch)} held-out windows of ${o.seqLen} bytes`,
    );

    const peft = new PeftModel(adaptable(model));
    const config = opts.adapter ?? demoLoraConfig(o.rank, o.alpha);
    await peft.addAdapter('demo', config, { seed: o.seed, calibrate: demoCalibrator(model, trainStream, o) });
    // trained tensors and buffers (a method's forward-updated state) by graph-input name
    const values = () => new Map([...peft.trainableValues('demo'), ...peft.stateValues('demo')]);
    const init = values();
    const trainableParams = [...peft.trainableValues('demo').values()].reduce((n, v) => n + v.length, 0);
    const what = opts.adapter ? peft.get('demo').method.name : `LoRA r=${o.rank} alpha=${o.alpha}`;
    log(
      `${what} on q/k/v/o/gate/up/down: ${trainableParams.toLocaleString('en-US')} ` +
        `trainable parameters (${((100 * trainableParams) / model.paramCount).toFixed(1)} % of the base)`,
    );

    const shared = adapterTraining(peft, 'demo', { baseModel: o.modelDir });
    // the evaluation graph feeds the adapter's trainable tensors by their graph names (the binding's handles)
    const evalGraph: ContextFactory = (g) => {
      const binding = shared.bind(g, false);
      const ctx = model.context(g, { hooks: binding.hooks, overrides: peft.weightOverrides('demo') });
      const fed = () => [...binding.trainables().map((h) => h.tensor), ...binding.bufferUpdates().map((b) => b.input)];
      return { ctx, trainable: () => new Map(fed().map((t): [string, Tensor] => [t.name, t])) };
    };
    const evaluator = await LmEvaluator.create(evalGraph, o.batch, o.seqLen);
    const heldOutBefore = await evaluator.loss(held, init);
    log(`held-out loss before: ${heldOutBefore.toFixed(4)} nats/byte`);
    const sampleBefore = await sample(model, tokenizer, o, null);

    const runDir = o.outDir ?? (await mkdtemp(join(tmpdir(), 'lorakit-demo-')));
    const sampler = new WindowSampler(trainStream, o.seqLen, o.seed);
    const tokens = o.batch * o.seqLen;
    const task: TrainTask = {
      build: () => {
        let binding: AdapterBinding | null = null;
        const trainGraph: ContextFactory = (g) => {
          binding = shared.bind(g, true);
          const ctx = model.context(g, { hooks: binding.hooks, overrides: peft.weightOverrides('demo') });
          return { ctx, trainable: () => new Map() };
        };
        const { graph, loss } = lmLossGraph(trainGraph, o.batch, o.seqLen, 'demo-train');
        return shared.taskGraph(graph, binding!, loss, { training: true });
      },
      initialParams: () => Object.fromEntries(init),
      stepInputs: shared.stepInputs,
      *batches(from) {
        for (let i = from.index; ; i++) {
          const b = sampler.batch(i, o.batch);
          yield {
            feeds: { input_ids: b.inputIds, labels: b.labels },
            weight: tokens,
            tokens,
            next: { epoch: 0, index: i + 1 },
          };
        }
      },
      save: shared.save,
    };
    const result = await train(task, {
      outputDir: runDir,
      steps: o.steps,
      lr: o.lr,
      schedule: 'cosine',
      warmupRatio: 0.1,
      minLrRatio: 0.1,
      clipNorm: 1,
      seed: o.seed,
      progress: opts.log ? 'lines' : 'none',
      progressStream: lineStream(log),
      logEvery: 10,
    });
    peft.setValues('demo', result.params);
    const adapterDir = join(runDir, 'final');
    log(
      `adapter saved to ${adapterDir} (PEFT format: adapter_config.json + adapter_model.safetensors; run log and ` +
        `loss.svg in ${runDir})`,
    );
    const sampleAfter = await sample(model, tokenizer, o, peft);
    const heldOutAfter = await evaluator.loss(held, values());
    return {
      heldOutBefore,
      heldOutAfter,
      trainLosses: result.history.map((r) => r.loss),
      adapterDir,
      runDir,
      trainableParams,
      prompt: o.prompt,
      sampleBefore,
      sampleAfter,
      seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    await loaded.close();
  }
}

/** A Writable that hands each complete line to `log` (the Trainer's progress lines). */
function lineStream(log: (line: string) => void): Writable {
  let pending = '';
  return new Writable({
    write(chunk, _enc, done) {
      pending += String(chunk);
      const lines = pending.split('\n');
      pending = lines.pop()!;
      for (const l of lines) log(l);
      done();
    },
  });
}

/** A seeded sample continuing the prompt, with the adapter (`peft`) or without it; ends at a paragraph break. */
async function sample(
  model: LoadedModel,
  tokenizer: HfTokenizer,
  o: { prompt: string; sampleBytes: number; seed: number },
  peft: PeftModel | null,
): Promise<string> {
  const r = await generate(model, tokenizer, {
    prompt: o.prompt,
    maxNewTokens: o.sampleBytes,
    temperature: 0.7,
    topK: 40,
    seed: o.seed,
    stop: '\n\n',
    adapter: peft
      ? { hooks: () => peft.hooks(), overrides: peft.weightOverrides(), key: `demo-${o.seed}-trained` }
      : undefined,
  });
  return r.rows[0].text;
}

/** Calibration for methods whose init reads loss gradients (LoRA-GA): the first windows of the training stream. */
function demoCalibrator(model: LoadedModel, stream: Uint16Array, o: { seqLen: number; batch: number }) {
  const rows = 8 * o.batch;
  const ids = Int32Array.from(stream.subarray(0, rows * o.seqLen));
  const data = new TokenDataset(
    { seqLen: o.seqLen, ids, labels: ids, lengths: new Uint32Array(rows).fill(o.seqLen) },
    0,
  );
  return causalLmCalibrator({ model, train: data, batchSize: o.batch });
}
