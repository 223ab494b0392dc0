// A toy model with every layer kind adapters wrap (Embedding, Linear with bias, GPT-2-style Conv1D, optionally a
// Conv2d over the token axis, an output head), built from nn/ with in-memory weights, so adapter tests need no
// checkpoint; and a TrainTask over it that trains one adapter the way the causal-LM task does (adapterTraining).
import type { Graph, Tensor } from '../../src/graph/index.ts';
import { crossEntropy, Graph as G } from '../../src/graph/index.ts';
import { Rng } from '../../src/linalg/index.ts';
import {
  type Conv2dInfo,
  createContext,
  type ModuleHooks,
  type ModuleInfo,
  type QuantizedWeight,
  WeightSource,
} from '../../src/nn/index.ts';
import type { AdaptableBase, PeftModel } from '../../src/peft/index.ts';
import { compile } from '../../src/runtime/index.ts';
import { adapterTraining, type TrainTask } from '../../src/train/index.ts';

export const V = 11,
  D = 6,
  H = 5,
  O = 4;
export const MODULES: Exclude<ModuleInfo, Conv2dInfo>[] = [
  { kind: 'embedding', path: 'model.embed_tokens', numEmbeddings: V, dim: D, weightName: 'model.embed_tokens.weight' },
  {
    kind: 'linear',
    path: 'model.layers.0.q_proj',
    inFeatures: D,
    outFeatures: H,
    weightName: 'model.layers.0.q_proj.weight',
    biasName: 'model.layers.0.q_proj.bias',
  },
  {
    kind: 'linear',
    path: 'model.layers.1.q_proj',
    inFeatures: H,
    outFeatures: D,
    weightName: 'model.layers.1.q_proj.weight',
    biasName: null,
  },
  {
    kind: 'conv1d',
    path: 'model.layers.1.c_fc',
    inFeatures: D,
    outFeatures: O,
    weightName: 'model.layers.1.c_fc.weight',
    biasName: 'model.layers.1.c_fc.bias',
  },
  { kind: 'linear', path: 'lm_head', inFeatures: O, outFeatures: V, weightName: 'lm_head.weight', biasName: null },
];

/** A Conv2d (D → D, kernel 3×1 over the token axis, padding 1) between layers 1's q_proj and c_fc. */
export const CONV: Conv2dInfo = {
  kind: 'conv2d',
  path: 'model.layers.1.conv',
  inChannels: D,
  outChannels: D,
  kernel: [3, 1],
  stride: [1, 1],
  padding: [1, 0],
  dilation: [1, 1],
  groups: 1,
  weightName: 'model.layers.1.conv.weight',
  biasName: 'model.layers.1.conv.bias',
};

/** The modules of the toy model, with or without the conv block. */
export const modulesOf = (conv = false): ModuleInfo[] =>
  conv ? [...MODULES.slice(0, 3), CONV, ...MODULES.slice(3)] : MODULES;

/** Random base weights (seeded). */
export function toyWeights(seed = 1): Map<string, Float32Array> {
  const r = new Rng(seed);
  const w = new Map<string, Float32Array>();
  for (const m of MODULES) {
    const n = m.kind === 'embedding' ? m.numEmbeddings * m.dim : m.inFeatures * m.outFeatures;
    w.set(m.weightName, r.normalArray(n, 0.5));
    if (m.kind !== 'embedding' && m.biasName) w.set(m.biasName, r.normalArray(m.outFeatures, 0.1));
  }
  w.set(CONV.weightName, r.normalArray(D * D * 3, 0.3)); // drawn last: the other weights are as before
  w.set(CONV.biasName!, r.normalArray(D, 0.1));
  return w;
}

export function toyBase(weights = toyWeights(), { conv = false } = {}): AdaptableBase {
  return {
    modules: modulesOf(conv),
    outputHead: 'lm_head',
    readWeight: async (n) => Float32Array.from(weights.get(n)!),
  };
}

/** Options of toyForward. */
export interface ToyOptions {
  trainable?: string[];
  dtype?: 'f32' | 'f64';
  /** Run the conv block (computed in f32: ONNX Runtime's Conv has no f64 kernel). */
  conv?: boolean;
  /** Prefixes the weights' graph names (a second, frozen copy of the model in one graph). */
  namePrefix?: string;
  /** Quantized frozen Linear weights by name (a quantized base: models/quantize.ts). */
  quantized?: ReadonlyMap<string, QuantizedWeight>;
}

/** logits [B, T, V] of the toy model for ids [B, T], and the head's input `hidden` [B, T, O]. */
export function toyForward(
  g: Graph,
  ids: Tensor,
  weights: Map<string, Float32Array>,
  hooks: ModuleHooks = {},
  opts: ToyOptions = {},
): { logits: Tensor; hidden: Tensor; ws: WeightSource } {
  const { trainable, dtype, namePrefix } = opts;
  const ws = new WeightSource(g, null, { overrides: weights, trainable, dtype, namePrefix });
  const modules = modulesOf(opts.conv);
  const ctx = createContext({ graph: g, weights: ws, modules, config: {}, hooks, quantized: opts.quantized });
  const h = ctx.embedding('model.embed_tokens', ids);
  const a = ctx.linear('model.layers.0.q_proj', h).tanh();
  let b = ctx.linear('model.layers.1.q_proj', a); // [B, T, D]
  if (opts.conv) {
    // ONNX Runtime's Conv has no f64 kernel: in an f64 graph the conv block's weights come from an f32 source
    const ws32 = dtype === 'f64' ? new WeightSource(g, null, { overrides: weights, dtype: 'f32', namePrefix }) : ws;
    const convCtx = ws32 === ws ? ctx : createContext({ graph: g, weights: ws32, modules: [CONV], config: {}, hooks });
    const x = b.transpose([0, 2, 1]).unsqueeze(3).cast('f32'); // [B, D, T, 1]
    b = convCtx.conv2d(CONV.path, x).squeeze(3).transpose([0, 2, 1]).cast(b.dtype).tanh(); // [B, T, D]
  }
  const c = ctx.linear('model.layers.1.c_fc', b).tanh();
  return { logits: ctx.linear('lm_head', c), hidden: c, ws };
}

