/**
 * The demo as a session a page drives one action at a time (the browser demo's Web Worker, web/worker.ts, and its
 * Node-side check): open the demo base, add or load a LoRA adapter, measure the held-out loss of a text, train on
 * a text with a callback per step, sample with or without the adapter, save the adapter as a PEFT folder. Every
 * file goes through the host seam (io/host.ts), so in a browser the base, the run folder and the adapter live in the
 * in-memory file system. Same graphs, data windows and schedule as runDemo (run.ts), which stays the CLI's one-call
 * demo. Not here: the page, zip files and OPFS (web/), the Brown corpus (brown.ts; the page is handed text).
 */
import { LorakitError } from '../errors.ts';
import type { Tensor } from '../graph/index.ts';
import { HfTokenizer } from '../io/index.ts';
import { generate, loadModel, type LoadedModel } from '../models/index.ts';
import { type AdapterBinding, PeftModel, adaptable, loadAdapter, saveAdapter } from '../peft/index.ts';
import type { CompileOptions } from '../runtime/index.ts';
import { adapterTraining, train, type StepRecord, type TrainTask } from '../train/index.ts';
import { encodeDocument } from './bytes.ts';
import { WindowSampler, evalBatches } from './data.ts';
import { type ContextFactory, LmEvaluator, lmLossGraph } from './lm.ts';
import { demoLoraConfig } from './run.ts';

/** Settings fixed for the life of a session (they shape its graphs). */
export interface DemoSessionOptions {
  /** Windows per step (default 4) and their length in bytes (default 128). */
  batch?: number;
  seqLen?: number;
  /** LoRA rank and alpha of a new adapter (default 8 and 16). */
  rank?: number;
  alpha?: number;
  /** Seeds the adapter init, the training windows and sampling (default 0). */
  seed?: number;
  /** How graphs run: execution provider and threads (default: CPU, ORT's thread count). */
  compile?: CompileOptions;
}

/** Settings of one training run. */
export interface DemoTrainOptions {
  /** Optimizer steps (default 30). */
  steps?: number;
  /** Peak learning rate (default 2e-3; 10 % warmup, cosine decay to 10 %). */
  lr?: number;
  /** The run folder (checkpoints, metrics.jsonl); default `/runs/demo` style folder chosen by the caller. */
  outputDir: string;
  /** Continue from the run folder's latest checkpoint when it has one. */
  resume?: boolean;
  /** Write a checkpoint every N steps (default: only the final one). */
  checkpointEvery?: number;
  /** Called after each step. */
  onStep?: (r: StepRecord) => void | Promise<void>;
  /** Stops after the current step (with a checkpoint). */
  signal?: AbortSignal;
}

const ADAPTER = 'demo';

/** A loaded demo base with one adapter slot; see the file header. Call close() at the end. */
export class DemoSession {
  private peft: PeftModel | null = null;
  private evaluator: LmEvaluator | null = null;

  private constructor(
    readonly modelDir: string,
    readonly model: LoadedModel,
    readonly tokenizer: HfTokenizer,
    readonly o: Required<Omit<DemoSessionOptions, 'compile'>> & { compile: CompileOptions },
  ) {}

  /** Loads the base model and tokenizer in `modelDir`. */
  static async open(modelDir: string, opts: DemoSessionOptions = {}): Promise<DemoSession> {
    const o = { batch: 4, seqLen: 128, rank: 8, alpha: 16, seed: 0, compile: {}, ...opts };
    for (const k of ['batch', 'seqLen', 'rank'] as const)
      if (!Number.isInteger(o[k]) || o[k] < 1)
        throw new LorakitError('LK_INVALID_ARGUMENT', `DemoSession: ${k} must be a positive integer, got ${o[k]}`);
    const model = await loadModel(modelDir);
    return new DemoSession(modelDir, model, await HfTokenizer.fromDir(modelDir), o);
  }

  /** Trainable parameters of the current adapter (0 without one). */
  get trainableParams(): number {
    if (!this.peft) return 0;
    return [...this.peft.trainableValues(ADAPTER).values()].reduce((n, v) => n + v.length, 0);
  }

  /** True once an adapter was added or loaded. */
  get hasAdapter(): boolean {
    return this.peft !== null;
  }

  /** Starts a fresh LoRA adapter (replacing any other). */
  async newAdapter(): Promise<void> {
    this.peft = new PeftModel(adaptable(this.model));
    this.evaluator = null;
    await this.peft.addAdapter(ADAPTER, demoLoraConfig(this.o.rank, this.o.alpha), { seed: this.o.seed });
  }

