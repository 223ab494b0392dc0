/**
 * The graphs of byte-level language modelling that the demo and the pretraining script share: the forward pass
 * with its mean next-token cross-entropy (the demo's Trainer task builds on it), a train step (that loss, backward
 * and AdamW in one graph, via optim/addTrainStep, for the pretraining loop) and an evaluation graph (summed NLL and
 * target count of a batch, so a whole held-out set averages exactly). Both read
 * the trainable tensors (all weights when pretraining, the LoRA tensors in the demo) as graph inputs, so the
 * evaluation session is fed the train runner's current values and compiles only once.
 * Not here: data (data.ts), what is trainable (the callers build the ModelContext).
 */
import { LorakitError } from '../errors.ts';
import { Graph, type Tensor } from '../graph/index.ts';
import type { ModelConfig } from '../io/index.ts';
import type { LoadedModel } from '../models/index.ts';
import type { ModelContext } from '../nn/index.ts';
import { PeftModel, adaptable, loadAdapter } from '../peft/index.ts';
import { addTrainStep, TrainStepRunner, type Optimizer, type ParamGroup } from '../optim/index.ts';
import { compile, type CompileOptions, type Feed, type Session } from '../runtime/index.ts';
import { causalLmLoss } from '../train/loss.ts';
import type { LmBatch } from './data.ts';

/** Builds the model into a graph and says which graph inputs are trainable. */
export type ContextFactory = (g: Graph) => { ctx: ModelContext<ModelConfig>; trainable(): Map<string, Tensor> };

/** A recorded forward pass with its mean loss: the graph, the loss, the trainable inputs by name. */
export interface LmLossGraph {
  graph: Graph;
  /** Mean next-token cross-entropy over counted labels (scalar). */
  loss: Tensor;
  /** Summed negative log-likelihood of the counted labels and their count (scalars). */
  nllSum: Tensor;
  count: Tensor;
  trainable: Map<string, Tensor>;
}

/** Records the model on input_ids [B, T] with labels [B·T] (next tokens, IGNORE skipped) into a new graph. */
export function lmLossGraph(make: ContextFactory, B: number, T: number, name = 'lm'): LmLossGraph {
  const graph = new Graph(name);
  const { ctx, trainable } = make(graph);
  const inputIds = graph.input('input_ids', 'i64', [B, T]);
  const labels = graph.input('labels', 'i64', [B * T]);
  const { loss, nllSum, count } = causalLmLoss({ ctx, inputIds, labels, labelsAre: 'next' });
  return { graph, loss, nllSum, count, trainable: trainable() };
}

/** Options of `compileTrainStep`. */
export interface TrainStepSpec {
  batch: number;
  seqLen: number;
  optimizer: Optimizer;
  /** Splits the trainable tensors into parameter groups (weight decay per group). */
  groups(trainable: Map<string, Tensor>): ParamGroup[];
  clipNorm?: number;
  compile?: CompileOptions;
}

/** Compiles the train step and wraps it in a TrainStepRunner holding `init` (values by graph-input name). */
export async function compileTrainStep(
  make: ContextFactory,
  spec: TrainStepSpec,
  init: ReadonlyMap<string, Float32Array>,
): Promise<TrainStepRunner> {
  const { graph, loss, trainable } = lmLossGraph(make, spec.batch, spec.seqLen, 'lm-train');
  const layout = addTrainStep(graph, loss, {
    optimizer: spec.optimizer,
    groups: spec.groups(trainable),
    clipNorm: spec.clipNorm,
  });
  const session = await compile(graph, spec.compile);
  return new TrainStepRunner(session, layout, Object.fromEntries(init));
}

/** A compiled evaluation graph: mean NLL per counted target over batches, with the trainable tensors fed. */
export class LmEvaluator {
  private constructor(
    private session: Session,
    readonly names: string[],
    readonly batch: number,
    readonly seqLen: number,
  ) {}

  static async create(
    make: ContextFactory,
    batch: number,
    seqLen: number,
    opts: CompileOptions = {},
  ): Promise<LmEvaluator> {
    const { graph, nllSum, count, trainable } = lmLossGraph(make, batch, seqLen, 'lm-eval');
    graph.output('nll_sum', nllSum);
    graph.output('count', count);
    return new LmEvaluator(await compile(graph, opts), [...trainable.keys()], batch, seqLen);
  }

  /** Mean NLL (nats per target) of `batches` with the trainable tensors set to `values`. */
  async loss(batches: readonly LmBatch[], values: ReadonlyMap<string, Float32Array>): Promise<number> {
    const feeds: Record<string, Feed> = {};
    for (const n of this.names) {
      const v = values.get(n);
      if (!v) throw new LorakitError('LK_INVALID_ARGUMENT', `evaluate: no value for trainable tensor "${n}"`);
      feeds[n] = v;
    }
    let sum = 0,
      count = 0;
    for (const b of batches) {
      const out = await this.session.run({ ...feeds, input_ids: b.inputIds, labels: b.labels });
      sum += Number(out.nll_sum.data[0]);
      count += Number(out.count.data[0]);
    }
    if (count === 0) throw new LorakitError('LK_INVALID_ARGUMENT', 'evaluate: the batches have no counted targets');
    return sum / count;
  }
}

/**
 * The evaluator of `model` with the PEFT adapter folder `adapterDir` (null: the bare base): the adapter's tensors are
 * constants of the graph, so `loss(batches, new Map())` scores it.
 */
export async function adapterEvaluator(
  model: LoadedModel,
  adapterDir: string | null,
  batch: number,
  seqLen: number,
): Promise<LmEvaluator> {
  const peft = new PeftModel(adaptable(model));
  if (adapterDir) await loadAdapter(peft, adapterDir, 'eval');
  const make: ContextFactory = (g) => ({
    ctx: model.context(g, adapterDir ? { hooks: peft.hooks(), overrides: peft.weightOverrides() } : {}),
    trainable: () => new Map(),
  });
  return LmEvaluator.create(make, batch, seqLen);
}

/** Warmup then cosine decay to `minRatio`: the lr multiplier for 0-based update `step` of `total`. */
export function warmupCosine(step: number, total: number, warmup: number, minRatio = 0.1): number {
  if (step < warmup) return (step + 1) / warmup;
  const p = Math.min(1, (step - warmup) / Math.max(1, total - warmup));
  return minRatio + (1 - minRatio) * 0.5 * (1 + Math.cos(Math.PI * p));
}
