/**
 * LoRA — "LoRA: Low-Rank Adaptation of Large Language Models" (Hu et al., 2021, arXiv:2106.09685); PEFT peft_type
 * LORA. ΔW = s·B·A with A [r, in], B [out, r], s = alpha/r (alpha/√r with rsLoRA, arXiv:2312.03732). Forward
 * y = base(x) + s·B(A(dropout(x))). Embeddings: y = E[x] + s·(Aᵀ[x])·Bᵀ with A [r, num], B [dim, r].
 * Its variants (DoRA, PiSSA, OLoRA, ...) are their own files, composed by the registry; they receive LoRA's term
 * s·B(A(x̃)) as `parts.lora`.
 */
import { z } from 'zod';
import { LorakitError } from '../../errors.ts';
import { kaimingUniformBound, matmul } from '../../linalg/index.ts';
import { patternValue } from '../config.ts';
import { fromMatrix, matrixDims } from '../layers.ts';
import type { AdapterMethod, ForwardContext, LayerInfo, ParamSpec } from '../method.ts';

/**
 * Fields of PEFT's LoraConfig that select features lorakit does not implement: accepted at their neutral value (PEFT
 * writes every field, so an adapter that does not use a feature still carries its key), refused otherwise.
 */
const NEUTRAL: Record<string, (v: unknown) => boolean> = {
  lora_bias: (v) => v === false,
  megatron_config: (v) => v === null,
  trainable_token_indices: (v) => v === null,
  loftq_config: (v) => typeof v === 'object' && v !== null && Object.keys(v).length === 0,
  eva_config: (v) => v === null,
  corda_config: (v) => v === null,
  alora_invocation_tokens: (v) => v === null,
  use_qalora: (v) => v === false,
  layer_replication: (v) => v === null,
  target_parameters: (v) => v === null || (Array.isArray(v) && v.length === 0),
  arrow_config: (v) => v === null,
  /** PEFT 0.19.0: LoRA-GA, A and B initialised from gradient estimates (with init_lora_weights "lora_ga"). */
  lora_ga_config: (v) => v === null,
  /** PEFT 0.19.0: BD-LoRA, block-diagonal A or B (a BdLoraConfig; despite its name not a boolean). */
  use_bdlora: (v) => v === null,
  /** PEFT 0.20.0: VeLoRA, a compressed-activation backward for A. */
  velora_config: (v) => v === null,
  /** PEFT 0.20.0: MonteCLoRA, Monte Carlo sampling over the adapter. */
  monteclora_config: (v) => v === null,
  /** PEFT 0.21.0: KaSA, SVD-truncated base plus a learned diagonal between A and B. */
  kasa_config: (v) => v === null,
};

export const loraFields = {
  /** Rank. */
  r: z.number().int().positive().default(8),
  /** Scaling numerator: s = lora_alpha / r. */
  lora_alpha: z.number().positive().default(8),
  /** Dropout on the adapter input, during training. */
  lora_dropout: z.number().min(0).max(1).default(0),
  /** s = lora_alpha / √r (rank-stabilised LoRA). */
  use_rslora: z.boolean().default(false),
  /** True for GPT-2's Conv1D, whose weight is stored [in, out] (lorakit reads the layer kind; kept for PEFT). */
  fan_in_fan_out: z.boolean().default(false),
  /** Which base biases train: none, all, or those of adapted layers. */
  bias: z.enum(['none', 'all', 'lora_only']).default('none'),
  /**
   * true: A Kaiming-uniform, B zero; false: both random (tests); "gaussian": A ~ N(0, 1/r); other strings name an
   * initialisation variant ("pissa", "pissa_niter_K", "olora").
   */
  init_lora_weights: z.union([z.boolean(), z.string()]).default(true),
  /** Per-module rank overrides: {regex or name: r}. */
  rank_pattern: z.record(z.string(), z.number().int().positive()).default({}),
  /** Per-module alpha overrides. */
  alpha_pattern: z.record(z.string(), z.number().positive()).default({}),
  /** Weight-decomposed LoRA (the dora variant). */
  use_dora: z.boolean().default(false),
  /** A trainable bias on lora_B (not supported: must stay false). */
  lora_bias: z.boolean().default(false),
  /** Ties the adapters of tied embedding and output-head weights (PEFT ≥ 0.18). */
  ensure_weight_tying: z.boolean().default(false),
  megatron_core: z.string().optional(),
  qalora_group_size: z.number().int().optional(),
  runtime_config: z.record(z.string(), z.unknown()).optional(),
  ...Object.fromEntries(
    Object.keys(NEUTRAL)
      .filter((k) => k !== 'lora_bias')
      .map((k) => [k, z.unknown().optional()]),
  ),
};

/** A LoraConfig with defaults filled (targeting fields included). */
export type LoraConfig = { [K in keyof typeof loraFields]: z.output<(typeof loraFields)[K]> } & {
  target_modules: string | string[] | null;
  modules_to_save: string[] | null;
  [k: string]: unknown;
};

/** Per-layer settings after rank_pattern / alpha_pattern. */
export interface LoraSettings {
  r: number;
  alpha: number;
  /** The factor PEFT multiplies the adapter output by (alpha/r, alpha/√r with rsLoRA). */
  scaling: number;
  dropout: number;
}

const names = (layer: LayerInfo) =>
  layer.kind === 'embedding' ? ['lora_embedding_A', 'lora_embedding_B'] : ['lora_A.weight', 'lora_B.weight'];

