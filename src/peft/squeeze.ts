/**
 * LoRA-Squeeze's compression of one layer (Post-Squeeze; spec methods-b §11, arXiv:2602.10993): the best rank-k
 * approximation (Frobenius, Eckart–Young) of a layer's ΔW, returned as new LoRA factors for a target scale.
 * - From LoRA factors, exactly and without forming the [m, n] ΔW: B = Q_B·R_B, Aᵀ = Q_A·R_A (thin QR), so
 *   ΔW = s·B·A = Q_B·C·Q_Aᵀ with the small core C = s·R_B·R_Aᵀ; C = U·Σ·Vᵀ (exact SVD) gives ΔW's singular triplets
 *   (Q_B·U, Σ, Q_A·V). Cost O((m + n)·r²) + O(r³).
 * - From a dense ΔW (any other mergeable method: DoRA, VeRA, ...; the method's merged weight minus W0): a dense SVD,
 *   exact on the host for small layers, randomized (linalg/rsvd.ts, ONNX Runtime products) for large ones.
 * The truncation is split symmetrically: B' = U_k·Σ_k^½/√s', A' = Σ_k^½·V_kᵀ/√s', so s'·B'·A' = ΔW_k for the target
 * scale s' (α'/k, or α'/√k with rsLoRA). Rank selection: a fixed rank, or the smallest rank keeping a fraction of
 * the energy Σσ² (capped by the fixed rank).
 * Not here: which layers and how the folder is written (squeeze-adapter.ts), the training stages (train/squeeze.ts).
 */
import { LorakitError } from '../errors.ts';
import { qr, svd, svdLowrank, type Svd } from '../linalg/index.ts';

/** How many components to keep. */
export interface RankSelection {
  /** The rank to keep (the most, when `energy` is given). */
  rank: number;
  /** Keep the smallest rank whose Σ_{i≤k}σᵢ² is at least this fraction of ‖ΔW‖²_F (0 < energy ≤ 1). */
  energy?: number;
}

/** A layer's ΔW as singular triplets (descending), with its total energy ‖ΔW‖²_F. */
export interface Spectrum {
  m: number;
  n: number;
  /** [m, q] left vectors, [q] values, [n, q] right vectors (V, not Vᵀ), q components known. */
  u: Float64Array;
  s: Float64Array;
  v: Float64Array;
  q: number;
  /** ‖ΔW‖²_F: Σσ² over every component, also those a randomized SVD did not compute. */
  total: number;
  /** How the triplets were computed. */
  via: 'factors' | 'svd' | 'rsvd';
}

/** The rank `sel` keeps of a spectrum: its fixed rank, or the smallest reaching the energy fraction; ≥ 1, ≤ q. */
export function selectRank(sp: Pick<Spectrum, 's' | 'q' | 'total'>, sel: RankSelection): number {
  const cap = Math.min(sel.rank, sp.q);
  if (sel.energy === undefined || sp.total === 0) return Math.max(1, cap);
  let kept = 0;
  for (let k = 1; k <= cap; k++) {
    kept += sp.s[k - 1] ** 2;
    if (kept >= sel.energy * sp.total) return k;
  }
  return Math.max(1, cap);
}

/** The fraction of ‖ΔW‖²_F that the first k components keep (1 for a zero ΔW). */
export function retainedEnergy(sp: Pick<Spectrum, 's' | 'total'>, k: number): number {
  if (sp.total === 0) return 1;
  let kept = 0;
  for (let i = 0; i < k; i++) kept += sp.s[i] ** 2;
  return Math.min(1, kept / sp.total);
}

/**
 * The spectrum of ΔW = s·B·A from the factors B [m, r] and A [r, n], never forming ΔW: QR of B and of Aᵀ, then the
 * exact SVD of the ≤ r×r core s·R_B·R_Aᵀ.
 */
export function factorSpectrum(b: Float32Array, a: Float32Array, m: number, r: number, n: number, s: number): Spectrum {
  const qb = qr(b, m, r); // Q_B [m, kb], R_B [kb, r]
  const qa = qr(transpose64(a, r, n), n, r); // Q_A [n, ka], R_A [ka, r]
  const [kb, ka] = [qb.k, qa.k];
  const core = new Float64Array(kb * ka); // C = s·R_B·R_Aᵀ [kb, ka]
  for (let i = 0; i < kb; i++)
    for (let j = 0; j < ka; j++) {
      let acc = 0;
      for (let t = 0; t < r; t++) acc += qb.r[i * r + t] * qa.r[j * r + t];
      core[i * ka + j] = s * acc;
    }
  const c = svd(core, kb, ka); // U [kb, q], V [ka, q]
  const total = c.s.reduce((x, y) => x + y * y, 0); // ‖ΔW‖_F = ‖C‖_F (Q_B, Q_A orthonormal)
  return {
    m,
    n,
    u: product(qb.q, c.u, m, kb, c.k), // Q_B·U [m, q]
    s: c.s,
    v: product(qa.q, c.v, n, ka, c.k), // Q_A·V [n, q]
    q: c.k,
    total,
    via: 'factors',
  };
}

