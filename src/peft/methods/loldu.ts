/**
 * LoLDU — "LoLDU: Low-Rank Adaptation via Lower-Diag-Upper Decomposition for Parameter-Efficient Fine-Tuning" (Shi
 * et al., arXiv:2410.13618); not in PEFT (saved as peft_type "LOLDU"). The weight's LU decomposition with partial
 * pivoting, W0 = P·L·diag(D)·U (L unit-lower, U unit-upper), keeps its first r pivots as frozen factors; only the r
 * diagonal scalings z train (spec methods-a §4):
 *   W_res = W0 − σ·P·L_r·diag(D_r)·U_r  (frozen, replaces W0),   W = W_res + σ·P·L_r·diag(z)·U_r,   z₀ = D_r,
 * σ = lora_alpha / r, so the output is unchanged at init up to rounding (the residual is computed in float64 from the
 * float32 factors actually used). Forward y = x·W_resᵀ + b + σ·((x·U_rᵀ) ⊙ z)·(P·L_r)ᵀ, O(r·(in + out)) per token
 * where the official code rebuilds the out×in matrix each step.
 * Follows the official code (SKDDJ/LoLDU@4fe87a0, minloldu/loldu.py): torch.linalg.lu of the float32 [out, in]
 * weight, D = diag(U), U divided by D row-wise, lora_A = U[:r], lora_B = L[:, :r], vector_z = D[:r], scaling_factor
 * α/r (from_linear's α = 1), the residual written into the base weight, `init_method` re-drawing z (the residual keeps
 * D_r, so ΔW ≠ 0 at init then). Differences, all deliberate: P is folded into B — lorakit's `lora_B` holds P·L_r
 * [out, r] (the official code keeps a dense out×out P) — which also lets the init stop after r elimination steps
 * (linalg/lu.ts: P·L_r and U_r do not depend on later pivots), O(out·in·r); the LU runs in float64; a zero pivot
 * (a column already eliminated) keeps its U row undivided and z = 0 where the official code divides by zero; no
 * dropout (the official code declares it and never applies it). Keys `<path>.lora_A` [r, in], `<path>.lora_B`
 * [out, r], `<path>.vector_z` [r]; the residual is not saved: loading rebuilds it from W0 (the LU is deterministic).
 * Not here: the LU (linalg/lu.ts), holding the replaced weight (model.ts).
 */
import { z } from 'zod';
import { LorakitError } from '../../errors.ts';
import { lu, matmul, type Rng } from '../../linalg/index.ts';
import { fromMatrix, matrixDims, toMatrix } from '../layers.ts';
import type { AdapterMethod, LayerInfo, ParamSpec } from '../method.ts';

/** The official init_method values: how z starts ("lu": z = D_r, ΔW = 0; the others re-draw it). */
const INIT_METHODS = ['lu', 'uniform', 's_uniform', 'normal', 's_normal', 'constant', 'ones', 'zeros'] as const;

export const lolduFields = {
  /** Pivots kept: the rank of the adapter and the number of trainable values per layer. */
  r: z.number().int().positive().default(8),
  /** σ = lora_alpha / r (the official from_linear's α is 1). */
  lora_alpha: z.number().positive().default(1),
  /** lu: z = D_r; uniform: U(±|mean D_r|/2); s_uniform: U(±1); normal: N(mean, std of D_r); s_normal: N(0, 1); ... */
  init_method: z.enum(INIT_METHODS).default('lu'),
};

/** A LoLDU config with defaults filled (targeting fields included). */
export type LolduConfig = { [K in keyof typeof lolduFields]: z.output<(typeof lolduFields)[K]> } & {
  target_modules: string | string[] | null;
  [k: string]: unknown;
};

/** Per-layer settings: the rank and σ. */
export interface LolduSettings {
  r: number;
  scaling: number;
}

const U_R = 'lora_A',
  PL_R = 'lora_B',
  Z = 'vector_z';

/** The first r pivots of W0 [out, in]: U_r [r, in] unit-upper, P·L_r [out, r], D_r [r] (LU with partial pivoting). */
export function lduFactors(w: Float32Array, o: number, i: number, r: number) {
  const f = lu(w, o, i, { steps: r }); // rows: row j of L·U is row rows[j] of W
  const d = new Float32Array(r);
  const u = new Float32Array(r * i);
  for (let j = 0; j < r; j++) {
    const pivot = f.u[j * i + j];
    d[j] = pivot;
    // a zero pivot (its column already eliminated) keeps the row as is: z = 0 there, the residual absorbs it
    for (let c = 0; c < i; c++) u[j * i + c] = pivot === 0 ? f.u[j * i + c] : f.u[j * i + c] / pivot;
  }
  const pl = new Float32Array(o * r); // (P·L)[rows[j]] = L[j]
  for (let j = 0; j < o; j++) for (let c = 0; c < r; c++) pl[f.rows[j] * r + c] = f.l[j * r + c];
  return { u, pl, d };
}

