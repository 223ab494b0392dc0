// Single adapted layers for method tests that need shapes the toy model lacks (MiSS's blocks, ranks up to min(out,
// in)): a base of independent Linear / GPT-2 Conv1D layers with seeded weights, a layer's output through a graph with
// the adapters' hooks (and merged or replaced weights as overrides), and the float64 dense reference
// y = x·(W0 + ΔW)ᵀ + b with ΔW formed on the host from a method's own formula.
import { Graph } from '../../../src/graph/index.ts';
import { Rng } from '../../../src/linalg/index.ts';
import { createContext, type ModuleInfo, WeightSource } from '../../../src/nn/index.ts';
import type { AdaptableBase, PeftModel } from '../../../src/peft/index.ts';
import { compile } from '../../../src/runtime/index.ts';

/** A layer of the dense base: `model.layers.<i>.<name>`, Linear ([out, in]) or GPT-2 Conv1D ([in, out]). */
export interface DenseLayer {
  name: string;
  kind: 'linear' | 'conv1d';
  inFeatures: number;
  outFeatures: number;
  bias?: boolean;
}

/** A module of the dense base. */
export type DenseModule = Extract<ModuleInfo, { kind: 'linear' | 'conv1d' }>;

/** A base of independent layers and its weights (W0 ~ N(0, 0.5²), biases ~ N(0, 0.1²), seeded). */
export function denseBase(layers: readonly DenseLayer[], seed = 1) {
  const rng = new Rng(seed);
  const weights = new Map<string, Float32Array>();
  const modules: DenseModule[] = layers.map((l, i) => {
    const path = `model.layers.${i}.${l.name}`;
    weights.set(`${path}.weight`, rng.normalArray(l.inFeatures * l.outFeatures, 0.5));
    if (l.bias) weights.set(`${path}.bias`, rng.normalArray(l.outFeatures, 0.1));
    return {
      kind: l.kind,
      path,
      inFeatures: l.inFeatures,
      outFeatures: l.outFeatures,
      weightName: `${path}.weight`,
      biasName: l.bias ? `${path}.bias` : null,
    };
  });
  const base: AdaptableBase = {
    modules,
    outputHead: null,
    readWeight: async (n) => Float32Array.from(weights.get(n)!),
  };
  return { base, weights, modules };
}

/** The [out, in] matrix of a layer's stored weight, float64. */
export function w0Matrix(weights: Map<string, Float32Array>, m: DenseModule): Float64Array {
  const [o, i] = [m.outFeatures, m.inFeatures];
  const w = weights.get(m.weightName)!;
  const out = new Float64Array(o * i);
  for (let r = 0; r < o; r++)
    for (let c = 0; c < i; c++) out[r * i + c] = m.kind === 'conv1d' ? w[c * o + r] : w[r * i + c];
  return out;
}

/** y [n, out] = x [n, in]·Wᵀ + b in float64, W [out, in], b [out]. */
export function denseOutput(x: ArrayLike<number>, n: number, w: ArrayLike<number>, bias: ArrayLike<number>) {
  const out = bias.length;
  const inn = x.length / n;
  const y = new Float64Array(n * out);
  for (let t = 0; t < n; t++)
    for (let j = 0; j < out; j++) {
      let s = bias[j];
      for (let k = 0; k < inn; k++) s += x[t * inn + k] * w[j * inn + k];
      y[t * out + j] = s;
    }
  return y;
}

/** The dense reference of a layer with ΔW [out, in] added to its W0 (ΔW null: the base layer). */
export function referenceOutput(
  weights: Map<string, Float32Array>,
  m: DenseModule,
  x: ArrayLike<number>,
  n: number,
  delta: ArrayLike<number> | null,
): Float64Array {
  const w = w0Matrix(weights, m);
  if (delta) for (let k = 0; k < w.length; k++) w[k] += delta[k];
  const bias = m.biasName ? weights.get(m.biasName)! : new Float64Array(m.outFeatures);
  return denseOutput(x, n, w, bias);
}

/** A layer's output on x [n, in] through a graph with `peft`'s hooks and weight overrides (merged, replaced). */
export async function graphOutput(
  peft: PeftModel,
  weights: Map<string, Float32Array>,
  modules: DenseModule[],
  path: string,
  x: Float32Array,
  n: number,
): Promise<Float32Array> {
  const g = new Graph(`dense-${path}`);
  const m = modules.find((q) => q.path === path)!;
  const overrides = new Map(weights);
  for (const [k, v] of peft.weightOverrides()) overrides.set(k, v);
  const ws = new WeightSource(g, null, { overrides });
  const ctx = createContext({ graph: g, weights: ws, modules, config: {}, hooks: peft.hooks() });
  g.output('y', ctx.linear(path, g.input('x', 'f32', [n, m.inFeatures])));
  return (await (await compile(g, { worker: false })).run({ x })).y.data as Float32Array;
}
