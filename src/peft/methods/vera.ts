/**
 * VeRA — "VeRA: Vector-based Random Matrix Adaptation" (Kopiczko et al., ICLR 2024, arXiv:2310.11454); PEFT
 * peft_type VERA. Relative to LoRA, A and B are frozen random matrices shared by every adapted layer, and each layer
 * trains only two vectors: ΔW = diag(λ_b)·B·diag(λ_d)·A (the paper's Λ_b·B·Λ_d·A; no α/r scaling).
 * The shared A [r, in_max] and B [out_max, r] are sized by the largest in/out features over the targeted layers and
 * sliced per layer to A[:, :in] and B[:out, :], as PEFT's VeraModel._find_dim and VeraLayer do. Forward
 * y = base(x) + λ_b ⊙ ((λ_d ⊙ (x̃·Aᵀ))·Bᵀ) with x̃ = dropout(x).
 * PEFT draws A and B with a torch.Generator seeded with projection_prng_key (Kaiming-uniform, gain √2), and every
 * released PEFT (0.18.1 checked; 0.19, 0.20 read) regenerates them that way when it loads an adapter, leaving the
 * saved `base_model.vera_A` / `base_model.vera_B` unused (their keys lack the adapter name its state dict expects). So lorakit draws them from
 * torch's CPU stream bit for bit (linalg/torch-random.ts): an adapter lorakit writes computes the same function in
 * PEFT, and a folder saved with save_projection=False loads in lorakit. Saved projections are read as saved.
 * Not here: reading and writing adapter folders, the merge loop (peft/); LoRA (lora.ts).
 */
import { z } from 'zod';
import { LorakitError } from '../../errors.ts';
import { matmul, TorchGenerator } from '../../linalg/index.ts';
import { fromMatrix } from '../layers.ts';
import type { AdapterMethod, LayerInfo, ParamSpec } from '../method.ts';

export const veraFields = {
  /** Rank of the shared projections (PEFT's default is high because VeRA trains only r + out values per layer). */
  r: z.number().int().positive().default(256),
  /** Seed of torch's generator for the shared projections: equal keys on equal layers give equal A and B. */
  projection_prng_key: z.number().int().default(0),
  /** Whether vera_A and vera_B are written to the adapter file (false: every reader regenerates them from the key). */
  save_projection: z.boolean().default(true),
  /** Dropout on the adapter input, during training. */
  vera_dropout: z.number().min(0).max(1).default(0),
  /** Initial value of every λ_d entry (paper Table 6c: small values such as 0.1 work best). */
  d_initial: z.number().default(0.1),
  /** True for GPT-2's Conv1D, whose weight is stored [in, out] (lorakit reads the layer kind; kept for PEFT). */
  fan_in_fan_out: z.boolean().default(false),
  /** Which base biases train (only "none" is supported: PEFT does not save VeRA's biases). */
  bias: z.enum(['none', 'all', 'vera_only']).default('none'),
  /** true: λ_b = 0, λ_d = d_initial (ΔW = 0); false: PEFT's test init λ_b = 1, λ_d ~ N(0, 1). */
  init_weights: z.boolean().default(true),
};

/** A VeraConfig with defaults filled (targeting fields included). */
export type VeraConfig = { [K in keyof typeof veraFields]: z.output<(typeof veraFields)[K]> } & {
  target_modules: string | string[] | null;
  layers_to_transform: number | number[] | null;
  layers_pattern: string | string[] | null;
  [k: string]: unknown;
};

/** The largest in and out features over the layers: the shared projections' sizes (PEFT's `_find_dim`). */
function largest(layers: readonly LayerInfo[]): { inMax: number; outMax: number } {
  return {
    inMax: Math.max(...layers.map((l) => l.inFeatures)),
    outMax: Math.max(...layers.map((l) => l.outFeatures)),
  };
}

/** ΔW = diag(λ_b)·B[:out]·diag(λ_d)·A[:, :in] as [out, in], from host values (float64 sums in matmul). */
function veraDelta(layer: LayerInfo, r: number, p: Record<string, Float32Array>, shared: Record<string, Float32Array>) {
  const [o, i] = [layer.outFeatures, layer.inFeatures];
  const inMax = shared.vera_A.length / r;
  const lb = p.vera_lambda_b,
    ld = p.vera_lambda_d;
  const bd = new Float32Array(o * r); // diag(λ_b)·B[:out]·diag(λ_d), [out, r]: B's first `out` rows
  for (let j = 0; j < o; j++) for (let m = 0; m < r; m++) bd[j * r + m] = lb[j] * shared.vera_B[j * r + m] * ld[m];
  const a = new Float32Array(r * i); // A[:, :in], [r, in]
  for (let m = 0; m < r; m++) a.set(shared.vera_A.subarray(m * inMax, m * inMax + i), m * i);
  return matmul(bd, a, o, r, i);
}