export const IDS = BigInt64Array.from([1, 4, 7, 10, 2, 0, 3, 3].map(BigInt));
export const LABELS = BigInt64Array.from([3, 1, 4, 1, 5, 9, 2, -100].map(BigInt));

/**
 * The toy loss graph of adapter `adapter`: next-token cross-entropy of ids [2, 4] against labels [8] (-100 not
 * counted) plus the adapter's loss terms, which see the frozen toy model (no adapter) through `frozenLogits`.
 */
export function toyLoss(
  g: Graph,
  peft: PeftModel,
  adapter: string,
  o: {
    training: boolean;
    conv?: boolean;
    dtype?: 'f32' | 'f64';
    paramDtype?: 'f32' | 'f64';
    weights?: Map<string, Float32Array>;
    quantized?: ReadonlyMap<string, QuantizedWeight>;
  },
) {
  const weights = new Map(o.weights ?? toyWeights());
  for (const k of o.quantized?.keys() ?? []) weights.delete(k); // an in-memory value would replace the quantized one
  for (const [k, v] of peft.weightOverrides(adapter)) weights.set(k, v);
  const dropoutSeed = o.training ? g.input('dropout_seed', 'f32', []) : undefined;
  const binding = peft.bind({ train: adapter, dropoutSeed, feedStepInputs: o.training, paramDtype: o.paramDtype });
  const ids = g.input('ids', 'i64', [2, 4]);
  const labels = g.input('labels', 'i64', [8]);
  const opts = { dtype: o.dtype, conv: o.conv, trainable: peft.trainableWeights(adapter), quantized: o.quantized };
  const { logits, hidden, ws } = toyForward(g, ids, weights, binding.hooks, opts);
  const flat = logits.reshape([8, V]);
  let loss = crossEntropy(flat, labels);
  const counted = labels.equal(labels.lift(-100)).not();
  let frozen: Tensor | null = null;
  const frozenLogits = () => {
    frozen ??= toyForward(
      g,
      ids,
      o.weights ?? toyWeights(),
      {},
      { dtype: o.dtype, conv: o.conv, namePrefix: 'frozen/' },
    )
      .logits.reshape([8, V])
      .detach();
    return frozen;
  };
  for (const t of binding.lossTerms())
    loss = loss.add(t.build({ logits: flat, targets: labels, counted, frozenLogits }));
  return { loss, binding, ws, hidden };
}

/** A TrainTask training adapter `adapter` of `peft` on the toy model, as causal-lm.ts does on real models. */
export function toyTask(
  peft: PeftModel,
  adapter: string,
  { conv = false, quantized }: { conv?: boolean; quantized?: ReadonlyMap<string, QuantizedWeight> } = {},
): TrainTask {
  const shared = adapterTraining(peft, adapter);
  return {
    build() {
      const g = new G(`toy-${adapter}`);
      const { loss, binding, ws } = toyLoss(g, peft, adapter, { training: true, conv, quantized });
      return shared.taskGraph(g, binding, loss, { training: true, weights: [...ws.inputs.values()] });
    },
    initialParams: () => shared.initialParams(),
    *batches(from) {
      for (let i = from.index; ; i++) {
        const r = new Rng(1000 + i);
        const ids = BigInt64Array.from({ length: 8 }, () => BigInt(Math.floor(r.next() * V)));
        const labels = BigInt64Array.from({ length: 8 }, () => BigInt(Math.floor(r.next() * V)));
        yield { feeds: { ids, labels }, weight: 8, next: { epoch: 0, index: i + 1 } };
      }
    },
    stepInputs: shared.stepInputs,
    save: shared.save,
  };
}

/** Logits [2, 4, V] of the toy model on IDS through ONNX Runtime, with `peft`'s active adapters (and its overrides). */
export async function toyLogits(peft: PeftModel | null, { conv = false } = {}): Promise<Float32Array> {
  const g = new G('toy-logits');
  const ids = g.input('ids', 'i64', [2, 4]);
  const w = toyWeights();
  if (peft) for (const [k, v] of peft.weightOverrides()) w.set(k, v);
  g.output('logits', toyForward(g, ids, w, peft ? peft.hooks() : {}, { conv }).logits);
  return (await (await compile(g, { worker: false })).run({ ids: IDS })).logits.data as Float32Array;
}

/** Adds seeded N(0, scale²) noise to every trainable tensor of adapter `name` (B = 0 at init otherwise). */
export function perturbAdapter(peft: PeftModel, name = 'default', seed = 11, scale = 0.3): void {
  const r = new Rng(seed);
  const values = [...peft.trainableValues(name)].map(([k, v]) => [k, v.map((x) => x + scale * r.normal())] as const);
  peft.setValues(name, new Map(values));
}