/** z at init by the official init_method (the uniform/normal ones from D_r's statistics, as the official code). */
function initialZ(method: (typeof INIT_METHODS)[number], d: Float32Array, rng: Rng): Float32Array {
  const r = d.length;
  const mean = d.reduce((a, b) => a + b, 0) / r;
  const std = r > 1 ? Math.sqrt(d.reduce((a, b) => a + (b - mean) ** 2, 0) / (r - 1)) : 0; // torch's unbiased std
  if (method === 'lu') return Float32Array.from(d);
  if (method === 'uniform') return rng.uniformArray(r, -Math.abs(mean) / 2, Math.abs(mean) / 2);
  if (method === 's_uniform') return rng.uniformArray(r, -1, 1);
  if (method === 'normal') return Float32Array.from(rng.normalArray(r, std), (v) => v + mean);
  if (method === 's_normal') return rng.normalArray(r, 1);
  return new Float32Array(r).fill(method === 'constant' ? mean : method === 'ones' ? 1 : 0);
}

/** σ·(P·L_r)·diag(z)·U_r as the [out, in] matrix. */
function lduProduct(layer: LayerInfo, s: LolduSettings, p: Record<string, Float32Array>): Float32Array {
  const [o, i] = matrixDims(layer);
  const scaled = Float32Array.from(p[PL_R], (v, k) => s.scaling * v * p[Z][k % s.r]); // [out, r]: σ·P·L_r·diag(z)
  return matmul(scaled, p[U_R], o, s.r, i);
}

export const loldu: AdapterMethod<LolduConfig, LolduSettings> = {
  name: 'loldu',
  peftType: null,
  paper:
    'LoLDU: Low-Rank Adaptation via Lower-Diag-Upper Decomposition for Parameter-Efficient Fine-Tuning ' +
    '(arXiv:2410.13618)',
  layers: ['linear', 'conv1d'],
  fields: lolduFields,

  settings: (c) => ({ r: c.r, scaling: c.lora_alpha / c.r }),

  checkLayer(layer, s, _c, source) {
    const [o, i] = matrixDims(layer);
    if (s.r > Math.min(o, i)) {
      throw new LorakitError(
        'LK_CONFIG_INVALID',
        `${source}: loldu keeps r pivots of ${layer.path}'s LU, whose weight is [${o}, ${i}] as an [out, in] ` +
          `matrix (min(out, in) = ${Math.min(o, i)} pivots), but r = ${s.r}; lower r or exclude the layer`,
        { field: 'r', layer: layer.path },
      );
    }
  },

  params(layer, s): ParamSpec[] {
    return [
      { name: U_R, shape: [s.r, layer.inFeatures], trainable: false, role: 'a' },
      { name: PL_R, shape: [layer.outFeatures, s.r], trainable: false, role: 'b' },
      { name: Z, shape: [s.r], trainable: true, role: 'vector' },
    ];
  },

  // the residual replaces W0 also when loading: the file holds the factors and z, not W_res
  async init({ layer, settings: s, config: c, rng, readBase }) {
    const [o, i] = matrixDims(layer);
    const w = toMatrix(layer, await readBase()); // [out, in]
    const { u, pl, d } = lduFactors(w, o, i, s.r);
    const res = new Float32Array(o * i); // W0 − σ·P·L_r·diag(D_r)·U_r, each entry summed in float64
    const row = new Float64Array(i);
    for (let p = 0; p < o; p++) {
      row.fill(0);
      for (let j = 0; j < s.r; j++) {
        const f = pl[p * s.r + j] * d[j];
        if (f !== 0) for (let c2 = 0; c2 < i; c2++) row[c2] += f * u[j * i + c2];
      }
      for (let c2 = 0; c2 < i; c2++) res[p * i + c2] = w[p * i + c2] - s.scaling * row[c2];
    }
    return { values: { [U_R]: u, [PL_R]: pl, [Z]: initialZ(c.init_method, d, rng) }, base: fromMatrix(layer, res) };
  },

  forward(ctx) {
    const { settings: s, p } = ctx;
    const h = ctx.x.matmul(p[U_R].T).mul(p[Z]); // [.., in]·[in, r] ⊙ [r]
    return ctx.y.add(h.matmul(p[PL_R].T).mul(s.scaling)); // [.., r]·[r, out]
  },

  // the paper's count: r per adapted layer
  trainableCount: (_c, layers) => layers.reduce((n, { settings: s }) => n + s.r, 0),

  delta: ({ layer, settings, p }) => fromMatrix(layer, lduProduct(layer, settings, p)),
};
