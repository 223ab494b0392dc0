/**
 * FlyLoRA — "FlyLoRA: Boosting Task Decoupling and Parameter Efficiency via Implicit Rank-Wise Mixture-of-Experts"
 * (Zou et al., NeurIPS 2025, arXiv:2510.08396); not in PEFT (saved as peft_type "FLYLORA"). Relative to LoRA, A is a
 * frozen sparse random projection that is also the router: each of the r ranks is a rank-1 expert, and each token
 * uses only the k ranks where a = A·x̃ (+ a load-balancing bias d) is largest. Only B trains. Per token:
 *   a = A·x̃ (x̃ = dropout(x), no gradient), idx = TopK(a + d, k), mask = one_hot(idx) ∈ {0,1}^r,
 *   y = base(x) + s·B·(a ⊙ mask), s = α/r (α/√r with rsLoRA).
 * After each training forward, d ← d + u·sign(mean(c) − c), where c_i counts the tokens of the batch that picked
 * rank i (DeepSeek's auxiliary-loss-free balancing): d is a buffer (role 'state', `setState`), fed back each step and
 * checkpointed. The routing depends on the input, so no ΔW reproduces the adapter: it cannot be merged.
 * Follows the official code (gfyddha/FlyLoRA@91d9e36, read): its modified PEFT `tuners/lora/layer.py` (the version
 * its scripts train with) — signed TopK of a + d, `torch.no_grad()` around a, counts over every token position of
 * the micro-batch, keys lora_A.weight / lora_B.weight / lora_topk_bias; its "sparse" init keeps p = in // (r // k)
 * random entries per row of A, drawn N(0, 1/r²). `route_by_magnitude` selects on |a + d| as its stand-alone
 * `flylora.py` does, and `sparsity_ratio` sets p = max(1, ⌊in·ρ⌋) as there.
 * Two departures, both deliberate: d is updated by training forwards only (the official code also moves it in eval
 * and generation), and A is drawn from lorakit's generator and saved (the official A comes from torch's global
 * stream at whatever state model loading left it, which nothing can reproduce).
 * Not here: buffers in the train step (binding.ts, optim/step.ts), the TopK primitive (graph/ops/reduce.ts).
 */
import { z } from 'zod';
import { LorakitError } from '../../errors.ts';
import type { Tensor } from '../../graph/index.ts';
import type { Rng } from '../../linalg/index.ts';
import type { AdapterMethod, ForwardContext, LayerInfo, ParamSpec } from '../method.ts';

export const flyloraFields = {
  /** Total rank r: the number of rank-1 experts (official script: 32). */
  r: z.number().int().positive().default(32),
  /** Ranks each token activates, k ≤ r (official: 8). */
  top_k: z.number().int().positive().default(8),
  /** Scaling numerator: s = lora_alpha / r (official script: 64 = 2r). */
  lora_alpha: z.number().positive().default(64),
  /** s = lora_alpha / √r (the modified PEFT layer keeps LoRA's option). */
  use_rslora: z.boolean().default(false),
  /** Dropout on the adapter input (before A, so it also changes the routing), during training. */
  lora_dropout: z.number().min(0).max(1).default(0),
  /** Load-balancing step u of d ← d + u·sign(mean(c) − c) (official script 0.001; the config's default is 0.01). */
  bias_u: z.number().nonnegative().default(0.001),
  /** "sparse": p random entries per row of A, N(0, 1/r²), the rest 0 (the paper's); "gaussian": dense N(0, 1/r²). */
  init_lora_weights: z.enum(['sparse', 'gaussian']).default('sparse'),
  /** Non-zeros per row of A as a fraction ρ of in: p = max(1, ⌊in·ρ⌋); null: p = in // (r // k), the official rule. */
  sparsity_ratio: z.number().positive().max(1).nullable().default(null),
  /** Route on |a + d| (the official flylora.py) instead of a + d (its PEFT layer, which trained the paper's runs). */
  route_by_magnitude: z.boolean().default(false),
};

/** A FlyLoRA config with defaults filled (targeting fields included). */
export type FlyLoraConfig = { [K in keyof typeof flyloraFields]: z.output<(typeof flyloraFields)[K]> } & {
  target_modules: string | string[] | null;
  [k: string]: unknown;
};

const A_NAME = 'lora_A.weight',
  B_NAME = 'lora_B.weight',
  BIAS = 'lora_topk_bias';

/** The adapter's output scale: α/r, or α/√r with rsLoRA. */
export const flyloraScaling = (c: FlyLoraConfig) => (c.use_rslora ? c.lora_alpha / Math.sqrt(c.r) : c.lora_alpha / c.r);

/** Non-zero entries per row of the sparse A of a layer with `inFeatures` inputs. */
export function nonZerosPerRow(c: FlyLoraConfig, inFeatures: number): number {
  if (c.sparsity_ratio !== null) return Math.max(1, Math.floor(inFeatures * c.sparsity_ratio));
  return Math.floor(inFeatures / Math.floor(c.r / c.top_k));
}

