/**
 * SALT — "SALT: Singular Value Adaptation with Low-Rank Transformation" (Elsayed et al., BMVC 2025,
 * arXiv:2503.16055); not in PEFT (saved as peft_type "SALT"). From the full thin SVD W0 = U·diag(σ)·Vᵀ of the
 * [out, in] matrix (k = min(out, in)), the top r singular values get a trainable scale a and shift b, and the other
 * k − r a low-rank update X·Y of their block (spec methods-a §6):
 *   S = blockdiag(diag(a ⊙ σ[:r] + b), diag(σ[r:]) + X·Y) [k, k],   W' = U·ReLU(S)·Vᵀ,
 * the ReLU over every entry of the k×k matrix, so negative off-diagonal entries of X·Y are clipped (as the official
 * code does). lorakit adds ΔW = U·(ReLU(S) − diag(σ))·Vᵀ to the frozen W0 — the same function up to the SVD's
 * rounding (U·diag(σ)·Vᵀ is W0 to ~1e-7) — computed on the input side: y = base(x) + (h₁ ⊙ (ReLU(a ⊙ σ₁ + b) − σ₁),
 * h₂·(ReLU(diag σ₂ + X·Y) − diag σ₂)ᵀ)·Uᵀ with h = x·V = [h₁, h₂]. Frozen U [out, k], S = σ [k], Vt [k, in] are stored
 * in the adapter (the official code recomputes them at load, which SVD sign freedom makes unsafe: spec pitfall 2).
 * The SVD must be the exact full one — every singular triplet is used — so it runs on the host (linalg/svd.ts,
 * O(out·in·k): a few seconds for 768², where svdLowrank would need q = k and cost the same); loading skips it.
 * Follows the official code (BioMedIA-MBZUAI/SALT@7314877): its SAM2 adapter (prompt_adapted_SAM2/modeling/Adapters/
 * SALT.py) by default — r = max(1, ⌊k·ratio_salt⌋), a = 1, b = 0, X Kaiming-uniform (a=√20 with "relu" is gain √2:
 * U(±√(6/r_lora))), Y = 0, so ΔW = 0 at init — and its SAM-v1 file on request (`r` given, `init_weights: "gaussian"`:
 * X, Y ~ N(0, 0.01²), ΔW ≠ 0). Keys are the official parameter names: `<path>.trainable_scale_A` [r],
 * `.trainable_shift_B` [r], `.trainable_X` [k−r, r_lora], `.trainable_Y` [r_lora, k−r], and `.U`, `.S`, `.Vt`.
 * Not implemented: the regulariser ‖diag(a ⊙ σ + b) − diag(σ)‖_F + ‖X·Y‖_F (its default weight reg_multiplier is 0;
 * lorakit's loss terms see logits, not parameters).
 */
import { z } from 'zod';
import { LorakitError } from '../../errors.ts';
import type { Tensor } from '../../graph/index.ts';
import { matmul, svd } from '../../linalg/index.ts';
import { fromMatrix, matrixDims, toMatrix } from '../layers.ts';
import type { AdapterMethod, LayerInfo, ParamSpec } from '../method.ts';

export const saltFields = {
  /** Top singular values scaled and shifted (the SAM-v1 code's `rank`); null: max(1, ⌊k·ratio_salt⌋) (SAM2). */
  r: z.number().int().positive().nullable().default(null),
  /** The fraction of the k singular values scaled and shifted when r is null (the SAM2 backbone uses 0.1). */
  ratio_salt: z.number().positive().max(1).default(0.1),
  /** Rank of X·Y on the remaining k − r singular values (SALT_config.yml: 4). */
  r_lora: z.number().int().positive().default(4),
  /** true: X Kaiming-uniform, Y = 0, ΔW = 0 (SAM2 code); "gaussian": X, Y ~ N(0, 0.01²) (SAM-v1 code). */
  init_weights: z.union([z.literal(true), z.literal('gaussian')]).default(true),
};

/** A SALT config with defaults filled (targeting fields included). */
export type SaltConfig = { [K in keyof typeof saltFields]: z.output<(typeof saltFields)[K]> } & {
  target_modules: string | string[] | null;
  [k: string]: unknown;
};

/** Per-layer sizes: k = min(out, in), r scaled values, rem = k − r low-rank ones, and X·Y's rank. */
export interface SaltSettings {
  k: number;
  r: number;
  rem: number;
  rLora: number;
}

const [SCALE, SHIFT, X, Y, U, S, VT] = [
  'trainable_scale_A',
  'trainable_shift_B',
  'trainable_X',
  'trainable_Y',
  'U',
  'S',
  'Vt',
];

/** M = ReLU(S) − diag(σ) [k, k] on the host (float64 sums), from the layer's tensors. */
function coreMatrix(s: SaltSettings, p: Record<string, Float32Array>): Float32Array {
  const { k, r, rem, rLora } = s;
  const m = new Float32Array(k * k);
  for (let j = 0; j < r; j++) m[j * k + j] = Math.max(0, p[SCALE][j] * p[S][j] + p[SHIFT][j]) - p[S][j];
  for (let a = 0; a < rem; a++)
    for (let b = 0; b < rem; b++) {
      let xy = 0;
      for (let t = 0; t < rLora; t++) xy += p[X][a * rLora + t] * p[Y][t * rem + b];
      const sigma = a === b ? p[S][r + a] : 0;
      m[(r + a) * k + r + b] = Math.max(0, sigma + xy) - sigma;
    }
  return m;
}

