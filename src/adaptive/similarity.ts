/**
 * How close a recycled LoRA is to the target task, for the two selections that need a target LoRA:
 * - π-Tuning's quasi Fisher information (Wu et al., ICML 2023, arXiv 2304.14381): an expert's task embedding is the
 *   diagonal of the empirical Fisher of its own parameters on the target samples, F_θ = mean_s (∂ℓ_s/∂θ)², with ℓ_s
 *   the mean next-token NLL of sample s under the base model plus that expert alone. The target LoRA (π-Tuning trains
 *   the target's expert first) gets its embedding on the same samples, and the similarity is the cosine of the two.
 *   The diagonal is summed over the rank axis per module, giving [in] from A and [out] from B, as Task2Vec averages
 *   the Fisher within a filter: the rank units of a LoRA have no fixed order, and ranks may differ between experts.
 * - The Recycling study's `closeness` (`scripts/model_closeness_metrics.py`, micro aggregate): per module a cosine
 *   between the candidate's and the target's ΔW = s·B·A (or its variants: clamped, absolute, or of ΔW⊙ΔW, the study's
 *   weight-only "quasi_fim"), averaged over the union of modules (0 where either lacks one); quasi_fim takes √.
 * Higher is closer in both. Not here: ranking and keeping the top k (select.ts).
 */
import { LorakitError } from '../errors.ts';
import { Graph, grad } from '../graph/index.ts';
import type { LoadedModel } from '../models/index.ts';
import { compile } from '../runtime/index.ts';
import { causalLmLoss } from '../train/index.ts';
import { coefficientGraph, factorFeeds } from './coefficients.ts';
import type { TokenBatch } from './objective.ts';
import { factorsOf, type RecycledPool, totalRank } from './pool.ts';

/** The study's closeness variants (`cosine_closeness`'s `variant`). */
export type ClosenessVariant = 'cosine' | 'clamp' | 'clamp_pm' | 'abs' | 'quasi_fim';
/** All closeness variants, for option checks. */
export const CLOSENESS_VARIANTS: readonly ClosenessVariant[] = ['cosine', 'clamp', 'clamp_pm', 'abs', 'quasi_fim'];

/** Per pooled module, the Fisher diagonal of A_cat [R, in] and B_cat [out, R]; block i from adapter i alone. */
export type FisherDiagonal = { a: Float64Array; b: Float64Array }[];

/** Options of `quasiFisher`. */
export interface FisherOptions {
  model: LoadedModel;
  /** Target batches [batch, seqLen]; each window with at least one counted target is one sample. */
  samples: readonly TokenBatch[];
  seqLen: number;
  /** Compute dtype (f64 for checks). */
  dtype?: 'f32' | 'f64';
}

/** The windows of `batches` ([B, T] each) that have a counted target, as [1, T] batches. */
export function windowsOf(batches: readonly TokenBatch[], seqLen: number): TokenBatch[] {
  const out: TokenBatch[] = [];
  for (const b of batches)
    for (let row = 0; row * seqLen < b.inputIds.length; row++) {
      const labels = b.labels.slice(row * seqLen, (row + 1) * seqLen);
      if (labels.some((l) => l >= 0n))
        out.push({ inputIds: b.inputIds.slice(row * seqLen, (row + 1) * seqLen), labels });
    }
  return out;
}

/**
 * The diagonal empirical Fisher of every pooled adapter's factors on the target samples (see the file header): one
 * compiled loss-and-gradient graph over the whole pool, run once per adapter and sample with a one-hot coefficient,
 * so the gradient of adapter i's block is that of base + adapter i (the other blocks are scaled by 0).
 */
export async function quasiFisher(pool: RecycledPool, o: FisherOptions): Promise<FisherDiagonal> {
  const windows = windowsOf(o.samples, o.seqLen);
  if (windows.length === 0)
    throw new LorakitError('LK_INVALID_ARGUMENT', 'quasiFisher: the target samples have no counted targets');
  const dtype = o.dtype ?? 'f32';
  const g = new Graph('quasi-fisher');
  const cg = coefficientGraph(g, pool, { granularity: 'task', phi: 'linear' }, dtype);
  const ctx = o.model.context(g, { hooks: cg.hooks, dtype });
  const inputIds = g.input('input_ids', 'i64', [1, o.seqLen]);
  const labels = g.input('labels', 'i64', [o.seqLen]);
  const { loss } = causalLmLoss({ ctx, inputIds, labels, labelsAre: 'next' });
  const grads = grad(
    loss,
    cg.factors.flatMap((f) => [f.a, f.b]),
  );
  grads.forEach((t, j) => g.output(`grad_${j}`, t));
  // ORT fuses x·sigmoid(x) into QuickGelu, which has a float32 kernel only
  const session = await compile(g, dtype === 'f64' ? { optimization: 'disabled' } : {});
  const n = pool.names.length;
  const fisher: FisherDiagonal = pool.modules.map((m) => ({
    a: new Float64Array(totalRank(m) * m.in),
    b: new Float64Array(m.out * totalRank(m)),
  }));
  try {
    const factors = factorFeeds(cg, pool, dtype);
    for (let i = 0; i < n; i++) {
      const w = new Float64Array(n);
      w[i] = 1;
      const wf = dtype === 'f64' ? w : Float32Array.from(w);
      for (const s of windows) {
        const out = await session.run({ ...factors, [cg.w.name]: wf, input_ids: s.inputIds, labels: s.labels });
        pool.modules.forEach((m, k) => {
          const R = totalRank(m);
          const ga = out[`grad_${2 * k}`].data as ArrayLike<number>; // [R, in]
          const gb = out[`grad_${2 * k + 1}`].data as ArrayLike<number>; // [out, R]
          for (let j = m.offsets[i] * m.in; j < m.offsets[i + 1] * m.in; j++) fisher[k].a[j] += ga[j] ** 2;
          for (let r = 0; r < m.out; r++)
            for (let c = m.offsets[i]; c < m.offsets[i + 1]; c++) fisher[k].b[r * R + c] += gb[r * R + c] ** 2;
        });
      }
    }
  } finally {
    await session.dispose();
  }
  for (const f of fisher) {
    for (let j = 0; j < f.a.length; j++) f.a[j] /= windows.length;
    for (let j = 0; j < f.b.length; j++) f.b[j] /= windows.length;
  }
  return fisher;
}

