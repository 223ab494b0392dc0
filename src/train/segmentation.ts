/**
 * Binary segmentation with a diffusers-format U-Net (models/unet.ts): images [N, 1, H, W] → mask logits of the same
 * size, trained with the mean per-pixel binary cross-entropy, evaluated by Dice. The U-Net is a UNet2DModel run at a
 * constant timestep 0 (its time embedding is then a learned per-channel bias). One task trains either an adapter of a
 * PeftModel over the U-Net (every registered method that wraps Conv2d/Linear layers) or every weight of the U-Net
 * (pretraining from an initialisation, full fine-tuning).
 * Not here: the U-Net graph (models/unet.ts), the data and the experiment (scripts/segmentation-transfer.ts).
 */
import { Graph, type Tensor } from '../graph/index.ts';
import { Rng, seedFrom } from '../linalg/index.ts';
import { type UNet2DConfig, unet2d } from '../models/index.ts';
import type { ModelContext } from '../nn/index.ts';
import type { PeftModel } from '../peft/index.ts';
import { compile } from '../runtime/index.ts';
import { adapterTraining, unetTaskGraph } from './adapter-task.ts';
import type { ContextOptions } from '../models/index.ts';
import type { ParamValues, TaskGraph, TrainBatch, TrainTask } from './task.ts';

/** Images and their masks, [n, 1, size, size] each (masks 0/1). */
export interface SegmentationSet {
  images: Float32Array;
  masks: Float32Array;
  n: number;
  size: number;
}

/** A U-Net to build graphs of: a loaded folder (models/unet-load.ts) or weights in memory (`memoryUNet`). */
export interface UNetSource {
  config: UNet2DConfig;
  context(graph: Graph, opts?: ContextOptions): ModelContext<UNet2DConfig>;
  /** Every parameter name and shape. */
  parameters(): { name: string; shape: number[] }[];
  read(name: string): Promise<Float32Array>;
}

/** Mean binary cross-entropy of logits z against targets y: mean(max(z, 0) − z·y + log(1 + e^−|z|)). */
export function bceWithLogits(z: Tensor, y: Tensor): Tensor {
  return z.relu().sub(z.mul(y)).add(z.abs().neg().exp().add(1).log()).mean();
}

/** The U-Net's mask logits [N, 1, S, S] for images [N, 1, S, S] at timestep 0. */
export function segmentationLogits(ctx: ModelContext<UNet2DConfig>, images: Tensor): Tensor {
  const n = images.shape[0] as number;
  return unet2d(ctx, images, ctx.graph.constant(new Float32Array(n), 'f32', [n]));
}

/** Options of segmentationTask. */
export interface SegmentationTaskOptions {
  unet: UNetSource;
  train: SegmentationSet;
  batchSize: number;
  /** Train this adapter of `peft` (a PeftModel over the U-Net's modules); absent: train every U-Net weight. */
  peft?: PeftModel;
  adapter?: string;
  /** Seeds the per-epoch shuffles of the training images (default 0). */
  dataSeed?: number;
  /** Initial values of the U-Net's weights when they are trained (default: the source's). */
  init?: ReadonlyMap<string, Float32Array>;
}

/** Rows of one batch, copied out of the set. */
function batchOf(set: SegmentationSet, rows: ArrayLike<number>) {
  const per = set.size * set.size;
  const [x, y] = [new Float32Array(rows.length * per), new Float32Array(rows.length * per)];
  for (let b = 0; b < rows.length; b++) {
    x.set(set.images.subarray(rows[b] * per, (rows[b] + 1) * per), b * per);
    y.set(set.masks.subarray(rows[b] * per, (rows[b] + 1) * per), b * per);
  }
  return { x, y };
}

/** The TrainTask: mean BCE of the mask logits over a batch, batches from seeded per-epoch shuffles. */
export function segmentationTask(o: SegmentationTaskOptions): TrainTask {
  const { unet, train, batchSize: B } = o;
  const S = train.size;
  const perEpoch = Math.floor(train.n / B);
  const shared = o.peft ? adapterTraining(o.peft, o.adapter ?? 'default') : null;
  const names = unet.parameters().map((p) => p.name);
  const build = (): TaskGraph => {
    const g = new Graph('segmentation');
    const images = g.input('images', 'f32', [B, 1, S, S]);
    const masks = g.input('masks', 'f32', [B, 1, S, S]);
    const adapter = shared && o.peft ? { shared, peft: o.peft, name: o.adapter } : null;
    return unetTaskGraph(g, unet, names, adapter, (ctx) => bceWithLogits(segmentationLogits(ctx, images), masks));
  };
  return {
    build,
    async initialParams() {
      if (shared) return shared.initialParams();
      const out: Record<string, Float32Array> = {};
      for (const n of names) out[n] = Float32Array.from(o.init?.get(n) ?? (await unet.read(n)));
      return out;
    },
    *batches(from) {
      for (let epoch = from.epoch, index = from.index; ; epoch++, index = 0) {
        const perm = new Rng(seedFrom(o.dataSeed ?? 0, `epoch ${epoch}`)).permutation(train.n); // seeded per epoch
        for (; index < perEpoch; index++) {
          const { x, y } = batchOf(train, perm.subarray(index * B, (index + 1) * B));
          const next = index + 1 < perEpoch ? { epoch, index: index + 1 } : { epoch: epoch + 1, index: 0 };
          const shape = [B, 1, S, S];
          yield { feeds: { images: { data: x, shape }, masks: { data: y, shape } }, weight: B, next } as TrainBatch;
        }
      }
    },
    batchesPerEpoch: perEpoch,
    stepInputs: shared?.stepInputs,
    settings: { batch_size: B, train_images: train.n, data_seed: o.dataSeed ?? 0 },
  };
}

/**
 * Mean Dice over the images of `set` (2·|P∩M| / (|P| + |M|) per image, P = pixels with logit > 0; 1 when both are
 * empty), with the PeftModel's active adapters, or with trained U-Net weights as overrides.
 */
export async function segmentationDice(
  unet: UNetSource,
  set: SegmentationSet,
  opts: { peft?: PeftModel; weights?: ParamValues; batchSize?: number } = {},
): Promise<number> {
  const B = opts.batchSize ?? 50;
  const S = set.size;
  const g = new Graph('segmentation-eval');
  const images = g.input('images', 'f32', [B, 1, S, S]);
  const overrides = new Map(opts.weights ?? []);
  if (opts.peft) for (const [k, v] of opts.peft.weightOverrides()) overrides.set(k, v);
  const ctx = unet.context(g, { hooks: opts.peft?.hooks(), overrides });
  g.output('logits', segmentationLogits(ctx, images));
  const session = await compile(g, { worker: false });
  const per = S * S;
  let total = 0;
  for (let start = 0; start < set.n; start += B) {
    const rows = Array.from({ length: B }, (_, i) => Math.min(start + i, set.n - 1)); // the last batch repeats a row
    const { x, y } = batchOf(set, rows);
    const z = (await session.run({ images: x })).logits.data as Float32Array;
    for (let b = 0; b < B && start + b < set.n; b++) {
      let [inter, p, m] = [0, 0, 0];
      for (let k = b * per; k < (b + 1) * per; k++) {
        const pred = z[k] > 0 ? 1 : 0;
        inter += pred * y[k];
        p += pred;
        m += y[k];
      }
      total += p + m === 0 ? 1 : (2 * inter) / (p + m);
    }
  }
  return total / set.n;
}
