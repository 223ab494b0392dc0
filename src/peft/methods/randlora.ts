/**
 * RandLoRA — "RandLoRA: Full-rank parameter-efficient fine-tuning of large models" (Albert et al., ICLR 2025,
 * arXiv:2502.00987); PEFT peft_type RANDLORA (tuners/randlora, read in 0.18.1 and 0.21.2: same computation and keys).
 * Relative to LoRA, ΔW is a sum of n = ⌈min(in, out)/r⌉ rank-r terms over frozen random bases, so it can reach full
 * rank, and only two diagonal scalings per term train: ΔW = s·Σ_b B_b·Λ_b·A·Γ_b, with A [r, min] shared by the terms,
 * Λ_b = diag(λ[:, b]) (λ [r, n]) and Γ_b = diag(γ[b]) (γ [n, min]); A and Γ act on the smaller of in and out. PEFT's
 * layout, kept bit for bit: one shared pair randlora_A [r, 1, D_min], randlora_B [D_max, n_max, r] sized from the
 * elementwise largest (out, in) over the targeted layers; a layer slices Â = λ[:, :, None]·A[:, :, :min]·γ[None] →
 * [r·n, min] (row k·n + b) and B̂ = B[:max, :n, :] → [max, n·r] (column b·r + k) — a row/column pairing that differs
 * from the paper's sum by a fixed permutation of B's i.i.d. columns — and ΔW = s·B̂·Â when min = in, else its
 * transpose.
 * s = α/r (PEFT; hence its default α = 640 = 20·r); `randlora_scaling: "official"` uses the official code's
 * α/r/√n (PaulAlbert31/RandLoRA@4ac565e, read). Init: λ = 0 (ΔW = 0), γ = 1/max(n, min) (PEFT's reset; the
 * official code keeps 1/max(in, out)); init_weights false: λ ~ N(0, 1), γ = 1/max(in, out), as PEFT.
 * The bases are PEFT's draws, reproduced bit for bit from torch 2.9.1's stream (PEFT regenerates them from
 * projection_prng_key when a folder has none; torch 2.15 fills bfloat16 differently, so such folders depend on the
 * torch that reads them: docs/decisions.md): kaiming_uniform_(a = √5) in bfloat16 (PEFT's dtype on CPU), A first,
 * then B as n_max chunks [D_max, 1, r], each tensor divided by its own std; `sparse` / `very_sparse` draw torch.rand
 * and keep the ternary −1/0/1 pattern PEFT thresholds, over its std. PEFT loads saved bases from
 * `base_model.randlora_A` / `randlora_B` and expects per-layer copies of both under every adapted layer (ignored on
 * load; missing ones make it warn), so the file layout writes those copies.
 * Not here: files (format.ts), torch's generator (linalg/torch-random.ts).
 */
import { z } from 'zod';
import { LorakitError } from '../../errors.ts';
import { matmul, roundBf16, roundBf16Array, TorchGenerator, transpose } from '../../linalg/index.ts';
import { fromMatrix } from '../layers.ts';
import type { AdapterMethod, FileLayout, LayerInfo, ParamSpec } from '../method.ts';