/** Adapter i's Fisher embedding by module path: [in + out], the diagonal of A and of B each summed over its rank. */
export function fisherEmbedding(pool: RecycledPool, fisher: FisherDiagonal, i: number): Map<string, Float64Array> {
  const out = new Map<string, Float64Array>();
  pool.modules.forEach((m, k) => {
    const R = totalRank(m);
    const e = new Float64Array(m.in + m.out);
    for (let r = m.offsets[i]; r < m.offsets[i + 1]; r++)
      for (let j = 0; j < m.in; j++) e[j] += fisher[k].a[r * m.in + j];
    for (let o = 0; o < m.out; o++)
      for (let r = m.offsets[i]; r < m.offsets[i + 1]; r++) e[m.in + o] += fisher[k].b[o * R + r];
    out.set(m.path, e);
  });
  return out;
}

/** Cosine of two embeddings over the union of their modules (a module one of them lacks counts as zeros). */
export function embeddingCosine(x: Map<string, Float64Array>, y: Map<string, Float64Array>): number {
  let dot = 0,
    nx = 0,
    ny = 0;
  for (const [path, ex] of x) {
    const ey = y.get(path);
    for (let j = 0; j < ex.length; j++) {
      nx += ex[j] ** 2;
      if (ey) dot += ex[j] * ey[j];
    }
  }
  for (const ey of y.values()) for (const v of ey) ny += v * v;
  return nx > 0 && ny > 0 ? dot / Math.sqrt(nx * ny) : 0;
}

/** π-Tuning's similarity of each pooled adapter to `target` (a one-adapter pool) on the target samples. */
export async function quasiFisherSimilarity(
  pool: RecycledPool,
  target: RecycledPool,
  o: FisherOptions,
): Promise<number[]> {
  if (target.names.length !== 1)
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `quasiFisherSimilarity: the target must be one adapter, got ${target.names.length}`,
    );
  const fp = await quasiFisher(pool, o);
  const et = fisherEmbedding(target, await quasiFisher(target, o), 0);
  return pool.names.map((_, i) => embeddingCosine(fisherEmbedding(pool, fp, i), et));
}

/** ΔW = s·B·A [out, in] of adapter i in module k, float64. */
function deltaOf(pool: RecycledPool, k: number, i: number): Float64Array | null {
  const m = pool.modules[k];
  const f = factorsOf(m, i);
  if (f.r === 0) return null;
  const dw = new Float64Array(m.out * m.in);
  for (let o = 0; o < m.out; o++)
    for (let r = 0; r < f.r; r++) {
      const bk = m.scaling[i] * f.b[o * f.r + r];
      for (let j = 0; j < m.in; j++) dw[o * m.in + j] += bk * f.a[r * m.in + j];
    }
  return dw;
}

/** The study's closeness of each pooled adapter to `target` (a one-adapter pool); see the file header. */
export function closeness(pool: RecycledPool, target: RecycledPool, variant: ClosenessVariant = 'cosine'): number[] {
  if (!CLOSENESS_VARIANTS.includes(variant))
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `closeness: variant must be one of ${CLOSENESS_VARIANTS.join(', ')}, got ${variant}`,
    );
  if (target.names.length !== 1)
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `closeness: the target must be one adapter, got ${target.names.length}`,
    );
  const tk = new Map(target.modules.map((m, k) => [m.path, k]));
  const paths = new Set([...pool.modules.map((m) => m.path), ...tk.keys()]);
  return pool.names.map((_, i) => {
    let sum = 0;
    for (const path of paths) {
      const k = pool.modules.findIndex((m) => m.path === path);
      const c = k < 0 ? null : deltaOf(pool, k, i);
      const t = tk.has(path) ? deltaOf(target, tk.get(path)!, 0) : null;
      if (!c || !t) continue; // prod = 0 and one norm 0: the module adds 0 to the mean
      if (c.length !== t.length)
        throw new LorakitError(
          'LK_SHAPE_MISMATCH',
          `closeness: module ${path} is ${c.length} values in adapter "${pool.names[i]}", ${t.length} in the target`,
        );
      const sq = variant === 'quasi_fim';
      let prod = 0,
        nc = 0,
        nt = 0;
      for (let j = 0; j < c.length; j++) {
        const x = sq ? c[j] * c[j] : c[j];
        const y = sq ? t[j] * t[j] : t[j];
        const p = x * y;
        prod += variant === 'clamp' ? Math.max(p, 0) : variant === 'abs' ? Math.abs(p) : p;
        nc += x * x;
        nt += y * y;
      }
      if (variant === 'clamp_pm') prod = Math.max(prod, 0);
      sum += prod / Math.sqrt(nc * nt + 1e-6); // the study's ε
    }
    const mean = sum / paths.size;
    return variant === 'quasi_fim' ? Math.sqrt(Math.max(mean, 0)) : mean;
  });
}
