/**
 * LoRA-XS — "LoRA-XS: Low-Rank Adaptation with Extremely Small Number of Parameters" (Bałazy et al.,
 * arXiv:2405.17604); not in PEFT (saved as peft_type "LORA_XS"). Relative to LoRA, A and B are frozen and only an
 * r×r matrix R between them trains (spec methods-a §10):
 *   ΔW = s·B·R·A,  y = base(x) + s·B·(R·(A·x̃)),  s = α/r (α/√r with rsLoRA), x̃ = dropout(x),
 * r² trainable values per layer. Init (the authors' code, MohammadrezaBanaei/LoRA-XS utils/initialization_utils.py):
 * the truncated SVD W0 ≈ U_r·S_r·V_rᵀ of the [out, in] matrix, B = U_r, A = S_r·V_rᵀ (the singular values carried by
 * A), R ~ N(0, (1e-5)²), so ΔW starts small but not zero. The authors take the SVD with scikit-learn's randomized
 * TruncatedSVD (n_iter 10, 10 oversampled columns); lorakit runs torch.svd_lowrank's algorithm (linalg/rsvd.ts) with
 * q = r + 10 columns and `svd_niter` power iterations, so B·A is W0's best rank-r approximation to within the
 * randomized SVD's accuracy. The LoRA-SB authors' re-implementation (RaghavSinghal10/lora-sb) uses q = r and rounds
 * the factors to bfloat16; lorakit keeps them in float32.
 * The authors build LoRA-XS on PEFT's LoraConfig (peft_type "LORA") with R as an extra nn.Linear, which PEFT's
 * adapter-name removal saves as `<path>_lora_latent_mapping.weight`; a stock PEFT would load such a folder as a plain
 * LoRA and drop R. lorakit saves `<path>.lora_A.weight` [r, in], `<path>.lora_B.weight` [out, r] (both frozen,
 * saved) and `<path>.lora_latent_mapping.weight` [r, r] under its own peft_type, so no tool mistakes it for LoRA.
 * The init can be replaced by a variant claiming `init_lora_weights` (LoRA-SB, lora_sb.ts).
 * Not here: the decomposition (linalg/), the merge loop (model.ts).
 */
import { z } from 'zod';
import { LorakitError } from '../../errors.ts';
import { matmul, svdLowrank } from '../../linalg/index.ts';
import { fromMatrix, matrixDims, toMatrix } from '../layers.ts';
import type { AdapterMethod, LayerInfo, ParamSpec } from '../method.ts';

export const loraXsFields = {
  /** Rank of the frozen factors; R is r×r. */
  r: z.number().int().positive().default(8),
  /** Scaling numerator; null: α = r, so s = 1 (the authors' scripts set lora_alpha = r). */
  lora_alpha: z.number().positive().nullable().default(null),
  /** Dropout on the adapter input, during training. */
  lora_dropout: z.number().min(0).max(1).default(0),
  /** s = α/√r (rank-stabilised scaling). */
  use_rslora: z.boolean().default(false),
  /** true: A and B from the truncated SVD of W0 (LoRA-XS); other values name an initialisation variant ("lora_sb"). */
  init_lora_weights: z.union([z.boolean(), z.string()]).default(true),
  /** Power iterations of the randomized SVDs (the authors' n_iter). */
  svd_niter: z.number().int().nonnegative().default(10),
};

/** A LoRA-XS config with defaults filled (targeting fields included). */
export type LoraXsConfig = { [K in keyof typeof loraXsFields]: z.output<(typeof loraXsFields)[K]> } & {
  target_modules: string | string[] | null;
  [k: string]: unknown;
};

/** Per-layer settings: rank, alpha as resolved, the output scale and the dropout rate. */
export interface LoraXsSettings {
  r: number;
  alpha: number;
  scaling: number;
  dropout: number;
}

/** The tensors' key suffixes (saved as `<path>.<name>`). */
export const XS_A = 'lora_A.weight',
  XS_B = 'lora_B.weight',
  XS_R = 'lora_latent_mapping.weight';

/** Columns the randomized SVD keeps beyond r (scikit-learn's n_oversamples default, the authors' TruncatedSVD). */
const OVERSAMPLE = 10;