  /** Loads the PEFT adapter folder `dir` (replacing any other). */
  async loadAdapter(dir: string): Promise<void> {
    this.peft = new PeftModel(adaptable(this.model));
    this.evaluator = null;
    await loadAdapter(this.peft, dir, ADAPTER, { seed: this.o.seed });
  }

  /** Writes the adapter as a PEFT folder (adapter_config.json + adapter_model.safetensors) in `dir`. */
  async saveAdapter(dir: string): Promise<void> {
    await saveAdapter(this.need('saveAdapter'), ADAPTER, dir, { baseModel: this.modelDir });
  }

  /** Mean loss in nats per byte of `text`'s first `windows` windows (evenly spaced), with the adapter. */
  async evalLoss(text: string, windows = 16): Promise<number> {
    const peft = this.need('evalLoss');
    const { batch, seqLen } = this.o;
    if (!this.evaluator) {
      const shared = adapterTraining(peft, ADAPTER, { baseModel: this.modelDir });
      const make: ContextFactory = (g) => {
        const binding = shared.bind(g, false);
        const ctx = this.model.context(g, { hooks: binding.hooks, overrides: peft.weightOverrides(ADAPTER) });
        const fed = () => [
          ...binding.trainables().map((h) => h.tensor),
          ...binding.bufferUpdates().map((b) => b.input),
        ];
        return { ctx, trainable: () => new Map(fed().map((t): [string, Tensor] => [t.name, t])) };
      };
      this.evaluator = await LmEvaluator.create(make, batch, seqLen, this.o.compile);
    }
    return this.evaluator.loss(evalBatches(encodeDocument(text), seqLen, batch, windows), this.values());
  }

  /** Trains the adapter on `text` (random windows); returns each step's record (loss, grad_norm, tokens/s...). */
  async train(text: string, opts: DemoTrainOptions): Promise<StepRecord[]> {
    const peft = this.need('train');
    const { batch, seqLen, seed } = this.o;
    const sampler = new WindowSampler(encodeDocument(text), seqLen, seed);
    const shared = adapterTraining(peft, ADAPTER, { baseModel: this.modelDir });
    const init = this.values();
    const tokens = batch * seqLen;
    const model = this.model;
    const task: TrainTask = {
      build: () => {
        let binding: AdapterBinding | null = null;
        const make: ContextFactory = (g) => {
          binding = shared.bind(g, true);
          const ctx = model.context(g, { hooks: binding.hooks, overrides: peft.weightOverrides(ADAPTER) });
          return { ctx, trainable: () => new Map() };
        };
        const { graph, loss } = lmLossGraph(make, batch, seqLen, 'demo-train');
        return shared.taskGraph(graph, binding!, loss, { training: true });
      },
      initialParams: () => Object.fromEntries(init),
      stepInputs: shared.stepInputs,
      *batches(from) {
        for (let i = from.index; ; i++) {
          const b = sampler.batch(i, batch);
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
      outputDir: opts.outputDir,
      steps: opts.steps ?? 30,
      lr: opts.lr ?? 2e-3,
      schedule: 'cosine',
      warmupRatio: 0.1,
      minLrRatio: 0.1,
      clipNorm: 1,
      seed,
      resume: opts.resume ?? false,
      checkpointEvery: opts.checkpointEvery,
      progress: 'none',
      onNotice: () => {},
      plot: false,
      compile: this.o.compile,
      onStep: opts.onStep,
      signal: opts.signal,
    });
    peft.setValues(ADAPTER, result.params);
    return result.history;
  }

  /** A seeded sample continuing `prompt` (`bytes` new bytes), with the adapter when `adapter` and one exists. */
  async sample(prompt: string, bytes: number, adapter: boolean): Promise<string> {
    const peft = adapter ? this.peft : null;
    const r = await generate(this.model, this.tokenizer, {
      prompt,
      maxNewTokens: bytes,
      temperature: 0.7,
      topK: 40,
      seed: this.o.seed,
      stop: '\n\n',
      compile: this.o.compile,
      adapter: peft ? { hooks: () => peft.hooks(), overrides: peft.weightOverrides() } : undefined,
    });
    return r.rows[0].text;
  }

  /** Releases the model's files. */
  async close(): Promise<void> {
    await this.model.close();
  }

  /** The adapter's trained tensors and buffers by graph-input name. */
  private values(): Map<string, Float32Array> {
    const peft = this.need('values');
    return new Map([...peft.trainableValues(ADAPTER), ...peft.stateValues(ADAPTER)]);
  }

  private need(what: string): PeftModel {
    if (!this.peft)
      throw new LorakitError('LK_INVALID_ARGUMENT', `DemoSession.${what}: no adapter yet (newAdapter or loadAdapter)`);
    return this.peft;
  }
}
