/**
 * LoRA — "LoRA: Low-Rank Adaptation of Large Language Models" (Hu et al., 2021, arXiv:2106.09685); PEFT peft_type
 * LORA. ΔW = s·B·A with A [r, in], B [out, r], s = alpha/r (alpha/√r with rsLoRA, arXiv:2312.03732). Forward
 * y = base(x) + s·B(A(dropout(x))). Embeddings: y = E[x] + s·(Aᵀ[x])·Bᵀ with A [r, num], B [dim, r].
 * Variants of the family (DoRA) are small objects in their own files, picked by the config (`use_dora`).
 */
import { z } from 'zod';
import { LorakitError } from '../../errors.ts';
import { matmul, transpose, kaimingUniformBound } from '../../linalg/index.ts';
import { targetingSchema, parseWith, patternValue } from '../config.ts';
import type { AdapterMethod, LayerInfo, LayerSettings, ParamSpec, ForwardContext } from '../method.ts';
import { dora } from './dora.ts';

export const loraConfigSchema = targetingSchema
  .extend({
    peft_type: z.literal('LORA').default('LORA'),
    /** Rank. */
    r: z.number().int().positive().default(8),
    /** Scaling numerator: s = lora_alpha / r. */
    lora_alpha: z.number().positive().default(8),
    /** Dropout on the adapter input, during training. */
    lora_dropout: z.number().min(0).max(1).default(0),
    /** s = lora_alpha / √r (rank-stabilised LoRA). */
    use_rslora: z.boolean().default(false),
    /** True for GPT-2's Conv1D, whose weight is stored [in, out]. */
    fan_in_fan_out: z.boolean().default(false),
    /** Which base biases train: none, all, or those of adapted layers. */
    bias: z.enum(['none', 'all', 'lora_only']).default('none'),
    /** true: A Kaiming-uniform, B zero; false: both random (tests); "gaussian": A ~ N(0, 1/r). */
    init_lora_weights: z.union([z.boolean(), z.literal('gaussian')]).default(true),
    /** Per-module rank overrides: {regex or name: r}. */
    rank_pattern: z.record(z.string(), z.number().int().positive()).default({}),
    /** Per-module alpha overrides. */
    alpha_pattern: z.record(z.string(), z.number().positive()).default({}),
    /** Weight-decomposed LoRA (DoRA). */
    use_dora: z.boolean().default(false),
    /** A trainable bias on lora_B (not supported yet). */
    lora_bias: z.boolean().default(false),
    task_type: z.string().nullable().default(null),
    base_model_name_or_path: z.string().nullable().default(null),
  })
  .loose();

export type LoraConfig = z.output<typeof loraConfigSchema>;

/** A variant of the LoRA family: extra tensors, extra init, a different forward and merge. */
export interface LoraVariant {
  name: string;
  params(layer: LayerInfo, s: LayerSettings): ParamSpec[];
  init(layer: LayerInfo, s: LayerSettings, values: Record<string, Float32Array>): Promise<Record<string, Float32Array>>;
  /** `lora` is s·B(A(dropout x)) as computed by LoRA. */
  forward(ctx: ForwardContext<LoraConfig>, lora: Tensor): Tensor;
  merge(
    layer: LayerInfo,
    s: LayerSettings,
    p: Record<string, Float32Array>,
    w0: Float32Array,
    delta: Float32Array,
  ): Float32Array;
}
type Tensor = ForwardContext<LoraConfig>['x'];

const variantOf = (c: LoraConfig): LoraVariant | null => (c.use_dora ? dora : null);

const names = (layer: LayerInfo) =>
  layer.kind === 'embedding' ? ['lora_embedding_A', 'lora_embedding_B'] : ['lora_A.weight', 'lora_B.weight'];

