/**
 * Uni-LoRA — "Uni-LoRA: One Vector is All You Need" (Li, Han, Su, Li, Cai, Ji; NeurIPS 2025, arXiv:2506.00799); PEFT
 * peft_type UNILORA (tuners/unilora, new in PEFT 0.21; read in 0.21.2). Relative to LoRA, every entry of every
 * layer's A [r, in] and B [out, r] is one entry of a single trainable vector θ ∈ ℝ^d shared by the whole model, times
 * a fixed norm factor: with all LoRA entries of the model flattened to θ_D ∈ ℝ^D (D = Σ r·(in + out), layers in model
 * order, A then B each), θ_D = P·θ where P has one nonzero per row, 1/√c_j in the column j the entry was assigned to
 * (c_j: how many entries share θ_j). The assignment is balanced (each j is used ⌊D/d⌋ or ⌈D/d⌉ times) and shuffled,
 * so P's columns have disjoint supports and unit norm: PᵀP = I, an isometry. Per layer
 *   A = θ[idx_A] ⊙ s_A,  B = θ[idx_B] ⊙ s_B,  y = base(x) + (x̃·Aᵀ)·Bᵀ  (no α or r scaling),
 * a Gather from θ in the graph, whose gradient is a scatter-add back into θ. θ starts U(±init_theta_d_bound), so
 * ΔW ≠ 0 at init (small).
 * The assignment follows PEFT's generate_index bit for bit: np.random.default_rng(proj_seed), each index repeated
 * ⌊D/d⌋ times, D mod d more drawn without replacement, the whole shuffled (linalg/numpy-random.ts), because PEFT
 * saves only θ by default (save_indices false) and rebuilds the maps from proj_seed when it loads a folder. The
 * official code (KaiyangLi1992/Uni-LoRA@3387a6e, read) draws the same balanced assignment from numpy's global legacy
 * stream and always stores the maps (its `unilora_logits_*` buffers): the same method; its checkpoints are not PEFT's.
 * With save_indices the maps and norm factors are written (int64 / float32, PEFT's keys) and read back as written.
 * Not here: θ's plumbing as a trainable shared tensor (model.ts, binding.ts), the projections of the methods Uni-LoRA
 * unifies (test/peft/methods/unilora-unification.test.ts).
 */
import { z } from 'zod';
import { LorakitError } from '../../errors.ts';
import { matmul, NumpyGenerator } from '../../linalg/index.ts';
import { fromMatrix } from '../layers.ts';
import type { AdapterMethod, FileLayout, LayerInfo, ParamSpec } from '../method.ts';

export const uniloraFields = {
  /** Rank of every layer's A and B. */
  r: z.number().int().positive().default(4),
  /** Seed of numpy's generator for the index assignment (PEFT rebuilds the maps from it). */
  proj_seed: z.number().int().nonnegative().default(42),
  /** d: length of the one trainable vector θ (the adapter's whole trainable parameter count). */
  theta_d_length: z
    .number()
    .int()
    .positive()
    .max(2 ** 24)
    .default(256),
  /** Dropout on the adapter input, during training. */
  unilora_dropout: z.number().min(0).max(1).default(0),
  /** True for GPT-2's Conv1D, whose weight is stored [in, out] (lorakit reads the layer kind; kept for PEFT). */
  fan_in_fan_out: z.boolean().default(false),
  /** Which base biases train (only "none": lorakit does not train Uni-LoRA biases). */
  bias: z.enum(['none', 'all', 'unilora_only']).default('none'),
  /** θ starts U(−bound, bound) (not 0: every entry of A and B would have no gradient). */
  init_theta_d_bound: z.number().positive().default(0.02),
  /** true: θ ~ U(±init_theta_d_bound); false: θ ~ N(0, 1) (PEFT's test init). */
  init_weights: z.boolean().default(true),
  /** Write the index maps and norm factors into adapter files (false: readers rebuild them from proj_seed). */
  save_indices: z.boolean().default(false),
};