/** Options of `denseSpectrum`. */
export interface DenseSpectrumOptions {
  /** Components a randomized SVD computes beyond the rank asked for (default 8). */
  oversample?: number;
  /** Power iterations of the randomized SVD (default 4). */
  niter?: number;
  /** Above this m·n·min(m, n), a randomized SVD replaces the exact one (default 2²⁸: a 512×1024 layer is exact). */
  exactLimit?: number;
}

/**
 * The spectrum of a dense ΔW [m, n] (row-major; float32 or float64) up to `rank` components: the exact SVD for
 * small layers, torch.svd_lowrank's algorithm (q = rank + oversample, seeded) for large ones. This is a dense SVD of
 * ΔW, needed for methods whose ΔW is not a product of two small factors.
 */
export async function denseSpectrum(
  delta: Float32Array | Float64Array,
  m: number,
  n: number,
  rank: number,
  opts: DenseSpectrumOptions = {},
): Promise<Spectrum> {
  const { oversample = 8, niter = 4, exactLimit = 2 ** 28 } = opts;
  let total = 0;
  for (let i = 0; i < delta.length; i++) total += delta[i] * delta[i];
  const small = Math.min(m, n);
  let r: Svd;
  let via: Spectrum['via'] = 'svd';
  if (m * n * small <= exactLimit || rank + oversample >= small) r = svd(delta, m, n);
  else {
    r = await svdLowrank(delta, m, n, { q: rank + oversample, niter });
    via = 'rsvd';
  }
  return { m, n, u: r.u, s: r.s, v: r.v, q: r.k, total, via };
}

/** New factors of rank k for target scale `scaling`: B' = U_k·Σ_k^½/√s' [m, k], A' = Σ_k^½·V_kᵀ/√s' [k, n]. */
export function truncatedFactors(sp: Spectrum, k: number, scaling: number): { a: Float32Array; b: Float32Array } {
  if (!Number.isInteger(k) || k < 1 || k > sp.q)
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `squeeze: rank must be an integer in 1..${sp.q} for this [${sp.m}, ${sp.n}] ΔW, got ${k}`,
    );
  if (!(scaling > 0))
    throw new LorakitError('LK_INVALID_ARGUMENT', `squeeze: target scale must be > 0, got ${scaling}`);
  const { m, n, q } = sp;
  const b = new Float32Array(m * k);
  const a = new Float32Array(k * n);
  for (let j = 0; j < k; j++) {
    const w = Math.sqrt(sp.s[j] / scaling);
    for (let i = 0; i < m; i++) b[i * k + j] = sp.u[i * q + j] * w;
    for (let c = 0; c < n; c++) a[j * n + c] = sp.v[c * q + j] * w;
  }
  return { a, b };
}

/** ΔW_k = Σ_{j<k} σⱼ·uⱼ·vⱼᵀ [m, n] in float64 (tests and reports; the squeeze itself never forms it). */
export function truncatedDelta(sp: Spectrum, k: number): Float64Array {
  const { m, n, q } = sp;
  const out = new Float64Array(m * n);
  for (let j = 0; j < k; j++)
    for (let i = 0; i < m; i++) {
      const us = sp.u[i * q + j] * sp.s[j];
      for (let c = 0; c < n; c++) out[i * n + c] += us * sp.v[c * q + j];
    }
  return out;
}

/** Aᵀ of a row-major [m, n] matrix, in float64. */
function transpose64(a: Float32Array, m: number, n: number): Float64Array {
  const t = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) t[j * m + i] = a[i * n + j];
  return t;
}

/** X·Y for X [m, k], Y [k, n] in float64. */
function product(x: Float64Array, y: Float64Array, m: number, k: number, n: number): Float64Array {
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let t = 0; t < k; t++) {
      const xv = x[i * k + t];
      if (xv === 0) continue;
      for (let j = 0; j < n; j++) out[i * n + j] += xv * y[t * n + j];
    }
  return out;
}
