/**
 * Trains one adapter of a PeftModel on a loss that the caller records into the graph, with the Trainer (one ONNX
 * graph per step, cosine schedule, clipping, checkpoints in `outputDir`), then writes the trained values back into
 * the PeftModel and saves the PEFT folder to `<outputDir>/final`. Trans-LoRA trains two adapters this way: the
 * discriminator (cross-entropy on one label token) and the student (KL to the teacher). Not here: the losses
 * (discriminator.ts, distill-loss.ts), the data (the callers' batch functions).
 */
import { Graph, type Tensor } from '../../graph/index.ts';
import type { ModelConfig } from '../../io/index.ts';
import type { LoadedModel } from '../../models/index.ts';
import type { ModelContext } from '../../nn/index.ts';
import type { AdapterBinding, PeftModel } from '../../peft/index.ts';
import type { CompileOptions, Feed } from '../../runtime/index.ts';
import { adapterTraining } from '../adapter-task.ts';
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

/** Options of `fitAdapter`. */
export interface FitAdapterOptions extends AdapterFitSettings {
  model: LoadedModel;
  peft: PeftModel;
  adapter: string;
  /** Records the loss of one batch: the model context (adapter hooks bound) and the graph to declare inputs in. */
  loss(ctx: ModelContext<ModelConfig>, graph: Graph): Tensor;
  /** The feeds of batch `i` (0-based, deterministic in i) and the tokens it holds. */
  batch(i: number): { feeds: Record<string, Feed>; tokens: number };
}

/** Trains `o.adapter` (see the file header); returns each step's record. */
export async function fitAdapter(o: FitAdapterOptions): Promise<StepRecord[]> {
  const { model, peft, adapter } = o;
  const shared = adapterTraining(peft, adapter, { baseModel: o.baseModel });
  const init = new Map([...peft.trainableValues(adapter), ...peft.stateValues(adapter)]);
  const task: TrainTask = {
    build: () => {
      const graph = new Graph(`${adapter}-train`);
      const binding: AdapterBinding = shared.bind(graph, true);
      const ctx = model.context(graph, { hooks: binding.hooks, overrides: peft.weightOverrides(adapter) });
      return shared.taskGraph(graph, binding, o.loss(ctx, graph), { training: true });
    },
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
  });
  peft.setValues(adapter, result.params);
  return result.history;
}