/** A [r, in]: each row keeps p distinct random columns (a partial Fisher–Yates shuffle) with N(0, 1/r²) values. */
function sparseProjection(rng: Rng, r: number, inF: number, p: number): Float32Array {
  const A = new Float32Array(r * inF);
  const cols = Int32Array.from({ length: inF }, (_, j) => j);
  for (let i = 0; i < r; i++) {
    for (let j = 0; j < p; j++) {
      const t = j + Math.floor(rng.next() * (inF - j));
      [cols[j], cols[t]] = [cols[t], cols[j]];
      A[i * inF + cols[j]] = rng.normal() / r;
    }
  }
  return A;
}

/**
 * The next load-balancing bias from one forward's routing: c = tokens per rank (mask [.., r] summed over every token
 * axis), d + u·sign(mean(c) − c): under-used ranks are pushed up, over-used ones down (mean(c) = tokens·k/r).
 */
function nextBias(d: Tensor, mask: Tensor, u: number): Tensor {
  const tokenAxes = mask.shape.slice(0, -1).map((_, i) => i);
  const c = tokenAxes.length ? mask.sum(tokenAxes) : mask; // [r]
  return d.add(c.mean().sub(c).sign().mul(u)); // [r]
}

export const flylora: AdapterMethod<FlyLoraConfig> = {
  name: 'flylora',
  peftType: null,
  paper:
    'FlyLoRA: Boosting Task Decoupling and Parameter Efficiency via Implicit Rank-Wise Mixture-of-Experts ' +
    '(arXiv:2510.08396)',
  layers: ['linear', 'conv1d'],
  fields: flyloraFields,

  check(c, source) {
    if (c.top_k > c.r) {
      throw new LorakitError(
        'LK_CONFIG_INVALID',
        `${source}: top_k = ${c.top_k} exceeds r = ${c.r}; each token activates k of the r ranks, so k ≤ r`,
        { field: 'top_k' },
      );
    }
  },

  // the official rule p = in // (r // k) leaves A's rows empty when in < r // k: that layer would never adapt
  checkLayer(layer, _s, c, source) {
    if (c.init_lora_weights === 'sparse' && nonZerosPerRow(c, layer.inFeatures) === 0) {
      throw new LorakitError(
        'LK_CONFIG_INVALID',
        `${source}: ${layer.path} has ${layer.inFeatures} inputs, fewer than r // top_k = ${Math.floor(c.r / c.top_k)}, ` +
          'so the sparse A would keep no entry per row; set sparsity_ratio, lower r / top_k, or exclude the layer',
        { layer: layer.path },
      );
    }
  },

  params(layer: LayerInfo, _s, c): ParamSpec[] {
    return [
      { name: A_NAME, shape: [c.r, layer.inFeatures], trainable: false, role: 'projection' },
      { name: B_NAME, shape: [layer.outFeatures, c.r], trainable: true, role: 'b' },
      { name: BIAS, shape: [c.r], trainable: false, role: 'state' },
    ];
  },

  // A frozen random (sparse: p entries per row), B = 0 (the adapter starts as the identity), d = 0
  async init({ layer, config: c, rng }) {
    const inF = layer.inFeatures;
    const A =
      c.init_lora_weights === 'sparse'
        ? sparseProjection(rng, c.r, inF, nonZerosPerRow(c, inF))
        : rng.normalArray(c.r * inF, 1 / c.r);
    return {
      values: { [A_NAME]: A, [B_NAME]: new Float32Array(layer.outFeatures * c.r), [BIAS]: new Float32Array(c.r) },
    };
  },

  forward(ctx: ForwardContext<FlyLoraConfig, unknown>): Tensor {
    const { config: c, p, x } = ctx;
    // the official forward computes a under no_grad: the adapter path sends no gradient back to x
    const a = ctx.dropout(x, c.lora_dropout).matmul(p[A_NAME].T).detach(); // [.., in]·[in, r] → [.., r]
    const rdt = a.dtype === 'f64' ? 'f64' : 'f32'; // TopK runs in f32 or f64
    let score = a.cast(rdt).add(p[BIAS].cast(rdt)); // [.., r]
    if (c.route_by_magnitude) score = score.abs();
    const [, idx] = score.topk(c.top_k); // [.., k] i64: the routed ranks, ties to the lower rank
    const hit = idx.unsqueeze(-1).equal(x.graph.range(0, c.r)); // [.., k, r]: one-hot of each pick
    const mask = hit.cast(a.dtype).sum(-2); // [.., r] ∈ {0, 1}
    ctx.setState(BIAS, nextBias(p[BIAS].cast(rdt), mask.cast(rdt), c.bias_u));
    return ctx.y.add(a.mul(mask).matmul(p[B_NAME].T).mul(flyloraScaling(c))); // [.., r]·[r, out]
  },

  // the paper's count: B only, r·out per layer
  trainableCount: (c, layers) => layers.reduce((n, { layer }) => n + c.r * layer.outFeatures, 0),

  unmergeable:
    'each token routes to its own top-k ranks (mask(x) depends on the input), so no single ΔW = s·B·A reproduces ' +
    'the adapter; run it unmerged',
};
