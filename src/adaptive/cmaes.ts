/**
 * CMA-ES, the (μ/μ_w, λ) evolution strategy with covariance matrix adaptation (Hansen, "The CMA Evolution Strategy:
 * A Tutorial", arXiv 1604.00772, the defaults of its Table 1), for the few merge coefficients of LoraHub. LoraHub
 * (Huang et al. 2023) and the Recycling study search with Nevergrad (NGOpt / Shiwa), which picks CMA-ES for budgets
 * and dimensions like these; lorakit implements CMA-ES itself instead of porting a portfolio. Bounds are handled by
 * evaluating the clipped point (the sample itself drives the update), as a box constraint on LoraHub's [-1.5, 1.5].
 * Full covariance, eigendecomposition every generation (n ≤ ~100 here, so O(n³) is nothing next to one loss).
 * Not here: the LoraHub objective (lorahub.ts).
 */
import { LorakitError } from '../errors.ts';
import { Rng, symEig } from '../linalg/index.ts';

/** Options of `cmaes`. */
export interface CmaEsOptions {
  /** Initial step size σ₀ (default 0.5). */
  sigma?: number;
  /** Maximum number of function evaluations (default 100·n). */
  budget?: number;
  /** Population size λ (default 4 + ⌊3 ln n⌋). */
  popSize?: number;
  /** Box bounds applied to evaluated points (default unbounded). */
  lower?: number;
  upper?: number;
  /** Seeds the Gaussian samples (default 0). */
  seed?: number;
  /** Stop when σ·√(max eigenvalue of C) falls below this (default 1e-12). */
  tolX?: number;
}

/** What `cmaes` found. */
export interface CmaEsResult {
  /** The best evaluated point (clipped to the bounds) and its value. */
  x: Float64Array;
  f: number;
  evaluations: number;
  /** The final mean, step size and covariance [n, n] (row-major). */
  mean: Float64Array;
  sigma: number;
  covariance: Float64Array;
  /** Best value after each generation. */
  history: number[];
}

