/**
 * Calibration for initialisers that start from the full-weight gradient (LoRA-GA): the mean gradient of the
 * causal-LM loss with respect to the frozen weights of the targeted layers, over the first batches of the training
 * data. Batches are weighted by their counted tokens, so the result is the gradient of the mean loss over their
 * concatenation (as gradient accumulation computes it). PeftModel.addAdapter calls the function this returns
 * when a method asks for calibration.
 * Not here: what a method does with the gradient (peft/methods/), the training loop (trainer.ts).
 */
import { check } from '../errors.ts';
import { Graph, grad } from '../graph/index.ts';
import type { LoadedModel } from '../models/index.ts';
import type { LayerInfo } from '../peft/index.ts';
import { type CompileOptions, compile, type Feed } from '../runtime/index.ts';
import type { TokenDataset } from './data/index.ts';
import { HEAD_CHUNK_ROWS, causalLmLoss } from './loss.ts';

/** Options of `causalLmCalibrator`. */
export interface CalibratorOptions {
  model: LoadedModel;
  /** The training data; calibration reads its first batches in the run's shuffled order. */
  train: TokenDataset;
  batchSize: number;
  /** The run's data seed (the same order the training run starts with). */
  seed?: number;
  compile?: CompileOptions;
  /** Weights to differentiate at instead of the stored ones (HF name → stored layout): a shifted backbone. */
  weights?: ReadonlyMap<string, Float32Array>;
}

/** A calibrate function for PeftModel.addAdapter: layer path → mean gradient of its stored weight (stored layout). */
export function causalLmCalibrator(
  o: CalibratorOptions,
): (layers: readonly LayerInfo[], batches: number) => Promise<Map<string, Float32Array>> {
  return async (layers, batches) => {
    check(
      Number.isInteger(batches) && batches > 0,
      'LK_INVALID_ARGUMENT',
      `calibration: batches must be >= 1, got ${batches}`,
    );
    const modules = new Map(o.model.modules().map((m) => [m.path, m]));
    const names = layers.map((l) => modules.get(l.path)!.weightName);
    const g = new Graph('calibration');
    const T = o.train.seqLen;
    const B = o.batchSize;
    const inputIds = g.input('input_ids', 'i64', [B, T]);
    const labels = g.input('labels', 'i64', [B, T]);
    const attentionMask = g.input('attention_mask', 'i64', [B, T]);
    const ctx = o.model.context(g, { trainable: names });
    const chunked = { headChunkRows: HEAD_CHUNK_ROWS }; // a gradient graph: the fused head (loss.ts)
    const { loss } = causalLmLoss({ ctx, inputIds, labels, attentionMask, labelsAre: 'aligned', ...chunked });
    const weights = names.map((n) => ctx.weights.inputs.get(n)!);
    grad(loss, weights).forEach((d, i) => g.output(`grad${i}`, d));
    g.output('loss', loss);
    const session = await compile(g, o.compile);
    const feedsOfWeights: Record<string, Feed> = {};
    for (const n of names) feedsOfWeights[n] = o.weights?.get(n) ?? (await o.model.read(n));
    const sums = names.map((n) => new Float64Array((feedsOfWeights[n] as Float32Array).length));
    let total = 0;
    let taken = 0;
    for (const b of o.train.batches({ batchSize: B, seed: o.seed ?? 0 })) {
      if (taken++ === batches) break;
      const [rows, cols] = b.shape;
      const out = await session.run({
        ...feedsOfWeights,
        input_ids: { data: b.inputIds, shape: [rows, cols] },
        labels: { data: b.labels, shape: [rows, cols] },
        attention_mask: { data: b.attentionMask, shape: [rows, cols] },
      });
      total += b.lossTokens;
      sums.forEach((s, i) => {
        const d = out[`grad${i}`].data as Float32Array;
        for (let k = 0; k < s.length; k++) s[k] += b.lossTokens * d[k];
      });
    }
    await session.dispose();
    check(total > 0, 'LK_INVALID_ARGUMENT', 'calibration: the training data gave no counted token');
    return new Map(layers.map((l, i) => [l.path, Float32Array.from(sums[i], (v) => v / total)]));
  };
}