/** A UniLoraConfig with defaults filled (targeting fields included). */
export type UniloraConfig = { [K in keyof typeof uniloraFields]: z.output<(typeof uniloraFields)[K]> } & {
  target_modules: string | string[] | null;
  [k: string]: unknown;
};

const THETA = 'unilora_theta_d',
  IA = 'unilora_indices_A',
  IB = 'unilora_indices_B',
  SA = 'unilora_scales_A',
  SB = 'unilora_scales_B';

/**
 * PEFT's UniLoraModel.generate_index(D, d, seed): every index of [0, d) ⌊D/d⌋ times in order, then D mod d distinct
 * ones drawn without replacement, the whole shuffled, all with np.random.default_rng(seed).
 */
export function generateIndex(D: number, d: number, seed: number): Int32Array {
  const rng = new NumpyGenerator(seed);
  const base = Math.floor(D / d);
  const data = new Int32Array(D);
  for (let j = 0; j < d * base; j++) data[j] = Math.floor(j / base);
  if (D % d > 0) data.set(rng.choiceWithoutReplacement(d, D % d), d * base);
  rng.shuffle(data);
  return data;
}

/** The A and B sizes of a layer: r·in then out·r entries of θ_D. */
const sizes = (layer: LayerInfo, c: UniloraConfig) => [c.r * layer.inFeatures, layer.outFeatures * c.r];

/** A [r, in] = θ[idx_A] ⊙ s_A and B [out, r] = θ[idx_B] ⊙ s_B from host values. */
export function uniloraFactors(p: Record<string, Float32Array>, theta: Float32Array) {
  const pick = (idx: Float32Array, s: Float32Array) => Float32Array.from(idx, (j, i) => theta[j] * s[i]);
  return { A: pick(p[IA], p[SA]), B: pick(p[IB], p[SB]) };
}

/** PEFT's keys with save_indices: the maps as int64, the norm factors as float32. */
function indexLayout(layer: LayerInfo, c: UniloraConfig): FileLayout<UniloraConfig, unknown> {
  const shapes = { [IA]: [c.r, layer.inFeatures], [IB]: [layer.outFeatures, c.r] };
  return {
    tensors: [
      { name: IA, shape: shapes[IA], dtype: 'I64' },
      { name: IB, shape: shapes[IB], dtype: 'I64' },
      { name: SA, shape: shapes[IA], dtype: 'F32' },
      { name: SB, shape: shapes[IB], dtype: 'F32' },
    ],
    encode: ({ p }) => ({
      [IA]: BigInt64Array.from(p[IA], (v) => BigInt(v)),
      [IB]: BigInt64Array.from(p[IB], (v) => BigInt(v)),
      [SA]: p[SA],
      [SB]: p[SB],
    }),
    decode(file) {
      for (const n of [IA, IB]) {
        const bad = file[n].findIndex((j) => !Number.isInteger(j) || j < 0 || j >= c.theta_d_length);
        if (bad >= 0) {
          throw new LorakitError(
            'LK_FILE_INVALID',
            `${layer.path}.${n} holds ${file[n][bad]} at ${bad}, not an index of θ's ${c.theta_d_length} entries ` +
              '(theta_d_length in adapter_config.json)',
          );
        }
      }
      return Object.fromEntries([IA, IB, SA, SB].map((n) => [n, Float32Array.from(file[n])]));
    },
  };
}

