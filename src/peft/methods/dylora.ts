/**
 * DyLoRA — "DyLoRA: Parameter-Efficient Tuning of Pre-trained Models using Dynamic Search-Free Low-Rank Adaptation"
 * (Valipour et al., EACL 2023, arXiv:2210.07558); not in PEFT. A LoRA variant (`dylora: {...}`) that trains one
 * rank-r adapter so that every prefix B[:, :b]·A[:b, :] is a usable rank-b adapter: each optimizer step draws one
 * rank b ∈ {min_rank..r} for all layers (a model-level step input from the run's generator, so resumed runs draw the
 * same), and the forward keeps the first b components, scaled by α/b (the official code multiplies both factors by
 * √(r/b): (α/r)·(r/b)). In "frozen" mode (the official training rule) components below b are detached, so only
 * component b gets a gradient; the optimizer still moves them by momentum and weight decay, as in the official code.
 * Outside training the adapter runs at `inference_rank` (default r) and merges there.
 * The dylora fields are training settings (left out of adapter_config.json): a saved DyLoRA adapter is the plain
 * rank-r LoRA PEFT loads (s = α/r), and `truncateLora` (peft/truncate.ts) writes its rank-b adapter (r = b, s = α/b).
 * Not here: the LoRA factors, their init and saving (lora.ts), the sampling's generator (train/).
 */
import { z } from 'zod';
import { LorakitError } from '../../errors.ts';
import type { Tensor } from '../../graph/index.ts';
import type { ForwardContext, LayerInfo, MethodVariant, StepInputSpec } from '../method.ts';
import { type LoraConfig, type LoraSettings, lora } from './lora.ts';

/** The `dylora` config field. */
const dyloraField = z
  .strictObject({
    /** Smallest rank drawn during training: b ∈ {min_rank..r}, uniformly. */
    min_rank: z.number().int().positive().default(1),
    /** Detach the components below the drawn rank, so only component b trains each step (the official "frozen"). */
    frozen: z.boolean().default(true),
    /** The rank evaluation, generation and merges use; default r. */
    inference_rank: z.number().int().positive().optional(),
  })
  .optional();

/** A LoraConfig with the dylora field. */
export type DyLoraConfig = LoraConfig & { dylora?: z.output<typeof dyloraField> };

/** The step-input names: the drawn rank b, and whether ranks below it are detached (1 when training frozen). */
const RANK = 'dylora_rank',
  FROZEN = 'dylora_frozen';

/** The rank used outside training. */
const inferenceRank = (c: DyLoraConfig) => c.dylora?.inference_rank ?? c.r;

/** LoRA's scaling at rank b: α/b (α/√b with rsLoRA, so the rank-b truncation is a PEFT LoRA with r = b). */
const scalingAt = (c: DyLoraConfig, s: LoraSettings, b: number) =>
  c.use_rslora ? s.alpha / Math.sqrt(b) : s.alpha / b;

/** LoRA's down- and up-projection names on this layer, by role. */
function factorNames(layer: LayerInfo, s: LoraSettings, c: DyLoraConfig): [string, string] {
  const specs = lora.params(layer, s, c);
  return [specs.find((p) => p.role === 'a')!.name, specs.find((p) => p.role === 'b')!.name];
}

/** A [r, in] down-projection and [out, r] up-projection cut to their first b components (row-major). */
export function truncateFactors(a: Float32Array, bUp: Float32Array, r: number, b: number) {
  const inF = a.length / r,
    out = bUp.length / r;
  const B = new Float32Array(out * b);
  for (let o = 0; o < out; o++) B.set(bUp.subarray(o * r, o * r + b), o * b); // [out, b]: first b columns
  return { a: a.slice(0, b * inF), b: B }; // A: first b rows [b, in]
}