export const randloraFields = {
  /** Rank of each random basis; fewer trainable parameters come from a larger r (n = ⌈min(in, out)/r⌉ terms). */
  r: z.number().int().positive().default(32),
  /** Seed of torch's generator for the shared bases (PEFT regenerates them from it when a folder has none). */
  projection_prng_key: z.number().int().default(0),
  /** Whether randlora_A and randlora_B are written to adapter files (false: readers regenerate them). */
  save_projection: z.boolean().default(true),
  /** Ternary bases: −1 and 1 with probability 1/6 each, else 0, over their std (PEFT's sparse option). */
  sparse: z.boolean().default(false),
  /** Ternary bases with −1 and 1 of probability 1/(2√D_min) each (takes precedence over sparse, as in PEFT). */
  very_sparse: z.boolean().default(false),
  /** Dropout on the adapter input, during training. */
  randlora_dropout: z.number().min(0).max(1).default(0),
  /** True for GPT-2's Conv1D, whose weight is stored [in, out] (lorakit reads the layer kind; kept for PEFT). */
  fan_in_fan_out: z.boolean().default(false),
  /** Scaling numerator: s = randlora_alpha / r (PEFT's default 640 is 20·r). */
  randlora_alpha: z.number().positive().default(640),
  /** Which base biases train (only "none": lorakit does not train RandLoRA biases). */
  bias: z.enum(['none', 'all', 'randlora_only']).default('none'),
  /** true: λ = 0, γ = 1/max(n, min) (ΔW = 0); false: λ ~ N(0, 1), γ = 1/max(in, out) (PEFT's test init). */
  init_weights: z.boolean().default(true),
  /**
   * lorakit's: "official" scales by α/r/√n (the paper's code), absent or "peft" by α/r. PEFT ignores the key (with a
   * warning) and computes α/r, so a folder with "official" gives other outputs in PEFT.
   */
  randlora_scaling: z.enum(['peft', 'official']).optional(),
};

/** A RandLoraConfig with defaults filled (targeting fields included). */
export type RandloraConfig = { [K in keyof typeof randloraFields]: z.output<(typeof randloraFields)[K]> } & {
  target_modules: string | string[] | null;
  [k: string]: unknown;
};

const A_NAME = 'randlora_A',
  B_NAME = 'randlora_B',
  LAMBDA = 'randlora_lambda',
  GAMMA = 'randlora_gamma';

/** Terms needed for full rank: ⌈m / r⌉. */
const bases = (m: number, r: number) => Math.ceil(m / r);

/** PEFT's _find_dim: the elementwise largest (out, in) over the layers, as D_max = max and D_min = min of the two. */
function sharedDims(layers: readonly LayerInfo[], r: number) {
  const out = Math.max(...layers.map((l) => l.outFeatures));
  const inn = Math.max(...layers.map((l) => l.inFeatures));
  const [max, min] = [Math.max(out, inn), Math.min(out, inn)];
  return { max, min, n: bases(min, r) };
}

/** A layer's min(in, out), max(in, out) and number of terms n. */
function layerDims(layer: LayerInfo, r: number) {
  const min = Math.min(layer.inFeatures, layer.outFeatures);
  return { min, max: Math.max(layer.inFeatures, layer.outFeatures), n: bases(min, r) };
}

/** The adapter's output scale: α/r (PEFT), or α/r/√n (the official code). */
const scaling = (c: RandloraConfig, n: number) =>
  c.randlora_scaling === 'official' ? c.randlora_alpha / c.r / Math.sqrt(n) : c.randlora_alpha / c.r;

/** The unbiased standard deviation (torch.std's default), in float64. */
function std(x: Float32Array): number {
  let mean = 0;
  for (const v of x) mean += v;
  mean /= x.length;
  let ss = 0;
  for (const v of x) ss += (v - mean) * (v - mean);
  return Math.sqrt(ss / (x.length - 1));
}

/** x / x.std() as torch computes it for a bfloat16 tensor (the std rounded to bfloat16, each quotient too). */
function normalisedBf16(x: Float32Array): Float32Array {
  const s = roundBf16(std(x));
  return roundBf16Array(x.map((v) => v / s));
}

/** torch.nn.init.kaiming_uniform_(a=√5)'s bound for `fanIn` inputs, computed in torch's order. */
function kaimingBound(fanIn: number): number {
  const a = Math.sqrt(5);
  return Math.sqrt(3) * (Math.sqrt(2 / (1 + a * a)) / Math.sqrt(fanIn));
}

/** PEFT's _init_randlora_A_randlora_B: bfloat16 Kaiming draws, A then B's chunks, each over its std. */
function denseBases(c: RandloraConfig, d: ReturnType<typeof sharedDims>) {
  const g = new TorchGenerator(c.projection_prng_key);
  const A = g.uniformBfloat16(c.r * d.min, -kaimingBound(d.min), kaimingBound(d.min)); // (r, 1, min): fan_in = min
  const B = new Float32Array(d.max * d.n * c.r); // cat of n chunks (max, 1, r), fan_in = r
  for (let b = 0; b < d.n; b++) {
    const chunk = g.uniformBfloat16(d.max * c.r, -kaimingBound(c.r), kaimingBound(c.r));
    for (let m = 0; m < d.max; m++) B.set(chunk.subarray(m * c.r, (m + 1) * c.r), (m * d.n + b) * c.r);
  }
  return { A: normalisedBf16(A), B: normalisedBf16(B) };
}