/** ΔW = U·(ReLU(S) − diag(σ))·Vt as the [out, in] matrix. */
function saltDelta(layer: LayerInfo, s: SaltSettings, p: Record<string, Float32Array>): Float32Array {
  const [o, i] = matrixDims(layer);
  return matmul(matmul(p[U], coreMatrix(s, p), o, s.k, s.k), p[VT], o, s.k, i);
}

/** diag(v) [n, n] as graph ops (no n×n constant: an Equal of two ranges). */
function diagOf(v: Tensor, n: number): Tensor {
  const g = v.graph;
  const idx = g.range(0, n);
  return idx.unsqueeze(1).equal(idx.unsqueeze(0)).cast(v.dtype).mul(v); // [n, n]
}

export const salt: AdapterMethod<SaltConfig, SaltSettings> = {
  name: 'salt',
  peftType: null,
  paper: 'SALT: Singular Value Adaptation with Low-Rank Transformation (arXiv:2503.16055)',
  layers: ['linear', 'conv1d'],
  fields: saltFields,

  settings(c, layer) {
    const k = Math.min(...matrixDims(layer));
    const r = c.r ?? Math.max(1, Math.floor(k * c.ratio_salt));
    return { k, r, rem: k - r, rLora: c.r_lora };
  },

  // the low-rank part needs at least one singular value left
  checkLayer(layer, s, _c, source) {
    if (s.r >= s.k) {
      throw new LorakitError(
        'LK_CONFIG_INVALID',
        `${source}: salt scales r = ${s.r} of the ${s.k} singular values of ${layer.path}, leaving none for X·Y; ` +
          'choose r (or ratio_salt) so that r < min(out, in), or exclude the layer',
        { field: 'r', layer: layer.path },
      );
    }
  },

  params(layer, s): ParamSpec[] {
    return [
      { name: SCALE, shape: [s.r], trainable: true, role: 'vector' },
      { name: SHIFT, shape: [s.r], trainable: true, role: 'vector' },
      { name: X, shape: [s.rem, s.rLora], trainable: true, role: 'b' },
      { name: Y, shape: [s.rLora, s.rem], trainable: true, role: 'a' },
      { name: U, shape: [layer.outFeatures, s.k], trainable: false, role: 'other' },
      { name: S, shape: [s.k], trainable: false, role: 'other' },
      { name: VT, shape: [s.k, layer.inFeatures], trainable: false, role: 'other' },
    ];
  },

  async init({ layer, settings: s, config: c, rng, readBase, loading }) {
    const [o, i] = matrixDims(layer);
    const { k, r, rem, rLora } = s;
    const values: Record<string, Float32Array> = {
      [SCALE]: new Float32Array(r).fill(1),
      [SHIFT]: new Float32Array(r),
      // SAM2: kaiming_uniform_(X, a=√20, nonlinearity="relu") ignores a: gain √2, bound √2·√(3/r_lora)
      [X]:
        c.init_weights === true
          ? rng.uniformArray(rem * rLora, -Math.sqrt(6 / rLora), Math.sqrt(6 / rLora))
          : rng.normalArray(rem * rLora, 0.01),
      [Y]: c.init_weights === true ? new Float32Array(rLora * rem) : rng.normalArray(rLora * rem, 0.01),
    };
    if (loading)
      return {
        values: { ...values, [U]: new Float32Array(o * k), [S]: new Float32Array(k), [VT]: new Float32Array(k * i) },
      };
    const f = svd(toMatrix(layer, await readBase()), o, i); // u [out, k], s [k], v [in, k]
    const vt = new Float32Array(k * i);
    for (let j = 0; j < k; j++) for (let col = 0; col < i; col++) vt[j * i + col] = f.v[col * k + j];
    return { values: { ...values, [U]: Float32Array.from(f.u), [S]: Float32Array.from(f.s), [VT]: vt } };
  },

  forward(ctx) {
    const { settings: s, p, x } = ctx;
    const last = x.rank - 1;
    const h = x.matmul(p[VT].T); // [.., in]·[in, k]
    const [h1, h2] = h.split([s.r, s.rem], last); // [.., r], [.., k − r]
    const [s1, s2] = p[S].split([s.r, s.rem], 0);
    const d1 = p[SCALE].mul(s1).add(p[SHIFT]).relu().sub(s1); // [r]: ReLU(a ⊙ σ₁ + b) − σ₁
    const diag2 = diagOf(s2, s.rem); // [k − r, k − r]
    const m2 = p[X].matmul(p[Y]).add(diag2).relu().sub(diag2); // ReLU(diag σ₂ + X·Y) − diag σ₂, every entry
    const core = x.graph.concat([h1.mul(d1), h2.matmul(m2.T)], last); // [.., k]
    return ctx.y.add(core.matmul(p[U].T)); // [.., k]·[k, out]
  },

  // the paper's count: 2r + 2·(k − r)·r_lora per layer
  trainableCount: (_c, layers) => layers.reduce((n, { settings: s }) => n + 2 * s.r + 2 * s.rem * s.rLora, 0),

  delta: ({ layer, settings, p }) => fromMatrix(layer, saltDelta(layer, settings, p)),
};
