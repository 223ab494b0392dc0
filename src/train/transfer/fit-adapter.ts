/**
 * Trains one adapter of a PeftModel on a loss that the caller records into the graph, with the Trainer (one ONNX
 * graph per step, cosine schedule, clipping, checkpoints in `outputDir`), then writes the trained values back into
 * the PeftModel and saves the PEFT folder to `<outputDir>/final`. With `heldOut`, the Trainer evaluates the same loss
 * on held-out batches, may stop early, and the adapter ends at its best evaluation (`<outputDir>/best`, reloaded).
 * Trans-LoRA trains two adapters this way: the
 * discriminator (cross-entropy on one label token) and the student (KL to the teacher). Not here: the losses
 * (discriminator.ts, distill-loss.ts), the data (the callers' batch functions).
 */
import { Graph, type Tensor } from '../../graph/index.ts';
import type { ModelConfig } from '../../io/index.ts';
import type { LoadedModel } from '../../models/index.ts';
import type { ModelContext } from '../../nn/index.ts';
import { join } from '../../io/host.ts';
import { type AdapterBinding, type PeftModel, loadAdapter } from '../../peft/index.ts';
import type { CompileOptions, Feed } from '../../runtime/index.ts';
import { adapterTraining } from '../adapter-task.ts';
import { lossEvaluator } from '../eval.ts';
import { train } from '../trainer.ts';
import type { StepRecord } from '../report.ts';
import type { TrainTask } from '../task.ts';

/** The run settings every adapter fit of the transfer code takes (fitAdapter, the discriminator, distillation). */
export interface AdapterFitSettings {
  steps: number;
  lr: number;
  seed: number;
  /** The run folder; the adapter is saved to `<outputDir>/final`. */
  outputDir: string;
  /** base_model_name_or_path written into adapter_config.json. */
  baseModel: string;
  compile?: CompileOptions;
  onStep?: (r: StepRecord) => void | Promise<void>;
}

/** The AdapterFitSettings fields of `o` alone, for a caller that passes its own options on to `fitAdapter`. */
export function fitSettings(o: AdapterFitSettings): AdapterFitSettings {
  const { steps, lr, seed, outputDir, baseModel, compile, onStep } = o;
  return { steps, lr, seed, outputDir, baseModel, compile, onStep };
}

/** One batch of `fitAdapter`: the graph's feeds and the loss terms (tokens or rows) it holds. */
export interface FitBatch {
  feeds: Record<string, Feed>;
  tokens: number;
}

/** Early stopping: evaluate on held-out batches every `every` steps and after the last, keep the best. */
export interface HeldOutSettings {
  batches: readonly FitBatch[];
  every: number;
  /** Stop after this many evaluations without a lower held-out loss (default: run every step). */
  patience?: number;
}

/** Options of `fitAdapter`. */
export interface FitAdapterOptions extends AdapterFitSettings {
  model: LoadedModel;
  peft: PeftModel;
  adapter: string;
  /** Records the loss of one batch: the model context (adapter hooks bound) and the graph to declare inputs in. */
  loss(ctx: ModelContext<ModelConfig>, graph: Graph): Tensor;
  /** The feeds of batch `i` (0-based, deterministic in i) and the tokens it holds. */
  batch(i: number): FitBatch;
  /** Early stopping on held-out batches (the same loss, without dropout); the adapter ends at the best evaluation. */
  heldOut?: HeldOutSettings;
}

/** The evaluation the Trainer keeps: the first record of lowest `eval_loss` (null when none was evaluated). */
export function bestEval(history: readonly StepRecord[]): StepRecord | null {
  let best: StepRecord | null = null;
  for (const r of history) if (r.eval_loss !== undefined && (best === null || r.eval_loss < best.eval_loss!)) best = r;
  return best;
}

/** Trains `o.adapter` (see the file header); returns each step's record. */
export async function fitAdapter(o: FitAdapterOptions): Promise<StepRecord[]> {
  const { model, peft, adapter } = o;
  const shared = adapterTraining(peft, adapter, { baseModel: o.baseModel });
  const init = new Map([...peft.trainableValues(adapter), ...peft.stateValues(adapter)]);
  const build = (training: boolean) => {
    const graph = new Graph(`${adapter}-${training ? 'train' : 'eval'}`);
    const binding: AdapterBinding = shared.bind(graph, training);
    const ctx = model.context(graph, { hooks: binding.hooks, overrides: peft.weightOverrides(adapter) });
    return shared.taskGraph(graph, binding, o.loss(ctx, graph), { training });
  };
  const held = o.heldOut;
  const task: TrainTask = {
    build: () => build(true),
    initialParams: () => Object.fromEntries(init),
    stepInputs: shared.stepInputs,
    *batches(from) {
      for (let i = from.index; ; i++) {
        const b = o.batch(i);
        yield { feeds: b.feeds, weight: b.tokens, tokens: b.tokens, next: { epoch: 0, index: i + 1 } };
      }
    },
    save: shared.save,
  };
  if (held)
    task.evaluate = lossEvaluator({ build: () => build(false), compileOptions: o.compile }, () =>
      held.batches.map((b, i) => ({
        feeds: b.feeds,
        weight: b.tokens,
        tokens: b.tokens,
        next: { epoch: 0, index: i + 1 },
      })),
    );
  const result = await train(task, {
    outputDir: o.outputDir,
    steps: o.steps,
    lr: o.lr,
    schedule: 'cosine',
    warmupRatio: 0.1,
    minLrRatio: 0.1,
    clipNorm: 1,
    seed: o.seed,
    progress: 'none',
    onNotice: () => {},
    plot: false,
    compile: o.compile,
    onStep: o.onStep,
    evalEvery: held?.every,
    earlyStoppingPatience: held?.patience,
  });
  peft.setValues(adapter, result.params);
  if (held && result.bestStep !== null) {
    // the Trainer chose the best evaluation and saved it; read it back rather than track it twice
    const active = [...peft.activeAdapters];
    peft.deleteAdapter(adapter);
    await loadAdapter(peft, join(o.outputDir, 'best'), adapter);
    peft.setActive(...active);
  }
  return result.history;
}