/** ΔW = s·B·A in the stored weight's layout. */
function loraDelta(layer: LayerInfo, s: LoraSettings, p: Record<string, Float32Array>): Float32Array {
  const [an, bn] = names(layer);
  const [o, i] = matrixDims(layer);
  const ba = matmul(p[bn], p[an], o, s.r, i); // [out, in]
  for (let k = 0; k < ba.length; k++) ba[k] *= s.scaling;
  return fromMatrix(layer, ba);
}

export const lora: AdapterMethod<LoraConfig, LoraSettings> = {
  name: 'lora',
  peftType: 'LORA',
  paper: 'LoRA: Low-Rank Adaptation of Large Language Models (arXiv:2106.09685)',
  layers: ['linear', 'conv1d', 'embedding'],
  fields: loraFields,

  openFields: {
    init_lora_weights: {
      own: (v) => v === true || v === false || v === 'gaussian',
      describe: 'true, false, "gaussian"',
    },
  },

  check(c, source) {
    for (const [k, neutral] of Object.entries(NEUTRAL)) {
      if (c[k] !== undefined && !neutral(c[k])) {
        throw new LorakitError(
          'LK_UNSUPPORTED',
          `${source}: ${k} = ${JSON.stringify(c[k])} is not supported by lorakit; remove it or use its default`,
          { field: k },
        );
      }
    }
  },

  settings(c, layer) {
    const r = patternValue(c.rank_pattern, layer.path) ?? c.r;
    const alpha = patternValue(c.alpha_pattern, layer.path) ?? c.lora_alpha;
    return { r, alpha, scaling: c.use_rslora ? alpha / Math.sqrt(r) : alpha / r, dropout: c.lora_dropout };
  },

  params(layer, s): ParamSpec[] {
    const [an, bn] = names(layer);
    return [
      { name: an, shape: [s.r, layer.inFeatures], trainable: true, role: 'a' },
      { name: bn, shape: [layer.outFeatures, s.r], trainable: true, role: 'b' },
    ];
  },

  async init({ layer, settings: s, config: c, rng }) {
    const [an, bn] = names(layer);
    const [nA, nB] = [s.r * layer.inFeatures, layer.outFeatures * s.r];
    let A: Float32Array, B: Float32Array;
    if (c.init_lora_weights === false) {
      const b = kaimingUniformBound(layer.inFeatures);
      A = rng.uniformArray(nA, -b, b);
      B = rng.normalArray(nB, 0.02);
    } else if (layer.kind === 'embedding') {
      A = new Float32Array(nA); // PEFT: embeddings start with A = 0 and B ~ N(0, 1)
      B = rng.normalArray(nB, 1);
    } else if (c.init_lora_weights === 'gaussian') {
      A = rng.normalArray(nA, 1 / s.r);
      B = new Float32Array(nB);
    } else {
      // true, and the strings an initialisation variant handles after this (it replaces A and B)
      const b = kaimingUniformBound(layer.inFeatures);
      A = rng.uniformArray(nA, -b, b);
      B = new Float32Array(nB);
    }
    return { values: { [an]: A, [bn]: B } };
  },

  parts(ctx: ForwardContext<LoraConfig, LoraSettings>) {
    const { layer, settings: s, x, p } = ctx;
    const [an, bn] = names(layer);
    const t =
      layer.kind === 'embedding'
        ? p[an].T.gather(x).matmul(p[bn].T) // [.., r] · [r, dim]
        : ctx.dropout(x, s.dropout).matmul(p[an].T).matmul(p[bn].T); // [.., in] · [in, r] · [r, out]
    return { lora: t.mul(s.scaling) };
  },

  forward(ctx) {
    return ctx.y.add(lora.parts!(ctx).lora);
  },

  trainableCount: (_c, layers) =>
    layers.reduce((n, { layer, settings: s }) => n + s.r * (layer.inFeatures + layer.outFeatures), 0),

  delta: ({ layer, settings, p }) => loraDelta(layer, settings, p),

  // PEFT's conversion of a base-replacing init: ΔW = s·B·A − s·B0·A0 = s·[B | −B0]·[A; A0], a LoRA of rank 2r whose
  // alpha keeps s (×2, or ×√2 with rsLoRA).
  convertToBase(c, layers) {
    if (c.use_rslora && (Object.keys(c.rank_pattern).length || Object.keys(c.alpha_pattern).length)) {
      throw new LorakitError(
        'LK_UNSUPPORTED',
        'converting to a plain LoRA is not possible with use_rslora and rank_pattern/alpha_pattern (as in PEFT)',
      );
    }
    const double = (pat: Record<string, number>) => Object.fromEntries(Object.entries(pat).map(([k, v]) => [k, 2 * v]));
    const config = {
      ...c,
      init_lora_weights: true,
      r: 2 * c.r,
      lora_alpha: c.use_rslora ? c.lora_alpha * Math.SQRT2 : 2 * c.lora_alpha,
      rank_pattern: double(c.rank_pattern),
      alpha_pattern: double(c.alpha_pattern),
    };
    const out = new Map<string, Record<string, Float32Array>>();
    for (const l of layers) {
      const [an, bn] = names(l.layer);
      const { r } = l.settings;
      const [o] = matrixDims(l.layer);
      const A = new Float32Array(2 * r * l.layer.inFeatures);
      A.set(l.p[an]);
      A.set(l.initial[an], l.p[an].length); // [A; A0]: rows stacked
      const B = new Float32Array(o * 2 * r);
      for (let row = 0; row < o; row++) {
        for (let k = 0; k < r; k++) {
          B[row * 2 * r + k] = l.p[bn][row * r + k];
          B[row * 2 * r + r + k] = -l.initial[bn][row * r + k]; // [B | −B0]: columns side by side
        }
      }
      out.set(l.layer.path, { [an]: A, [bn]: B });
    }
    return { config, layers: out };
  },
};
