/**
 * The merged model whose merge coefficients are the trainable parameters: every pooled Linear computes
 *   y = W0·x + B_cat · (m ⊙ (A_cat · x)),  m on adapter i's rank block = φ(w)ᵢ·sᵢ,
 * i.e. W0·x + Σᵢ φ(w)ᵢ·sᵢ·Bᵢ(Aᵢx), kept factored (ΔW is never formed). w is a graph input, so lorakit's autodiff
 * gives ∂L/∂w (the study's dL/dwᵢ = Σ_modules ⟨∂L/∂y, sᵢBᵢAᵢx⟩·φ'(wᵢ)). The factors are graph inputs too, so one
 * compiled graph serves the recycled pool and its random control. φ and the granularity follow the Recycling
 * study's `peft_extension/lorahub` (`per_module` here is 'module'; one vector shared by all modules is 'task').
 * Not here: the loss and the optimiser (objective.ts), the methods' settings (adamerging.ts, pi-tuning.ts, ...).
 */
import { LorakitError } from '../errors.ts';
import type { Graph, Tensor } from '../graph/index.ts';
import type { LinearModule, ModuleHooks } from '../nn/index.ts';
import { type RecycledPool, totalRank } from './pool.ts';

/** The coefficient map φ: identity, leaky-ReLU (slope 0.01), square, sigmoid, or softmax over the adapters. */
export type Phi = 'linear' | 'leaky_relu' | 'squared' | 'sigmoid' | 'softmax';
/** All φ names, for option checks. */
export const PHIS: readonly Phi[] = ['linear', 'leaky_relu', 'squared', 'sigmoid', 'softmax'];

/** How the coefficients are shaped and mapped. */
export interface CoefficientSpec {
  /** 'task': one w [n] shared by every module (task-wise); 'module': w [M, n], one row per pooled Linear. */
  granularity: 'task' | 'module';
  phi: Phi;
  /** a ⊙ φ(w) + b with trainable a (init 1) and b (init 0), shaped like w (the study's option for sigmoid/softmax). */
  affine?: boolean;
}

/** The graph handles of a coefficient-merged model. */
export interface CoefficientGraph {
  hooks: ModuleHooks;
  /** The coefficients w: [n] or [M, n]. */
  w: Tensor;
  /** The affine scale and shift (same shape as w), when spec.affine. */
  affine: { a: Tensor; b: Tensor } | null;
  /** Per pooled module (pool order): its factor inputs A_cat [R, in] and B_cat [out, R]. */
  factors: { a: Tensor; b: Tensor }[];
}

/** The shape of w for a pool and spec. */
export function coefficientShape(pool: RecycledPool, spec: CoefficientSpec): number[] {
  const n = pool.names.length;
  return spec.granularity === 'task' ? [n] : [pool.modules.length, n];
}

/** φ applied to w [..., n]; the softmax is over the adapter axis (last). */
export function applyPhi(w: Tensor, phi: Phi): Tensor {
  switch (phi) {
    case 'linear':
      return w;
    // torch's leaky_relu backward takes the negative slope at 0, as Where(w > 0, ·, ·) does: the study's "ours"
    // starts at w = 0 and still gets a gradient of 0.01·∂L/∂φ
    case 'leaky_relu':
      return w.greater(0).where(w, w.mul(0.01));
    case 'squared':
      return w.mul(w);
    case 'sigmoid':
      return w.sigmoid();
    case 'softmax':
      return w.softmax(-1);
  }
}

/**
 * Records the coefficient-merged adapter into graph `g`: inputs `coef.w` (and `coef.affine_a`, `coef.affine_b`) and
 * per module `pool.<k>.A` / `pool.<k>.B`, all in `dtype`; the returned hooks wrap the pool's modules and pass every
 * other Linear through.
 */
export function coefficientGraph(
  g: Graph,
  pool: RecycledPool,
  spec: CoefficientSpec,
  dtype: 'f32' | 'f64' = 'f32',
): CoefficientGraph {
  if (!PHIS.includes(spec.phi))
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `coefficients: phi must be one of ${PHIS.join(', ')}, got ${spec.phi}`,
    );
  const shape = coefficientShape(pool, spec);
  const w = g.input('coef.w', dtype, shape);
  const affine = spec.affine
    ? { a: g.input('coef.affine_a', dtype, shape), b: g.input('coef.affine_b', dtype, shape) }
    : null;
  let c = applyPhi(w, spec.phi); // [n] or [M, n]
  if (affine) c = c.mul(affine.a).add(affine.b);
  const n = pool.names.length;
  const byPath = new Map<string, number>(pool.modules.map((m, k) => [m.path, k]));
  const factors = pool.modules.map((m, k) => ({
    a: g.input(`pool.${k}.A`, dtype, [totalRank(m), m.in]),
    b: g.input(`pool.${k}.B`, dtype, [m.out, totalRank(m)]),
  }));
  const linear = (mod: LinearModule, x: Tensor): Tensor => {
    const k = byPath.get(mod.path);
    if (k === undefined) return mod.base(x);
    const m = pool.modules[k];
    if (mod.fanInFanOut || mod.inFeatures !== m.in || mod.outFeatures !== m.out)
      throw new LorakitError(
        'LK_SHAPE_MISMATCH',
        `adaptive merge: module ${m.path} of the pool is [${m.out}, ${m.in}]; the model's is ` +
          `[${mod.outFeatures}, ${mod.inFeatures}]${mod.fanInFanOut ? ' (fan_in_fan_out)' : ''}`,
      );
    // adapter index of each rank row, and the scaling of that row: m = φ(w)[block]·s
    const block: number[] = [];
    const scale: number[] = [];
    for (let i = 0; i < n; i++)
      for (let j = m.offsets[i]; j < m.offsets[i + 1]; j++) {
        block.push(i);
        scale.push(m.scaling[i]);
      }
    const row = spec.granularity === 'task' ? c : c.gather(g.constInts([k], []), 0); // [n]
    const perRank = row.gather(g.constInts(block), 0).mul(g.constant(scale, dtype, [block.length])); // [R]
    const z = x.matmul(factors[k].a.transpose([1, 0])).mul(perRank); // [..., R]
    return mod.base(x).add(z.matmul(factors[k].b.transpose([1, 0]))); // [..., out]
  };
  return { hooks: { linear, adapts: (path) => byPath.has(path) }, w, affine, factors };
}

/** Feeds of the pool's factors for the graph's factor inputs (f64 copies when dtype is f64). */
export function factorFeeds(
  cg: CoefficientGraph,
  pool: RecycledPool,
  dtype: 'f32' | 'f64' = 'f32',
): Record<string, Float32Array | Float64Array> {
  if (cg.factors.length !== pool.modules.length)
    throw new LorakitError(
      'LK_SHAPE_MISMATCH',
      `adaptive merge: the graph has ${cg.factors.length} pooled modules, the pool ${pool.modules.length}`,
    );
  const feeds: Record<string, Float32Array | Float64Array> = {};
  const cast = (v: Float32Array) => (dtype === 'f64' ? Float64Array.from(v) : v);
  pool.modules.forEach((m, k) => {
    feeds[cg.factors[k].a.name] = cast(m.a);
    feeds[cg.factors[k].b.name] = cast(m.b);
  });
  return feeds;
}
