/**
 * The TrainTask for adapting a causal LM: a loaded model, a PeftModel holding the adapter being trained, and token
 * datasets from train/data. The loss is the one causal-LM loss (loss.ts: labels aligned with input_ids, -100 not
 * counted) plus the adapter's loss terms. What trains, and how, comes from the binding's typed handles: tensors are
 * grouped by role as PEFT's LoRA+ optimizer groups them (B factors and every 1-D tensor in the "B" group), layers
 * with their own update rule are updated by it, and per-step inputs are computed on the host each step.
 */
import { Graph } from '../graph/index.ts';
import type { Feed } from '../runtime/index.ts';
import type { LoadedModel } from '../models/index.ts';
import { type PeftModel, exportModel } from '../peft/index.ts';
import { check } from '../errors.ts';
import type { TokenDataset, Batch } from './data/index.ts';
import type { TrainTask, TrainBatch, DataPosition, TaskGraph } from './task.ts';
import { type AdapterTraining, adapterTraining } from './adapter-task.ts';
import { lossEvaluator } from './eval.ts';
import { HEAD_CHUNK_ROWS, causalLmLoss } from './loss.ts';
import { adapterSampler, type SampleSettings } from './samples.ts';

export interface CausalLmTaskOptions {
  model: LoadedModel;
  /** The adapters; the one named `adapter` trains (the others stay as they are). */
  peft: PeftModel;
  adapter: string;
  /** Full fine-tuning baseline: every weight trains, no adapter is used, and save() writes a model folder. */
  full?: boolean;
  train: TokenDataset;
  eval?: TokenDataset;
  batchSize: number;
  /** Shuffling seed of the training data (the Trainer's seed drives dropout). */
  dataSeed?: number;
  /** Written into adapter_config.json as base_model_name_or_path. */
  baseModelName?: string;
  /** Whether an adapter that replaced its frozen weights (PiSSA, OLoRA) is saved as a LoRA of the untouched base
   * (default true; see AdapterSaveSettings.convertToBase). */
  convertToBase?: boolean;
  /** Prompts to continue at each evaluation with the adapter as trained so far (the task's `sample`). */
  samples?: SampleSettings;
  /** Rows per chunk of the training graph's fused head (loss.ts; default HEAD_CHUNK_ROWS; 0: the plain path). */
  headChunkRows?: number;
}

/** Feeds of a token batch, in the names the task graph declares. */
function batchFeeds(b: Batch): Record<string, Feed> {
  const [B, T] = b.shape;
  return {
    input_ids: { data: b.inputIds, shape: [B, T] },
    labels: { data: b.labels, shape: [B, T] },
    attention_mask: { data: b.attentionMask, shape: [B, T] },
  };
}

/**
 * Records the forward pass and loss of `model` with the adapter's trainable tensors (and saved modules) as graph
 * inputs; `training` adds dropout and feeds the adapter's step inputs (evaluation bakes their inference values).
 */
function buildTaskGraph(o: CausalLmTaskOptions, shared: AdapterTraining, T: number, training: boolean): TaskGraph {
  const g = new Graph(training ? `train-${o.adapter}` : `eval-${o.adapter}`);
  const B = o.batchSize;
  const inputIds = g.input('input_ids', 'i64', [B, T]);
  const labels = g.input('labels', 'i64', [B, T]);
  const attentionMask = g.input('attention_mask', 'i64', [B, T]);
  if (o.full) {
    const ctx = o.model.context(g, { trainable: o.model.parameters().map((p) => p.name) });
    const { loss } = causalLmLoss({ ctx, inputIds, labels, attentionMask, labelsAre: 'aligned' });
    return { graph: g, loss, groups: [{ name: 'weights', params: [...ctx.weights.inputs.values()] }] };
  }
  const binding = shared.bind(g, training);
  const ctx = o.model.context(g, {
    hooks: binding.hooks,
    trainable: o.peft.trainableWeights(o.adapter),
    overrides: o.peft.weightOverrides(o.adapter),
  });
  const terms = binding.lossTerms();
  const frozen = () => o.model.context(g, { namePrefix: 'frozen/' }); // the base model, sharing nothing trainable
  const out = causalLmLoss({
    ctx,
    inputIds,
    labels,
    attentionMask,
    labelsAre: 'aligned',
    terms,
    frozen,
    ...(training ? { headChunkRows: o.headChunkRows ?? HEAD_CHUNK_ROWS } : {}),
  });
  const metrics = Object.keys(out.terms).length ? { ce: out.ce, ...out.terms } : undefined;
  // biases trained in place are graph inputs of the weight source (saved modules come through the binding)
  return shared.taskGraph(g, binding, out.loss, { training, weights: [...ctx.weights.inputs.values()], metrics });
}

/** A TrainTask that trains adapter `adapter` of `peft` on `train`, evaluating on `eval`. */
export function causalLmTask(o: CausalLmTaskOptions): TrainTask {
  check(
    Number.isInteger(o.batchSize) && o.batchSize > 0,
    'LK_INVALID_ARGUMENT',
    `causal-LM task: batchSize must be a positive integer, got ${o.batchSize}`,
  );
  const T = o.train.seqLen;
  const toTrainBatch = (b: Batch): TrainBatch => ({
    feeds: batchFeeds(b),
    weight: b.lossTokens,
    tokens: b.tokens,
    next: b.next,
  });
  const shared = adapterTraining(o.peft, o.adapter, {
    baseModel: o.baseModelName ?? null,
    convertToBase: o.convertToBase,
  });
  const task: TrainTask = {
    build: () => buildTaskGraph(o, shared, T, true),
    initialParams: async () =>
      o.full
        ? Object.fromEntries(
            await Promise.all(o.model.parameters().map(async (p) => [p.name, await o.model.read(p.name)] as const)),
          )
        : shared.initialParams(),
    *batches(from: DataPosition) {
      for (const b of o.train.batches({ batchSize: o.batchSize, seed: o.dataSeed ?? 0, start: from }))
        yield toTrainBatch(b);
    },
    batchesPerEpoch: o.train.batchesPerEpoch(o.batchSize),
    // what the batch stream depends on; the dataset's sizes stand for its content (another file, seq_len or packing)
    settings: {
      per_device_train_batch_size: o.batchSize,
      data_seed: o.dataSeed ?? 0,
      train_rows: o.train.size,
      train_tokens: o.train.tokens,
    },
    stepInputs: (ctx) => (o.full ? {} : shared.stepInputs(ctx)),
    save: (dir, params) =>
      o.full ? exportModel(o.model, params, dir, { overwrite: true }).then(() => {}) : shared.save(dir, params),
  };
  if (o.samples) {
    check(!o.full, 'LK_UNSUPPORTED', 'causal-LM task: sample generations need an adapter (not full fine-tuning)');
    task.sample = adapterSampler(o.model, o.peft, o.adapter, o.samples, task.compileOptions);
  }
  if (o.eval) {
    const ev = o.eval;
    check(
      ev.seqLen === T,
      'LK_INVALID_ARGUMENT',
      `causal-LM task: eval rows have ${ev.seqLen} tokens, train rows ${T}`,
    );
    const batches = function* () {
      for (const b of ev.batches({ batchSize: o.batchSize, shuffle: false, epochs: 1, dropLast: false }))
        yield toTrainBatch(b);
    };
    // evaluation runs the same forward without dropout, with the step inputs' inference values
    task.evaluate = lossEvaluator(
      { build: () => buildTaskGraph(o, shared, T, false), compileOptions: task.compileOptions },
      batches,
    );
  }
  return task;
}