export const unilora: AdapterMethod<UniloraConfig> = {
  name: 'unilora',
  peftType: 'UNILORA',
  paper: 'Uni-LoRA: One Vector is All You Need (arXiv:2506.00799)',
  layers: ['linear', 'conv1d'],
  fields: uniloraFields,
  // PEFT's UniLoraConfig has no exclude_modules: PEFT would adapt the excluded layers anyway
  peftLacks: ['exclude_modules'],

  check(c, source) {
    if (c.bias !== 'none') {
      throw new LorakitError(
        'LK_UNSUPPORTED',
        `${source}: bias = "${c.bias}" is not supported for Uni-LoRA: lorakit trains no biases with it; use bias ` +
          '"none", or list the modules whose weights should train in modules_to_save',
        { field: 'bias' },
      );
    }
  },

  // the maps are never saved as F32 ParamSpecs: without save_indices they are rebuilt, with it fileLayout writes them
  params(layer, _s, c): ParamSpec[] {
    const [a, b] = [
      [c.r, layer.inFeatures],
      [layer.outFeatures, c.r],
    ];
    return [
      { name: IA, shape: a, trainable: false, role: 'projection', saved: false },
      { name: IB, shape: b, trainable: false, role: 'projection', saved: false },
      { name: SA, shape: a, trainable: false, role: 'projection', saved: false },
      { name: SB, shape: b, trainable: false, role: 'projection', saved: false },
    ];
  },

  shared: (c): ParamSpec[] => [{ name: THETA, shape: [c.theta_d_length], trainable: true, role: 'vector' }],

  // PEFT's _init_unilora_theta_d draws from torch's global stream; lorakit's values are its own (θ is always saved)
  async initShared({ config: c, rng }) {
    const d = c.theta_d_length;
    const b = c.init_theta_d_bound;
    return { [THETA]: c.init_weights ? rng.uniformArray(d, -b, b) : rng.normalArray(d) };
  },

  // PEFT's _assign_unilora_indices_and_scales: one assignment over all layers in model order, A then B per layer,
  // and the norm factor 1/√c_j of the θ entry each position uses, as torch's float32 rsqrt gives it: the square root
  // rounded to float32, then its reciprocal (1/√17 lands one float32 above the correctly rounded value)
  async jointInit({ config: c, layers }) {
    const D = layers.reduce((n, l) => n + sizes(l, c)[0] + sizes(l, c)[1], 0);
    const index = generateIndex(D, c.theta_d_length, c.proj_seed);
    const counts = new Float64Array(c.theta_d_length);
    for (const j of index) counts[j]++;
    const norm = Float32Array.from(counts, (n) => (n > 0 ? 1 / Math.fround(Math.sqrt(n)) : 0));
    const out = new Map<string, Record<string, Float32Array>>();
    let at = 0;
    for (const l of layers) {
      const [na, nb] = sizes(l, c);
      const ia = Float32Array.from(index.subarray(at, at + na));
      const ib = Float32Array.from(index.subarray(at + na, at + na + nb));
      at += na + nb;
      out.set(l.path, { [IA]: ia, [IB]: ib, [SA]: ia.map((j) => norm[j]), [SB]: ib.map((j) => norm[j]) });
    }
    return out;
  },

  async init({ layer, joint }) {
    if (!joint) throw new Error(`internal: unilora initialised ${layer.path} without its joint index assignment`);
    return { values: { ...joint } };
  },

  forward(ctx) {
    const { config: c, p, shared } = ctx;
    const theta = shared[THETA]; // [d]
    const A = theta.gather(p[IA].cast('i64')).mul(p[SA]); // [r, in]: θ[idx_A] ⊙ s_A
    const B = theta.gather(p[IB].cast('i64')).mul(p[SB]); // [out, r]
    const h = ctx.dropout(ctx.x, c.unilora_dropout).matmul(A.T); // [.., in]·[in, r]
    return ctx.y.add(h.matmul(B.T)); // [.., r]·[r, out]
  },

  // the paper's count: θ alone, d for the whole model
  trainableCount: (c) => c.theta_d_length,

  fileLayout: (layer, _s, c) => (c.save_indices ? indexLayout(layer, c) : null),

  // ΔW = B·A; stored layout: GPT-2's Conv1D gets ΔWᵀ
  delta({ layer, config: c, p, shared }) {
    const { A, B } = uniloraFactors(p, shared[THETA]);
    return fromMatrix(layer, matmul(B, A, layer.outFeatures, c.r, layer.inFeatures));
  },
};