/** ΔW = s·B·R·A as the [out, in] matrix. */
function deltaMatrix(layer: LayerInfo, s: LoraXsSettings, p: Record<string, Float32Array>): Float32Array {
  const [o, i] = matrixDims(layer);
  const br = matmul(p[XS_B], p[XS_R], o, s.r, s.r); // [out, r]
  const d = matmul(br, p[XS_A], o, s.r, i); // [out, in]
  for (let k = 0; k < d.length; k++) d[k] *= s.scaling;
  return d;
}

export const loraXs: AdapterMethod<LoraXsConfig, LoraXsSettings> = {
  name: 'lora_xs',
  peftType: null,
  paper: 'LoRA-XS: Low-Rank Adaptation with Extremely Small Number of Parameters (arXiv:2405.17604)',
  layers: ['linear', 'conv1d'],
  fields: loraXsFields,

  openFields: {
    init_lora_weights: { own: (v) => v === true, describe: 'true (the truncated SVD of W0)' },
  },

  settings(c) {
    const alpha = c.lora_alpha ?? c.r;
    return { r: c.r, alpha, scaling: c.use_rslora ? alpha / Math.sqrt(c.r) : alpha / c.r, dropout: c.lora_dropout };
  },

  // A and B are r singular components of the [out, in] matrix (of W0, or of LoRA-SB's update estimate)
  checkLayer(layer, s, _c, source) {
    const [o, i] = matrixDims(layer);
    if (s.r > Math.min(o, i)) {
      throw new LorakitError(
        'LK_CONFIG_INVALID',
        `${source}: lora_xs needs r ≤ min(out, in) for ${layer.path}, whose weight is [${o}, ${i}] as an [out, in] ` +
          `matrix, but r = ${s.r} (A and B are r singular components); lower r or exclude the layer`,
        { field: 'r', layer: layer.path },
      );
    }
  },

  params(layer, s): ParamSpec[] {
    return [
      { name: XS_A, shape: [s.r, layer.inFeatures], trainable: false, role: 'a' },
      { name: XS_B, shape: [layer.outFeatures, s.r], trainable: false, role: 'b' },
      { name: XS_R, shape: [s.r, s.r], trainable: true, role: 'core' },
    ];
  },

  async init({ layer, settings: s, config: c, rng, readBase, loading }) {
    const [o, i] = matrixDims(layer);
    const r = s.r;
    const R = rng.normalArray(r * r, 1e-5); // the authors' init_module_weights(latent, sigma=1e-5)
    const a = new Float32Array(r * i);
    const b = new Float32Array(o * r);
    // loading: A and B come from the file; another init_lora_weights: its variant sets them next
    if (loading || c.init_lora_weights !== true) return { values: { [XS_A]: a, [XS_B]: b, [XS_R]: R } };
    const w = toMatrix(layer, await readBase()); // [out, in]
    // u [out, q], sv [q] descending, v [in, q]: W0 ≈ U·diag(S)·Vᵀ, of which the first r components are kept
    const {
      u,
      s: sv,
      v,
      k,
    } = await svdLowrank(w, o, i, { q: Math.min(r + OVERSAMPLE, o, i), niter: c.svd_niter, rng });
    for (let j = 0; j < r; j++) {
      for (let row = 0; row < o; row++) b[row * r + j] = u[row * k + j]; // B = U_r
      for (let col = 0; col < i; col++) a[j * i + col] = sv[j] * v[col * k + j]; // A = S_r·V_rᵀ
    }
    return { values: { [XS_A]: a, [XS_B]: b, [XS_R]: R } };
  },

  forward(ctx) {
    const { settings: s, p } = ctx;
    const h = ctx.dropout(ctx.x, s.dropout).matmul(p[XS_A].T); // [.., in]·[in, r]
    return ctx.y.add(h.matmul(p[XS_R].T).matmul(p[XS_B].T).mul(s.scaling)); // [.., r]·[r, r]·[r, out]
  },

  // the paper's count: r² per adapted layer
  trainableCount: (_c, layers) => layers.reduce((n, { settings: s }) => n + s.r * s.r, 0),

  delta: ({ layer, settings, p }) => fromMatrix(layer, deltaMatrix(layer, settings, p)),
};