/** Minimises `f` from `x0` by CMA-ES; see the file header. */
export async function cmaes(
  f: (x: Float64Array) => number | Promise<number>,
  x0: ArrayLike<number>,
  opts: CmaEsOptions = {},
): Promise<CmaEsResult> {
  const n = x0.length;
  if (n < 1) throw new LorakitError('LK_INVALID_ARGUMENT', 'cmaes: x0 must have at least one coordinate');
  const lambda = opts.popSize ?? 4 + Math.floor(3 * Math.log(n));
  const budget = opts.budget ?? 100 * n;
  let sigma = opts.sigma ?? 0.5;
  if (!(sigma > 0) || lambda < 2 || budget < 1)
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `cmaes: need sigma > 0, popSize ≥ 2 and budget ≥ 1, got ${sigma}, ${lambda}, ${budget}`,
    );
  const lo = opts.lower ?? -Infinity;
  const hi = opts.upper ?? Infinity;
  const rng = new Rng(opts.seed ?? 0);

  // selection and adaptation constants (tutorial Table 1)
  const mu = Math.floor(lambda / 2);
  const raw = Array.from({ length: mu }, (_, i) => Math.log(mu + 0.5) - Math.log(i + 1));
  const sumW = raw.reduce((s, v) => s + v, 0);
  const weights = raw.map((v) => v / sumW);
  const muEff = 1 / weights.reduce((s, v) => s + v * v, 0);
  const cc = (4 + muEff / n) / (n + 4 + (2 * muEff) / n);
  const cs = (muEff + 2) / (n + muEff + 5);
  const c1 = 2 / ((n + 1.3) ** 2 + muEff);
  const cmu = Math.min(1 - c1, (2 * (muEff - 2 + 1 / muEff)) / ((n + 2) ** 2 + muEff));
  const ds = 1 + 2 * Math.max(0, Math.sqrt((muEff - 1) / (n + 1)) - 1) + cs;
  const chiN = Math.sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n * n)); // E‖N(0, I)‖

  const mean = Float64Array.from(x0);
  const C = new Float64Array(n * n);
  for (let i = 0; i < n; i++) C[i * n + i] = 1;
  const pc = new Float64Array(n);
  const ps = new Float64Array(n);
  const clip = (x: Float64Array) => x.map((v) => Math.min(hi, Math.max(lo, v)));
  let best = { x: clip(mean), f: Infinity };
  const history: number[] = [];
  let evaluations = 0;

  for (let gen = 0; evaluations < budget; gen++) {
    // C = B·diag(d²)·Bᵀ
    const eig = symEig(C, n);
    const B = eig.vectors;
    const d = Array.from(eig.values, (v) => Math.sqrt(Math.max(v, 0)));
    if (sigma * Math.max(...d) < (opts.tolX ?? 1e-12)) break;
    const pop: { x: Float64Array; y: Float64Array; z: Float64Array; f: number }[] = [];
    for (let k = 0; k < lambda && evaluations < budget; k++) {
      const z = Float64Array.from({ length: n }, () => rng.normal());
      const y = new Float64Array(n); // y = B·(d ⊙ z) ~ N(0, C)
      for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) y[i] += B[i * n + j] * d[j] * z[j];
      const x = mean.map((m, i) => m + sigma * y[i]);
      const fx = await f(clip(x));
      evaluations++;
      if (fx < best.f) best = { x: clip(x), f: fx };
      pop.push({ x, y, z, f: fx });
    }
    history.push(best.f);
    if (pop.length < mu) break; // budget spent mid-generation: no full selection
    pop.sort((a, b) => a.f - b.f);
    // mean ← Σ wᵢ·x_(i); y_w = (new mean − old mean)/σ
    const yw = new Float64Array(n);
    const zw = new Float64Array(n);
    for (let i = 0; i < mu; i++)
      for (let j = 0; j < n; j++) {
        yw[j] += weights[i] * pop[i].y[j];
        zw[j] += weights[i] * pop[i].z[j];
      }
    for (let j = 0; j < n; j++) mean[j] += sigma * yw[j];
    // p_σ ← (1 − c_σ)p_σ + √(c_σ(2 − c_σ)μ_eff)·C^(−½)·y_w, with C^(−½)·y_w = B·z_w
    const csn = Math.sqrt(cs * (2 - cs) * muEff);
    for (let i = 0; i < n; i++) {
      let bz = 0;
      for (let j = 0; j < n; j++) bz += B[i * n + j] * zw[j];
      ps[i] = (1 - cs) * ps[i] + csn * bz;
    }
    const psNorm = Math.hypot(...ps);
    const hs = psNorm / Math.sqrt(1 - (1 - cs) ** (2 * (gen + 1))) < (1.4 + 2 / (n + 1)) * chiN ? 1 : 0;
    const ccn = Math.sqrt(cc * (2 - cc) * muEff);
    for (let i = 0; i < n; i++) pc[i] = (1 - cc) * pc[i] + hs * ccn * yw[i];
    // C ← (1 − c1 − cμ)C + c1(p_c p_cᵀ + δ(h_σ)C) + cμ Σ wᵢ yᵢyᵢᵀ, δ(h_σ) = (1 − h_σ)c_c(2 − c_c)
    const delta = (1 - hs) * cc * (2 - cc);
    for (let i = 0; i < n; i++)
      for (let j = 0; j < n; j++) {
        let rankMu = 0;
        for (let k = 0; k < mu; k++) rankMu += weights[k] * pop[k].y[i] * pop[k].y[j];
        C[i * n + j] = (1 - c1 - cmu) * C[i * n + j] + c1 * (pc[i] * pc[j] + delta * C[i * n + j]) + cmu * rankMu;
      }
    sigma *= Math.exp((cs / ds) * (psNorm / chiN - 1));
  }
  return { x: best.x, f: best.f, evaluations, mean, sigma, covariance: C, history };
}
