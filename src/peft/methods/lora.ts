/**
 * LoRA — "LoRA: Low-Rank Adaptation of Large Language Models" (Hu et al., 2021, arXiv:2106.09685); PEFT peft_type
 * LORA. ΔW = s·B·A with A [r, in], B [out, r], s = alpha/r (alpha/√r with rsLoRA, arXiv:2312.03732). Forward
 * y = base(x) + s·B(A(dropout(x))). Embeddings: y = E[x] + s·(Aᵀ[x])·Bᵀ with A [r, num], B [dim, r].
 * Conv2d, as PEFT's `_ConvNd`: A is a Conv(in → r) with the base kernel, stride and padding — but not its dilation —
 * [r, in, kh, kw]; B a 1×1 Conv(r → out) with the base groups, [out, r/groups, 1, 1]. It merges (ΔW[o, i, :, :] =
 * s·Σ_j B[o, j]·A[j, i, :, :]) only where PEFT's ΔW is the adapted function: groups 1 and no dilated kernel axis.
 * Its variants (DoRA, PiSSA, OLoRA, ...) are their own files, composed by the registry; they receive LoRA's term
 * s·B(A(x̃)) as `parts.lora`.
 */
import { z } from 'zod';
import { LorakitError } from '../../errors.ts';
import { fmtShape, type Tensor } from '../../graph/index.ts';
import { kaimingUniformBound, matmul } from '../../linalg/index.ts';
import { patternValue } from '../config.ts';
import { fromMatrix, matrixDims } from '../layers.ts';
import type { AdapterMethod, ConvGeometry, ForwardContext, LayerInfo, ParamSpec } from '../method.ts';

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

/** Kaiming's fan-in of A: its input width (a conv A reads in·kh·kw values per output). */
const fanInA = (layer: LayerInfo) => layer.inFeatures * (layer.conv ? layer.conv.kernel[0] * layer.conv.kernel[1] : 1);

/** Shapes of A and B: [r, in] and [out, r]; on a Conv2d [r, in, kh, kw] and [out, r/groups, 1, 1] (PEFT's). */
function shapes(layer: LayerInfo, r: number): [number[], number[]] {
  const c = layer.conv;
  if (c)
    return [
      [r, layer.inFeatures, ...c.kernel],
      [layer.outFeatures, r / c.groups, 1, 1],
    ];
  return [
    [r, layer.inFeatures],
    [layer.outFeatures, r],
  ];
}
const numel = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/** Why ΔW = s·B·A of a Conv2d is not the adapted function, or null (every other layer kind merges). */
function convMergeBlock(layer: LayerInfo): string | null {
  const c = layer.conv;
  if (!c) return null;
  if (c.groups > 1) {
    return (
      `a Conv2d with groups ${c.groups}: lora_A mixes every input channel, so B·A is no grouped kernel (PEFT ` +
      'refuses to merge it too)'
    );
  }
  if (c.dilation.some((d, k) => d > 1 && c.kernel[k] > 1)) {
    return (
      `a Conv2d with dilation [${c.dilation}]: lora_A has the base kernel without its dilation (as in PEFT), so ` +
      'B·A added to the dilated kernel is another function (PEFT merges it anyway)'
    );
  }
  return null;
}

