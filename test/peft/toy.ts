// A toy model with every layer kind adapters wrap (Embedding, Linear with bias, GPT-2-style Conv1D, an output
// head), built from nn/ with in-memory weights, so adapter tests need no checkpoint.
import type { Graph, Tensor } from '../../src/graph/index.ts';
import { createContext, WeightSource, type ModuleInfo, type ModuleHooks, type Conv2dInfo } from '../../src/nn/index.ts';
import type { AdaptableBase } from '../../src/peft/index.ts';
import { Rng } from '../../src/linalg/index.ts';

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

/** Random base weights (seeded). */
export function toyWeights(seed = 1): Map<string, Float32Array> {
  const r = new Rng(seed);
  const w = new Map<string, Float32Array>();
  for (const m of MODULES) {
    const n = m.kind === 'embedding' ? m.numEmbeddings * m.dim : m.inFeatures * m.outFeatures;
    w.set(m.weightName, r.normalArray(n, 0.5));
    if (m.kind !== 'embedding' && m.biasName) w.set(m.biasName, r.normalArray(m.outFeatures, 0.1));
  }
  return w;
}

export function toyBase(weights = toyWeights()): AdaptableBase {
  return { modules: MODULES, outputHead: 'lm_head', readWeight: async (n) => Float32Array.from(weights.get(n)!) };
}

/** logits [B, T, V] of the toy model for ids [B, T]. */
export function toyForward(
  g: Graph,
  ids: Tensor,
  weights: Map<string, Float32Array>,
  hooks: ModuleHooks = {},
  opts: { trainable?: string[]; dtype?: 'f32' | 'f64' } = {},
): { logits: Tensor; ws: WeightSource } {
  const ws = new WeightSource(g, null, { overrides: weights, trainable: opts.trainable, dtype: opts.dtype });
  const ctx = createContext({ graph: g, weights: ws, modules: MODULES, config: {}, hooks });
  const h = ctx.embedding('model.embed_tokens', ids);
  const a = ctx.linear('model.layers.0.q_proj', h).tanh();
  const b = ctx.linear('model.layers.1.q_proj', a);
  const c = ctx.linear('model.layers.1.c_fc', b).tanh();
  return { logits: ctx.linear('lm_head', c), ws };
}

export const IDS = BigInt64Array.from([1, 4, 7, 10, 2, 0, 3, 3].map(BigInt));