/** ΔW = s·B·A in the stored weight's layout ([out,in]; [in,out] for Conv1D; [num,dim] for embeddings). */
function loraDelta(layer: LayerInfo, s: LayerSettings, p: Record<string, Float32Array>): Float32Array {
  const [an, bn] = names(layer);
  const [rows, cols] =
    layer.kind === 'embedding' ? [layer.outFeatures, layer.inFeatures] : [layer.outFeatures, layer.inFeatures];
  const ba = matmul(p[bn], p[an], rows, s.r, cols); // [out, in] or [dim, num]
  for (let i = 0; i < ba.length; i++) ba[i] *= s.scaling;
  return layer.kind === 'embedding' || layer.fanInFanOut ? transpose(ba, rows, cols) : ba;
}

export const lora: AdapterMethod<LoraConfig> = {
  name: 'lora',
  peftType: 'LORA',
  layers: ['linear', 'embedding'],

  parseConfig(json, source) {
    const c = parseWith(loraConfigSchema, json, source);
    if (c.lora_bias) throw new LorakitError('LK_UNSUPPORTED', `${source}: lora_bias is not supported yet`);
    return c;
  },

  settings(c, layer) {
    const r = patternValue(c.rank_pattern, layer.path) ?? c.r;
    const alpha = patternValue(c.alpha_pattern, layer.path) ?? c.lora_alpha;
    return { r, alpha, scaling: c.use_rslora ? alpha / Math.sqrt(r) : alpha / r, dropout: c.lora_dropout };
  },

  params(layer, s, c) {
    const [an, bn] = names(layer);
    const specs: ParamSpec[] = [
      { name: an, shape: [s.r, layer.inFeatures], trainable: true },
      { name: bn, shape: [layer.outFeatures, s.r], trainable: true },
    ];
    const v = variantOf(c);
    return v ? specs.concat(v.params(layer, s)) : specs;
  },

  async init({ layer, settings: s, config: c, rng }) {
    const [an, bn] = names(layer);
    const [nA, nB] = [s.r * layer.inFeatures, layer.outFeatures * s.r];
    let A: Float32Array, B: Float32Array;
    if (c.init_lora_weights === false) {
      A = rng.uniformArray(nA, -kaimingUniformBound(layer.inFeatures), kaimingUniformBound(layer.inFeatures));
      B = rng.normalArray(nB, 0.02);
    } else if (layer.kind === 'embedding') {
      A = new Float32Array(nA); // PEFT: embeddings start with A = 0 and B ~ N(0, 1)
      B = rng.normalArray(nB, 1);
    } else if (c.init_lora_weights === 'gaussian') {
      A = rng.normalArray(nA, 1 / s.r);
      B = new Float32Array(nB);
    } else {
      const b = kaimingUniformBound(layer.inFeatures);
      A = rng.uniformArray(nA, -b, b);
      B = new Float32Array(nB);
    }
    const values = { [an]: A, [bn]: B };
    const v = variantOf(c);
    return v ? { ...values, ...(await v.init(layer, s, values)) } : values;
  },

  forward(ctx) {
    const { layer, settings: s, x, y, p } = ctx;
    const [an, bn] = names(layer);
    let lora: Tensor;
    if (layer.kind === 'embedding') {
      lora = p[an].T.gather(x).matmul(p[bn].T); // [.., r] · [r, dim]
    } else {
      lora = ctx.dropout(x).matmul(p[an].T).matmul(p[bn].T); // [.., in] · [in, r] · [r, out]
    }
    lora = lora.mul(s.scaling);
    const v = variantOf(ctx.config);
    return v ? v.forward(ctx, lora) : y.add(lora);
  },

  delta(layer, s, c, p) {
    if (variantOf(c)) throw new Error('internal: a LoRA variant merges through merge()');
    return loraDelta(layer, s, p);
  },

  merge(layer, s, c, p, w0) {
    const d = loraDelta(layer, s, p);
    const v = variantOf(c);
    if (v) return v.merge(layer, s, p, w0, d);
    const out = new Float32Array(w0.length);
    for (let i = 0; i < out.length; i++) out[i] = w0[i] + d[i];
    return out;
  },
};