export const dylora: MethodVariant<DyLoraConfig, LoraSettings> = {
  name: 'dylora',
  paper:
    'DyLoRA: Parameter-Efficient Tuning of Pre-trained Models using Dynamic Search-Free Low-Rank Adaptation (arXiv:2210.07558)',
  of: ['lora'],
  applies: (c) => c.dylora !== undefined,
  selectedBy: { dylora: {} },
  fields: { dylora: dyloraField },
  trainingOnly: ['dylora'],

  check(c, source) {
    const d = c.dylora!;
    const bad = (field: string, msg: string) =>
      new LorakitError('LK_CONFIG_INVALID', `${source}: dylora.${field} ${msg}`, { field: `dylora.${field}` });
    if (d.min_rank > c.r) throw bad('min_rank', `= ${d.min_rank} exceeds r = ${c.r}; expected 1..${c.r}`);
    if (inferenceRank(c) > c.r) throw bad('inference_rank', `= ${inferenceRank(c)} exceeds r = ${c.r}`);
    if (Object.keys(c.rank_pattern).length) {
      throw new LorakitError(
        'LK_UNSUPPORTED',
        `${source}: dylora draws one rank for all layers, so every layer needs the same r; remove rank_pattern`,
        { field: 'rank_pattern' },
      );
    }
  },

  // b is drawn once per optimizer step for all layers; the frozen flag is 1 only in training graphs, so evaluation
  // (and a gradient taken outside training) sees the plain rank-b model.
  stepInputs(c): StepInputSpec<DyLoraConfig>[] {
    const d = c.dylora!;
    return [
      {
        name: RANK,
        layer: null,
        dtype: 'i64',
        shape: [],
        train: ({ rng }) => BigInt64Array.of(BigInt(d.min_rank + Math.floor(rng.next() * (c.r - d.min_rank + 1)))),
        infer: (cfg) => BigInt64Array.of(BigInt(inferenceRank(cfg))),
      },
      {
        name: FROZEN,
        layer: null,
        dtype: 'i64',
        shape: [],
        train: () => BigInt64Array.of(d.frozen ? 1n : 0n),
        infer: () => BigInt64Array.of(0n),
      },
    ];
  },

  // y = base(x) + s_b·((x̃·Aᵀ) ⊙ keep)·Bᵀ, keep = [k < b] over components k = 0..r−1 and s_b = α/b; in frozen mode
  // the components k < b−1 enter through detach(), so their gradient is exactly zero.
  forward(ctx: ForwardContext<DyLoraConfig, LoraSettings>): Tensor {
    const { layer, settings: s, config: c, x, p, inputs } = ctx;
    const [an, bn] = factorNames(layer, s, c);
    const g = x.graph;
    const b = inputs[RANK]; // [] i64
    const k = g.range(0, s.r); // [r] i64: component index
    const keep = k.less(b).cast(ctx.y.dtype); // [r]
    // with min_rank > 1 the first min_rank components train together when b = min_rank (else they never would)
    const detachBelow = b.sub(1).mul(b.greater(c.dylora!.min_rank).cast('i64')).mul(inputs[FROZEN]); // [] i64
    const detached = k.less(detachBelow); // [r] bool
    const A = detached.unsqueeze(1).where(p[an].detach(), p[an]); // [r, in]
    const B = detached.unsqueeze(0).where(p[bn].detach(), p[bn]); // [out, r]
    const h = layer.kind === 'embedding' ? A.T.gather(x) : ctx.dropout(x, s.dropout).matmul(A.T); // [.., r]
    const bf = b.cast(ctx.y.dtype);
    const scale = (c.use_rslora ? bf.sqrt() : bf).reciprocal().mul(s.alpha); // [] α/b (α/√b with rsLoRA)
    return ctx.y.add(h.mul(keep).matmul(B.T).mul(scale)); // [.., r] · [r, out]
  },

  // W0 + s_b·B[:, :b]·A[:b, :] at the inference rank: LoRA's ΔW of the truncated factors
  merge(v, w0) {
    const c = v.config;
    const b = inferenceRank(c);
    const [an, bn] = factorNames(v.layer, v.settings, c);
    const t = truncateFactors(v.p[an], v.p[bn], v.settings.r, b);
    const settings = { ...v.settings, r: b, scaling: scalingAt(c, v.settings, b) };
    const d = lora.delta!({ ...v, settings, p: { [an]: t.a, [bn]: t.b } });
    return Float32Array.from(w0, (w, i) => w + d[i]);
  },
};