/** ΔW = s·B·A in the stored weight's layout (a Conv2d's [out, in, kh, kw] is the [out, in·kh·kw] matrix B·A). */
function loraDelta(layer: LayerInfo, s: LoraSettings, p: Record<string, Float32Array>): Float32Array {
  const block = convMergeBlock(layer);
  if (block) throw new Error(`internal: ΔW of ${layer.path} asked for, but it is ${block}`);
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
  layers: ['linear', 'conv1d', 'conv2d', 'embedding'],
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

  // PEFT's lora_B on a grouped conv has r/groups input channels per group, so groups must divide r.
  checkLayer(layer, s, _c, source) {
    const c = layer.conv;
    if (c && s.r % c.groups !== 0) {
      throw new LorakitError(
        'LK_CONFIG_INVALID',
        `${source}: ${layer.path} is a Conv2d with groups ${c.groups}, which must divide its rank ${s.r} (lora_B is ` +
          'a grouped 1×1 conv, as in PEFT); choose another r or rank_pattern entry, or exclude the layer',
        { layer: layer.path },
      );
    }
  },

  params(layer, s): ParamSpec[] {
    const [an, bn] = names(layer);
    const [sa, sb] = shapes(layer, s.r);
    return [
      { name: an, shape: sa, trainable: true, role: 'a' },
      { name: bn, shape: sb, trainable: true, role: 'b' },
    ];
  },

  async init({ layer, settings: s, config: c, rng }) {
    const [an, bn] = names(layer);
    const [nA, nB] = shapes(layer, s.r).map(numel);
    let A: Float32Array, B: Float32Array;
    if (c.init_lora_weights === false) {
      const b = kaimingUniformBound(fanInA(layer));
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
      const b = kaimingUniformBound(fanInA(layer));
      A = rng.uniformArray(nA, -b, b);
      B = new Float32Array(nB);
    }
    return { values: { [an]: A, [bn]: B } };
  },

  parts(ctx: ForwardContext<LoraConfig, LoraSettings>) {
    const { layer, settings: s, x, p } = ctx;
    const [an, bn] = names(layer);
    if (layer.conv) return { lora: convTerm(ctx, layer.conv, p[an], p[bn]).mul(s.scaling) };
    const t =
      layer.kind === 'embedding'
        ? p[an].T.gather(x).matmul(p[bn].T) // [.., r] · [r, dim]
        : ctx.dropout(x, s.dropout).matmul(p[an].T).matmul(p[bn].T); // [.., in] · [in, r] · [r, out]
    return { lora: t.mul(s.scaling) };
  },

  forward(ctx) {
    return ctx.y.add(lora.parts!(ctx).lora);
  },

  // r·(in + out); on a Conv2d r·in·kh·kw + out·r/groups
  trainableCount: (_c, layers) =>
    layers.reduce((n, { layer, settings: s }) => {
      const c = layer.conv;
      if (!c) return n + s.r * (layer.inFeatures + layer.outFeatures);
      return n + s.r * layer.inFeatures * c.kernel[0] * c.kernel[1] + (layer.outFeatures * s.r) / c.groups;
    }, 0),

  delta: ({ layer, settings, p }) => loraDelta(layer, settings, p),

  unmergeableLayer: (layer) => convMergeBlock(layer),

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
      if ((l.layer.conv?.groups ?? 1) > 1) {
        throw new LorakitError(
          'LK_UNSUPPORTED',
          `converting ${l.layer.path}, a grouped Conv2d, to a plain LoRA is not supported (its rank-2r lora_B ` +
            'would interleave the groups)',
        );
      }
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

/**
 * B(A(dropout x)) on a Conv2d, [N, out, H', W'] (PEFT's conv LoRA): A takes the base stride and padding but no
 * dilation, so on a dilated base its output size can differ from the base's; PEFT then fails, and so does this,
 * naming the layer.
 */
function convTerm(ctx: ForwardContext<LoraConfig, LoraSettings>, c: ConvGeometry, A: Tensor, B: Tensor): Tensor {
  const x = ctx.dropout(ctx.x, ctx.settings.dropout); // [N, in, H, W]
  const t = x.conv2d(A, null, { stride: c.stride, padding: c.padding }).conv2d(B, null, { groups: c.groups });
  const [want, got] = [ctx.y.shape.slice(2), t.shape.slice(2)];
  if (want.some((d, k) => typeof d === 'number' && typeof got[k] === 'number' && d !== got[k])) {
    throw new LorakitError(
      'LK_SHAPE_MISMATCH',
      `lora on ${ctx.layer.path}: lora_A has the base kernel, stride and padding without the dilation ` +
        `[${c.dilation}] (as in PEFT), so on input ${fmtShape(ctx.x.shape)} it gives ${fmtShape(got)} where the ` +
        `base conv gives ${fmtShape(want)}; PEFT fails on this input too. Exclude the layer (exclude_modules)`,
      { layer: ctx.layer.path },
    );
  }
  return t; // [N, out, H', W']
}
