/**
 * Tied-LoRA — "Tied-LoRA: Enhancing parameter efficiency of LoRA with Weight Tying" (Renduchintala, Konuk, Kuchaiev;
 * NAACL 2024, arXiv:2311.09578); not in PEFT (saved as peft_type "TIED_LORA"). Relative to LoRA, one pair A, B is
 * shared by every adapted layer (weight tying) and each layer scales it with two vectors of its own:
 *   ΔW_l = s·diag(v_l)·B·diag(u_l)·A,   u_l ∈ ℝ^r, v_l ∈ ℝ^out, s = α/r,
 * y = base(x) + s·v_l ⊙ (B·(u_l ⊙ A·x̃)). Which of A, B, u, v train is a setting, the paper's "selective training"
 * (its TL configurations); A and B tied and all four trained is the paper's best configuration and the default here.
 * With A and B frozen random and only u, v trained it is VeRA's parametrisation (without VeRA's PEFT layout).
 * No official code exists (NeMo's weight-tied LoRA adds per-layer position embeddings instead): the form is the
 * paper's as the Uni-LoRA paper and the spec restate it. Two choices are lorakit's, both documented:
 *  - layers of different sizes share one A [r, in_max] and one B [out_max, r] (the largest sizes over the targeted
 *    layers), each layer using A[:, :in] and B[:out, :], as VeRA slices its shared pair; the paper tied one
 *    projection (the fused QKV) across depth, where every layer has the same shape and nothing is sliced;
 *  - ΔW = 0 at init through one zero factor that trains: B = 0 when B trains (A Kaiming-uniform, u = v = 1, as LoRA),
 *    else v = 0 (B Kaiming-uniform over r), else u = 0, else A = 0; frozen factors stay at their random draw.
 * Saved as `base_model.tied_lora_A` / `base_model.tied_lora_B` and per layer `tied_lora_u` / `tied_lora_v`, every
 * tensor whether trained or not (the frozen ones are lorakit's own random draws).
 * Not here: the shared-tensor plumbing (model.ts, binding.ts), saving (format.ts), VeRA (vera.ts).
 */
import { z } from 'zod';
import { LorakitError } from '../../errors.ts';
import { kaimingUniformBound, matmul } from '../../linalg/index.ts';
import { fromMatrix } from '../layers.ts';
import type { AdapterMethod, LayerInfo, ParamSpec } from '../method.ts';

/** The four factors "selective training" chooses from. */
const FACTORS = ['A', 'B', 'u', 'v'] as const;
type Factor = (typeof FACTORS)[number];

export const tiedLoraFields = {
  /** Rank of the tied pair. */
  r: z.number().int().positive().default(8),
  /** Scaling numerator: s = lora_alpha / r. */
  lora_alpha: z.number().positive().default(8),
  /** Dropout on the adapter input, during training. */
  lora_dropout: z.number().min(0).max(1).default(0),
  /** Which factors train (the rest stay frozen at their init); the paper's best, TL6, trains all four. */
  trainable: z
    .array(z.enum(FACTORS))
    .min(1)
    .default([...FACTORS]),
};

/** A Tied-LoRA config with defaults filled (targeting fields included). */
export type TiedLoraConfig = { [K in keyof typeof tiedLoraFields]: z.output<(typeof tiedLoraFields)[K]> } & {
  target_modules: string | string[] | null;
  [k: string]: unknown;
};

const A_NAME = 'tied_lora_A',
  B_NAME = 'tied_lora_B',
  U_NAME = 'tied_lora_u',
  V_NAME = 'tied_lora_v';

const trains = (c: TiedLoraConfig, f: Factor) => c.trainable.includes(f);
const scaling = (c: TiedLoraConfig) => c.lora_alpha / c.r;

/** The largest in and out features over the layers: the tied pair's sizes. */
function largest(layers: readonly LayerInfo[]): { inMax: number; outMax: number } {
  return {
    inMax: Math.max(...layers.map((l) => l.inFeatures)),
    outMax: Math.max(...layers.map((l) => l.outFeatures)),
  };
}

/** The factor initialised to zero so that ΔW = 0 while its gradient is not: the first that trains of B, v, u, A. */
function zeroFactor(c: TiedLoraConfig): Factor {
  return (['B', 'v', 'u', 'A'] as const).find((f) => trains(c, f))!;
}