/** PEFT's _init_randlora_A_randlora_B_sparse: torch.rand, −1 below 1/(2s), 1 above 1 − 1/(2s), over its std. */
function sparseBases(c: RandloraConfig, d: ReturnType<typeof sharedDims>, sparsity: number) {
  const g = new TorchGenerator(c.projection_prng_key);
  const [lo, hi] = [Math.fround(1 / (2 * sparsity)), Math.fround(1 - 1 / (2 * sparsity))]; // compared in float32
  const ternary = (u: Float32Array) => {
    const t = u.map((v) => (v < lo ? -1 : v > hi ? 1 : 0));
    const s = Math.fround(std(t));
    return t.map((v) => v / s);
  };
  const A = ternary(g.uniformFloat32(c.r * d.min, 0, 1));
  return { A, B: ternary(g.uniformFloat32(d.max * d.n * c.r, 0, 1)) };
}

/** Â [r·n, min] (row k·n + b) and B̂ [max, n·r] (column b·r + k) of a layer, from host values. */
function scaledBases(
  layer: LayerInfo,
  c: RandloraConfig,
  p: Record<string, Float32Array>,
  A: Float32Array,
  B: Float32Array,
  dMin: number,
  nMax: number,
) {
  const { min, max, n } = layerDims(layer, c.r);
  const [lambda, gamma] = [p[LAMBDA], p[GAMMA]];
  const aHat = new Float32Array(c.r * n * min);
  for (let k = 0; k < c.r; k++)
    for (let b = 0; b < n; b++)
      for (let j = 0; j < min; j++)
        aHat[(k * n + b) * min + j] = lambda[k * n + b] * A[k * dMin + j] * gamma[b * min + j];
  const bHat = new Float32Array(max * n * c.r);
  for (let m = 0; m < max; m++) bHat.set(B.subarray(m * nMax * c.r, m * nMax * c.r + n * c.r), m * n * c.r);
  return { aHat, bHat, min, max, n };
}

/** PEFT's per-layer copies of the shared bases, beside λ and γ (ignored when read: PEFT loads the shared pair). */
function copiesLayout(
  layer: LayerInfo,
  c: RandloraConfig,
  shared: readonly ParamSpec[],
): FileLayout<RandloraConfig, unknown> {
  const { min, n } = layerDims(layer, c.r);
  const shapeOf = (name: string) => shared.find((s) => s.name === name)!.shape;
  return {
    tensors: [
      { name: LAMBDA, shape: [c.r, n], dtype: 'F32' },
      { name: GAMMA, shape: [n, min], dtype: 'F32' },
      { name: A_NAME, shape: shapeOf(A_NAME), dtype: 'F32' },
      { name: B_NAME, shape: shapeOf(B_NAME), dtype: 'F32' },
    ],
    encode: ({ p, shared: s }) => ({
      [LAMBDA]: p[LAMBDA],
      [GAMMA]: p[GAMMA],
      [A_NAME]: s[A_NAME],
      [B_NAME]: s[B_NAME],
    }),
    decode: (file) => ({ [LAMBDA]: Float32Array.from(file[LAMBDA]), [GAMMA]: Float32Array.from(file[GAMMA]) }),
  };
}