export const vera: AdapterMethod<VeraConfig> = {
  name: 'vera',
  peftType: 'VERA',
  paper: 'VeRA: Vector-based Random Matrix Adaptation (arXiv:2310.11454)',
  layers: ['linear', 'conv1d'],
  fields: veraFields,
  // PEFT's VeraConfig has no exclude_modules: PEFT would adapt the excluded layers anyway
  peftLacks: ['exclude_modules'],

  check(c, source) {
    if (c.bias !== 'none') {
      throw new LorakitError(
        'LK_UNSUPPORTED',
        `${source}: bias = "${c.bias}" is not supported for VeRA: PEFT trains those biases but does not save them ` +
          'in VeRA adapter folders (it keeps only vera_lambda_* and the projections), so such an adapter cannot ' +
          'be exchanged with PEFT; use bias "none", or list the modules whose weights should train in modules_to_save',
        { field: 'bias' },
      );
    }
    if (c.layers_pattern !== null && c.layers_to_transform === null) {
      throw new LorakitError(
        'LK_CONFIG_INVALID',
        `${source}: layers_pattern is set but layers_to_transform is not (PEFT refuses this too); set both or neither`,
        { field: 'layers_pattern' },
      );
    }
  },

  params(layer, _s, c): ParamSpec[] {
    return [
      { name: 'vera_lambda_b', shape: [layer.outFeatures], trainable: true, role: 'vector' },
      { name: 'vera_lambda_d', shape: [c.r], trainable: true, role: 'vector' },
    ];
  },

  shared(c, layers): ParamSpec[] {
    const { inMax, outMax } = largest(layers);
    const saved = c.save_projection;
    return [
      { name: 'vera_A', shape: [c.r, inMax], trainable: false, role: 'projection', saved },
      { name: 'vera_B', shape: [outMax, c.r], trainable: false, role: 'projection', saved },
    ];
  },

  // PEFT's _init_vera_A_vera_B: one torch.Generator seeded with projection_prng_key (not the adapter seed), A drawn
  // before B, each U(±bound) with PEFT's _kaiming_init bound √3·(√2/√fan_in) in float64, fan_in = in_max for A, r for B
  async initShared({ config: c, layers }) {
    const { inMax, outMax } = largest(layers);
    const g = new TorchGenerator(c.projection_prng_key);
    const bound = (fanIn: number) => Math.sqrt(3) * (Math.SQRT2 / Math.sqrt(fanIn));
    const vera_A = g.uniformFloat32(c.r * inMax, -bound(inMax), bound(inMax));
    const vera_B = g.uniformFloat32(outMax * c.r, -bound(c.r), bound(c.r));
    return { vera_A, vera_B };
  },

  async init({ layer, config: c, rng }) {
    if (!c.init_weights) {
      // PEFT's update_layer without reset_vera_parameters: torch.ones(out) and torch.randn(r)
      return {
        values: { vera_lambda_b: new Float32Array(layer.outFeatures).fill(1), vera_lambda_d: rng.normalArray(c.r) },
      };
    }
    return {
      values: {
        vera_lambda_b: new Float32Array(layer.outFeatures), // λ_b = 0: ΔW = 0 at init
        vera_lambda_d: new Float32Array(c.r).fill(c.d_initial),
      },
    };
  },

  forward(ctx) {
    const { layer, config: c, p, shared } = ctx;
    const A = shared.vera_A.slice([0], [layer.inFeatures], [1]); // [r, in] of [r, in_max]
    const B = shared.vera_B.slice([0], [layer.outFeatures], [0]); // [out, r] of [out_max, r]
    const h = ctx.dropout(ctx.x, c.vera_dropout).matmul(A.T).mul(p.vera_lambda_d); // [.., in]·[in, r] ⊙ [r]
    return ctx.y.add(h.matmul(B.T).mul(p.vera_lambda_b)); // [.., r]·[r, out] ⊙ [out]
  },

  trainableCount: (c, layers) => layers.reduce((n, { layer }) => n + layer.outFeatures + c.r, 0),

  // stored layout: GPT-2's Conv1D gets ΔWᵀ (PEFT's transpose(..., fan_in_fan_out))
  delta: ({ layer, config: c, p, shared }) => fromMatrix(layer, veraDelta(layer, c.r, p, shared)),
};
