/**
 * The TrainTask for adapting a causal LM: a loaded model, a PeftModel holding the adapter being trained, and token
 * datasets from train/data. The loss is transformers' causal-LM loss — labels aligned with input_ids, shifted here,
 * -100 ignored, mean over counted tokens — computed from the hidden states of positions 0..T-2 only, so the
 * [B, T, V] logits of the last position are never built. Parameter groups follow PEFT's LoRA+ optimizer: B
 * matrices and 1-D tensors form the "B" group.
 */
import { Graph, crossEntropy, type Tensor } from '../graph/index.ts';
import type { Feed } from '../runtime/index.ts';
import { buildCausalLM, type LoadedModel } from '../models/index.ts';
import { type PeftModel, saveAdapter, exportModel } from '../peft/index.ts';
import { check } from '../errors.ts';
import type { TokenDataset, Batch } from './data/index.ts';
import type { TrainTask, TaskParamGroup, TrainBatch, DataPosition } from './task.ts';
import { lossEvaluator } from './eval.ts';

export interface CausalLmTaskOptions {
  model: LoadedModel;
  /** The adapters; the one named `adapter` trains (the others stay as they are). */
  peft: PeftModel;
  adapter: string;
  /** Full fine-tuning baseline: every weight of the model trains, no adapter is used, and save() writes a model folder.
   * */
  full?: boolean;
  train: TokenDataset;
  eval?: TokenDataset;
  batchSize: number;
  /** Shuffling seed of the training data (the Trainer's seed drives dropout). */
  dataSeed?: number;
  /** Written into adapter_config.json as base_model_name_or_path. */
  baseModelName?: string;
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

/** Builds the forward + loss graph of `model` with the adapter's tensors (and saved modules) as graph inputs. */
function buildLossGraph(
  o: CausalLmTaskOptions,
  T: number,
  { dropout = true } = {},
): { graph: Graph; loss: Tensor; params: Tensor[] } {
  const g = new Graph(`train-${o.adapter}`);
  const [B] = [o.batchSize];
  const inputIds = g.input('input_ids', 'i64', [B, T]);
  const labels = g.input('labels', 'i64', [B, T]);
  const attentionMask = g.input('attention_mask', 'i64', [B, T]);
  const dropoutSeed = dropout ? g.input('dropout_seed', 'f32', []) : undefined;
  const ctx = o.full
    ? o.model.context(g, { trainable: o.model.parameters().map((p) => p.name) })
    : o.model.context(g, {
        hooks: o.peft.hooks({ train: o.adapter, dropoutSeed }),
        trainable: o.peft.trainableWeights(o.adapter),
        overrides: o.peft.weightOverrides(o.adapter),
      });
  const out = buildCausalLM(ctx, { inputIds, attentionMask });
  const V = out.logits.shape[2] as number;
  const hidden = out.hidden.slice([0], [T - 1], [1]); // [B, T-1, D]: the last position predicts nothing here
  const logits = out.lmHead(hidden).reshape([B * (T - 1), V]);
  const targets = labels.slice([1], [T], [1]).reshape([B * (T - 1)]);
  const loss = crossEntropy(logits, targets);
  const params = g.inputs.filter((t) => t.name.includes('#') || ctx.weights.inputs.has(t.name));
  return { graph: g, loss, params };
}

/** The LoRA+-style grouping: A matrices, B matrices and 1-D tensors (magnitudes), whole saved weights. */
function groupsOf(params: Tensor[]): TaskParamGroup[] {
  const isB = (t: Tensor) => /\.lora_(B|embedding_B)/.test(t.name) || (t.name.includes('#') && t.rank === 1);
  const adapterA = params.filter((t) => t.name.includes('#') && !isB(t));
  const adapterB = params.filter((t) => t.name.includes('#') && isB(t));
  const saved = params.filter((t) => !t.name.includes('#')); // modules_to_save, trained biases, or every weight (full fine-tuning)
  const groups: TaskParamGroup[] = [];
  if (adapterA.length) groups.push({ name: 'lora_A', params: adapterA });
  if (adapterB.length) groups.push({ name: 'lora_B', params: adapterB, loraplusB: true });
  if (saved.length) groups.push({ name: 'modules_to_save', params: saved });
  return groups;
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
  const task: TrainTask = {
    build() {
      const { graph, loss, params } = buildLossGraph(o, T);
      return { graph, loss, groups: groupsOf(params) };
    },
    initialParams: async () =>
      o.full
        ? Object.fromEntries(
            await Promise.all(o.model.parameters().map(async (p) => [p.name, await o.model.read(p.name)] as const)),
          )
        : Object.fromEntries(o.peft.trainableValues(o.adapter)),
    *batches(from: DataPosition) {
      for (const b of o.train.batches({ batchSize: o.batchSize, seed: o.dataSeed ?? 0, start: from }))
        yield toTrainBatch(b);
    },
    batchesPerEpoch: o.train.batchesPerEpoch(o.batchSize),
    stepInputs: ({ rng }) => ({ dropout_seed: new Float32Array([Math.floor(rng.next() * 1e6)]) }),
    async save(dir, params) {
      if (o.full) {
        await exportModel(o.model, params, dir, { overwrite: true });
        return;
      }
      o.peft.setValues(o.adapter, params);
      await saveAdapter(o.peft, o.adapter, dir, { baseModel: o.baseModelName ?? null });
    },
  };
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
    // evaluation runs the same forward without dropout
    const evalBuild = () => {
      const { graph, loss, params } = buildLossGraph(o, T, { dropout: false });
      return { graph, loss, groups: groupsOf(params) };
    };
    task.evaluate = lossEvaluator({ build: evalBuild, compileOptions: task.compileOptions }, batches);
  }
  return task;
}