export const randlora: AdapterMethod<RandloraConfig> = {
  name: 'randlora',
  peftType: 'RANDLORA',
  paper: 'RandLoRA: Full-rank parameter-efficient fine-tuning of large models (arXiv:2502.00987)',
  layers: ['linear', 'conv1d'],
  fields: randloraFields,
  // PEFT's RandLoraConfig has no exclude_modules: PEFT would adapt the excluded layers anyway
  peftLacks: ['exclude_modules'],

  check(c, source) {
    if (c.bias !== 'none') {
      throw new LorakitError(
        'LK_UNSUPPORTED',
        `${source}: bias = "${c.bias}" is not supported for RandLoRA: lorakit trains no biases with it; use bias ` +
          '"none", or list the modules whose weights should train in modules_to_save',
        { field: 'bias' },
      );
    }
  },

  params(layer, _s, c): ParamSpec[] {
    const { min, n } = layerDims(layer, c.r);
    return [
      { name: LAMBDA, shape: [c.r, n], trainable: true, role: 'vector' },
      { name: GAMMA, shape: [n, min], trainable: true, role: 'vector' },
    ];
  },

  shared(c, layers): ParamSpec[] {
    const d = sharedDims(layers, c.r);
    const saved = c.save_projection;
    return [
      { name: A_NAME, shape: [c.r, 1, d.min], trainable: false, role: 'projection', saved },
      { name: B_NAME, shape: [d.max, d.n, c.r], trainable: false, role: 'projection', saved },
    ];
  },

  async initShared({ config: c, layers }) {
    const d = sharedDims(layers, c.r);
    const { A, B } = c.very_sparse
      ? sparseBases(c, d, Math.sqrt(d.min))
      : c.sparse
        ? sparseBases(c, d, 3)
        : denseBases(c, d);
    return { [A_NAME]: A, [B_NAME]: B };
  },

  async init({ layer, config: c, rng }) {
    const { min, max, n } = layerDims(layer, c.r);
    if (!c.init_weights)
      return { values: { [LAMBDA]: rng.normalArray(c.r * n), [GAMMA]: new Float32Array(n * min).fill(1 / max) } };
    return {
      values: { [LAMBDA]: new Float32Array(c.r * n), [GAMMA]: new Float32Array(n * min).fill(1 / Math.max(n, min)) },
    };
  },

  forward(ctx) {
    const { layer, config: c, p, shared } = ctx;
    const { min, max, n } = layerDims(layer, c.r);
    const A = shared[A_NAME].slice([0], [min], [2]); // [r, 1, min] of [r, 1, D_min]
    const aHat = p[LAMBDA]
      .unsqueeze(-1)
      .mul(A)
      .mul(p[GAMMA].unsqueeze(0))
      .reshape([c.r * n, min]); // [r, n, min]
    const bHat = shared[B_NAME].slice([0, 0], [max, n], [0, 1]).reshape([max, n * c.r]); // [max, n, r] → [max, n·r]
    const x = ctx.dropout(ctx.x, c.randlora_dropout);
    const s = scaling(c, n);
    // min = in: [.., in]·[in, r·n]·[n·r, out]; min = out: [.., in]·[in, n·r]·[r·n, out]
    if (min === layer.inFeatures) return ctx.y.add(x.matmul(aHat.T).matmul(bHat.T).mul(s));
    return ctx.y.add(x.matmul(bHat).matmul(aHat).mul(s));
  },

  // the paper's count: n·(r + min(in, out)) per layer (λ and γ)
  trainableCount: (c, layers) =>
    layers.reduce((t, { layer }) => {
      const { min, n } = layerDims(layer, c.r);
      return t + n * (c.r + min);
    }, 0),

  fileLayout: (layer, _s, c, shared) => (c.save_projection ? copiesLayout(layer, c, shared) : null),

  // ΔW = s·B̂·Â [max, min], transposed when out < in; stored layout: GPT-2's Conv1D gets ΔWᵀ
  delta({ layer, config: c, p, shared }) {
    const [A, B] = [shared[A_NAME], shared[B_NAME]];
    const dMin = A.length / c.r; // randlora_A is [r, 1, D_min], randlora_B [D_max, n_max, r] with n_max = ⌈D_min/r⌉
    const { aHat, bHat, min, max, n } = scaledBases(layer, c, p, A, B, dMin, bases(dMin, c.r));
    const m = matmul(bHat, aHat, max, n * c.r, min).map((v) => v * scaling(c, n)); // [max, min]
    return fromMatrix(layer, min === layer.inFeatures ? m : transpose(m, max, min));
  },
};