/** ΔW = s·diag(v)·B[:out]·diag(u)·A[:, :in] as [out, in], from host values (float64 sums in matmul). */
function tiedDelta(
  layer: LayerInfo,
  c: TiedLoraConfig,
  p: Record<string, Float32Array>,
  A: Float32Array,
  B: Float32Array,
) {
  const [o, i, r] = [layer.outFeatures, layer.inFeatures, c.r];
  const inMax = A.length / r;
  const s = scaling(c);
  const bu = new Float32Array(o * r); // s·diag(v)·B[:out]·diag(u), [out, r]
  for (let j = 0; j < o; j++)
    for (let m = 0; m < r; m++) bu[j * r + m] = s * p[V_NAME][j] * B[j * r + m] * p[U_NAME][m];
  const a = new Float32Array(r * i); // A[:, :in]
  for (let m = 0; m < r; m++) a.set(A.subarray(m * inMax, m * inMax + i), m * i);
  return matmul(bu, a, o, r, i);
}

export const tiedLora: AdapterMethod<TiedLoraConfig> = {
  name: 'tied_lora',
  peftType: null,
  paper: 'Tied-LoRA: Enhancing parameter efficiency of LoRA with Weight Tying (arXiv:2311.09578)',
  layers: ['linear', 'conv1d'],
  fields: tiedLoraFields,

  check(c, source) {
    if (new Set(c.trainable).size !== c.trainable.length) {
      throw new LorakitError(
        'LK_CONFIG_INVALID',
        `${source}: trainable ${JSON.stringify(c.trainable)} names a factor twice; list each of A, B, u, v once`,
        { field: 'trainable' },
      );
    }
  },

  params(layer, _s, c): ParamSpec[] {
    return [
      { name: U_NAME, shape: [c.r], trainable: trains(c, 'u'), role: 'vector' },
      { name: V_NAME, shape: [layer.outFeatures], trainable: trains(c, 'v'), role: 'vector' },
    ];
  },

  shared(c, layers): ParamSpec[] {
    const { inMax, outMax } = largest(layers);
    return [
      { name: A_NAME, shape: [c.r, inMax], trainable: trains(c, 'A'), role: trains(c, 'A') ? 'a' : 'projection' },
      { name: B_NAME, shape: [outMax, c.r], trainable: trains(c, 'B'), role: trains(c, 'B') ? 'b' : 'projection' },
    ];
  },

  // A Kaiming-uniform over in_max (LoRA's A), B Kaiming-uniform over r, unless it is the zero factor
  async initShared({ config: c, layers, rng }) {
    const { inMax, outMax } = largest(layers);
    const zero = zeroFactor(c);
    const draw = (n: number, fanIn: number, f: Factor) => {
      const b = kaimingUniformBound(fanIn);
      return zero === f ? new Float32Array(n) : rng.uniformArray(n, -b, b);
    };
    return { [A_NAME]: draw(c.r * inMax, inMax, 'A'), [B_NAME]: draw(outMax * c.r, c.r, 'B') };
  },

  async init({ layer, config: c }) {
    const zero = zeroFactor(c);
    return {
      values: {
        [U_NAME]: new Float32Array(c.r).fill(zero === 'u' ? 0 : 1),
        [V_NAME]: new Float32Array(layer.outFeatures).fill(zero === 'v' ? 0 : 1),
      },
    };
  },

  forward(ctx) {
    const { layer, config: c, p, shared } = ctx;
    const A = shared[A_NAME].slice([0], [layer.inFeatures], [1]); // [r, in] of [r, in_max]
    const B = shared[B_NAME].slice([0], [layer.outFeatures], [0]); // [out, r] of [out_max, r]
    const h = ctx.dropout(ctx.x, c.lora_dropout).matmul(A.T).mul(p[U_NAME]); // [.., in]·[in, r] ⊙ u [r]
    return ctx.y.add(h.matmul(B.T).mul(p[V_NAME]).mul(scaling(c))); // [.., r]·[r, out] ⊙ v [out] · s
  },

  // the paper's count: the tied pair once (when it trains) and r + out per layer (for the vectors that train)
  trainableCount(c, layers) {
    const { inMax, outMax } = largest(layers.map((l) => l.layer));
    const pair = (trains(c, 'A') ? c.r * inMax : 0) + (trains(c, 'B') ? outMax * c.r : 0);
    const perLayer = (l: LayerInfo) => (trains(c, 'u') ? c.r : 0) + (trains(c, 'v') ? l.outFeatures : 0);
    return layers.reduce((n, { layer }) => n + perLayer(layer), pair);
  },

  // stored layout: GPT-2's Conv1D gets ΔWᵀ
  delta: ({ layer, config: c, p, shared }) => fromMatrix(layer, tiedDelta(layer, c, p, shared[A_NAME], shared[B_NAME])),
};
