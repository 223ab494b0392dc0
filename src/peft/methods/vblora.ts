/**
 * VB-LoRA — "VB-LoRA: Extreme Parameter Efficient Fine-Tuning with Vector Banks" (Li, Han, Ji; NeurIPS 2024,
 * arXiv:2405.15179); PEFT peft_type VBLORA (tuners/vblora, read in 0.18.1 and 0.21.2: refactored, same computation and
 * keys). Relative to LoRA, every adapted layer composes its A and B from one model-level bank V [h, b] of h trainable
 * vectors of length b: A [r, in] is cut into r·in/b sub-vectors and B [out, r] into out/b·r, and each sub-vector is the
 * mixture
 *   Σ_{j ∈ top-k(ℓ)} softmax(ℓ_top-k)_j · V[j]
 * of the k bank vectors its own trainable logits ℓ ∈ ℝ^h rank highest. Per layer the logits are
 * vblora_logits_A [r, in/b, h] and vblora_logits_B [out/b, r, h]; A = mix(ℓ_A).reshape(r, in), and B = mix(ℓ_B)
 * [out/b, r, b] transposed to [out/b, b, r] and reshaped to [out, r] (PEFT's layout). ΔW = B·A, no scaling;
 * y = base(x) + (x̃·Aᵀ)·Bᵀ. Init as PEFT: V ~ U(±init_vector_bank_bound), logits ~ N(0, init_logits_std²) (ΔW ≠ 0).
 * Top-k and softmax run in the graph (TopK's gradient reaches only the picked logits; the bank's through Gather).
 * save_only_topk_weights (PEFT's inference-only file form) writes each logits tensor as its top-k indices (uint8 /
 * int16 / int32 / int64 by h, as PEFT picks) and the first k − 1 softmax weights; reading one back, the logits are
 * log(weights) at the kept indices and the float32 minimum elsewhere (PEFT puts −inf there and refuses to train such
 * an adapter; the finite minimum keeps files finite, gives the same outputs, and leaves the other logits without
 * gradient, so training moves only the kept ones).
 * Not here: the bank's plumbing as a trainable shared tensor (model.ts, binding.ts), files (format.ts).
 */
import { z } from 'zod';
import { LorakitError } from '../../errors.ts';
import type { Tensor } from '../../graph/index.ts';
import { matmul } from '../../linalg/index.ts';
import { fromMatrix } from '../layers.ts';
import type { AdapterMethod, FileData, FileDType, FileLayout, LayerInfo, ParamSpec } from '../method.ts';

export const vbloraFields = {
  /** Rank of A and B. */
  r: z.number().int().positive().default(4),
  /** h: vectors in the bank. */
  num_vectors: z.number().int().positive().default(256),
  /** b: length of each bank vector; every adapted layer's in and out features must be multiples of it. */
  vector_length: z.number().int().positive().default(256),
  /** k: bank vectors mixed into each sub-vector. */
  topk: z.number().int().positive().default(2),
  /** Write only each logits row's top-k indices and weights (PEFT's inference-only form). */
  save_only_topk_weights: z.boolean().default(false),
  /** Dropout on the adapter input, during training. */
  vblora_dropout: z.number().min(0).max(1).default(0),
  /** True for GPT-2's Conv1D, whose weight is stored [in, out] (lorakit reads the layer kind; kept for PEFT). */
  fan_in_fan_out: z.boolean().default(false),
  /** Which base biases train (only "none": lorakit does not train VB-LoRA biases). */
  bias: z.enum(['none', 'all', 'vblora_only']).default('none'),
  /** The bank starts U(−bound, bound). */
  init_vector_bank_bound: z.number().nonnegative().default(0.02),
  /** The logits start N(0, std²). */
  init_logits_std: z.number().nonnegative().default(0.1),
};

/** A VBLoRAConfig with defaults filled (targeting fields included). */
export type VbloraConfig = { [K in keyof typeof vbloraFields]: z.output<(typeof vbloraFields)[K]> } & {
  target_modules: string | string[] | null;
  [k: string]: unknown;
};

const BANK = 'vblora_vector_bank',
  LA = 'vblora_logits_A',
  LB = 'vblora_logits_B';

/** [r, in/b, h] and [out/b, r, h]: the two logits tensors of a layer. */
const logitShapes = (layer: LayerInfo, c: VbloraConfig): Record<string, number[]> => {
  const [r, b, h] = [c.r, c.vector_length, c.num_vectors];
  return { [LA]: [r, layer.inFeatures / b, h], [LB]: [layer.outFeatures / b, r, h] };
};

/** The dtype PEFT writes top-k indices in: the smallest that holds h (its thresholds). */
function indexDtype(h: number): FileDType {
  if (h < 2 ** 8) return 'U8';
  if (h < 2 ** 15) return 'I16';
  return h < 2 ** 31 ? 'I32' : 'I64';
}

/** `values` in the typed array of an integer file dtype. */
function intArray(dtype: FileDType, values: Int32Array): FileData {
  switch (dtype) {
    case 'U8':
      return Uint8Array.from(values);
    case 'I16':
      return Int16Array.from(values);
    case 'I32':
      return values;
    default:
      return BigInt64Array.from(values, (v) => BigInt(v));
  }
}

/** The k largest entries of each row of `rows` [n, h], ties to the lower index (ONNX TopK's order). */
function topkRows(rows: ArrayLike<number>, h: number, k: number): { idx: Int32Array; val: Float64Array } {
  const n = rows.length / h;
  const idx = new Int32Array(n * k);
  const val = new Float64Array(n * k);
  const order = Array.from({ length: h }, (_, j) => j);
  for (let i = 0; i < n; i++) {
    const row = (j: number) => rows[i * h + j];
    order.sort((p, q) => row(q) - row(p) || p - q);
    for (let j = 0; j < k; j++) [idx[i * k + j], val[i * k + j]] = [order[j], row(order[j])];
  }
  return { idx, val };
}

/** softmax over each group of k values, in float64. */
function softmaxRows(val: Float64Array, k: number): Float64Array {
  const out = new Float64Array(val.length);
  for (let i = 0; i < val.length; i += k) {
    let z = 0;
    for (let j = 0; j < k; j++) z += Math.exp(val[i + j] - val[i]); // val[i] is the row's largest
    for (let j = 0; j < k; j++) out[i + j] = Math.exp(val[i + j] - val[i]) / z;
  }
  return out;
}

/** Σ_top-k softmax·V[idx] for every logits row [n, h] → [n, b] (float64 sums, float32 result). */
function mixRows(logits: Float32Array, bank: Float32Array, c: VbloraConfig): Float32Array {
  const [h, b, k] = [c.num_vectors, c.vector_length, c.topk];
  const { idx, val } = topkRows(logits, h, k);
  const w = softmaxRows(val, k);
  const out = new Float32Array((logits.length / h) * b);
  for (let i = 0; i < logits.length / h; i++)
    for (let t = 0; t < b; t++) {
      let s = 0;
      for (let j = 0; j < k; j++) s += w[i * k + j] * bank[idx[i * k + j] * b + t];
      out[i * b + t] = s;
    }
  return out;
}

/** A [r, in] and B [out, r] of a layer from host values, as the graph builds them. */
export function vbloraFactors(layer: LayerInfo, c: VbloraConfig, p: Record<string, Float32Array>, bank: Float32Array) {
  const [r, b] = [c.r, c.vector_length];
  const A = mixRows(p[LA], bank, c); // [r, in/b, b] = [r, in]
  const mb = mixRows(p[LB], bank, c); // [out/b, r, b]
  const B = new Float32Array(layer.outFeatures * r); // [out/b, b, r] = [out, r]
  for (let q = 0; q < layer.outFeatures / b; q++)
    for (let m = 0; m < r; m++) for (let t = 0; t < b; t++) B[(q * b + t) * r + m] = mb[(q * r + m) * b + t];
  return { A, B };
}

/** PEFT's save_only_topk_weights form of the logits: per tensor, `<name>_topk_indices` and `<name>_topk_weights`. */
function topkLayout(layer: LayerInfo, c: VbloraConfig): FileLayout<VbloraConfig, unknown> {
  const shapes = logitShapes(layer, c);
  const [h, k] = [c.num_vectors, c.topk];
  const dtype = indexDtype(h);
  const lead = (n: string) => shapes[n].slice(0, 2);
  return {
    tensors: [LA, LB].flatMap((n) => [
      { name: `${n}_topk_indices`, shape: [...lead(n), k], dtype },
      { name: `${n}_topk_weights`, shape: [...lead(n), k - 1], dtype: 'F32' as const },
    ]),
    encode({ p }) {
      const out: Record<string, FileData> = {};
      for (const n of [LA, LB]) {
        const { idx, val } = topkRows(p[n], h, k);
        const w = softmaxRows(val, k);
        out[`${n}_topk_indices`] = intArray(dtype, idx);
        out[`${n}_topk_weights`] = Float32Array.from(w.filter((_, i) => i % k !== k - 1)); // the last is 1 − Σ
      }
      return out;
    },
    // PEFT's _remap_adapter_state_dict_for_load: the last weight is 1 − Σ (float32), the logits log(weights)
    decode(file) {
      const out: Record<string, Float32Array> = {};
      for (const n of [LA, LB]) {
        const [idx, w] = [file[`${n}_topk_indices`], file[`${n}_topk_weights`]];
        const rows = idx.length / k;
        const logits = new Float32Array(rows * h).fill(-3.4028234663852886e38); // float32's lowest: never picked
        for (let i = 0; i < rows; i++) {
          let sum = 0;
          for (let j = 0; j < k - 1; j++) sum = Math.fround(sum + w[i * (k - 1) + j]);
          for (let j = 0; j < k; j++) {
            const wj = j < k - 1 ? w[i * (k - 1) + j] : Math.fround(1 - sum);
            logits[i * h + idx[i * k + j]] = Math.max(Math.log(wj), -3.4028234663852886e38);
          }
        }
        out[n] = logits;
      }
      return out;
    },
  };
}

export const vblora: AdapterMethod<VbloraConfig> = {
  name: 'vblora',
  peftType: 'VBLORA',
  paper: 'VB-LoRA: Extreme Parameter Efficient Fine-Tuning with Vector Banks (arXiv:2405.15179)',
  layers: ['linear', 'conv1d'],
  fields: vbloraFields,

  check(c, source) {
    if (c.bias !== 'none') {
      throw new LorakitError(
        'LK_UNSUPPORTED',
        `${source}: bias = "${c.bias}" is not supported for VB-LoRA: lorakit trains no biases with it; use bias ` +
          '"none", or list the modules whose weights should train in modules_to_save',
        { field: 'bias' },
      );
    }
    if (c.topk > c.num_vectors) {
      throw new LorakitError(
        'LK_CONFIG_INVALID',
        `${source}: topk = ${c.topk} exceeds num_vectors = ${c.num_vectors}; each sub-vector mixes k of the h bank ` +
          'vectors',
        { field: 'topk' },
      );
    }
  },

  checkLayer(layer, _s, c, source) {
    const b = c.vector_length;
    if (layer.inFeatures % b === 0 && layer.outFeatures % b === 0) return;
    throw new LorakitError(
      'LK_CONFIG_INVALID',
      `${source}: ${layer.path} has in ${layer.inFeatures} and out ${layer.outFeatures} features; VB-LoRA cuts A and ` +
        `B into bank vectors of vector_length = ${b}, which must divide both (as in PEFT); pick a vector_length ` +
        'dividing every targeted layer, or exclude the layer',
      { layer: layer.path },
    );
  },

  params(layer, _s, c): ParamSpec[] {
    const s = logitShapes(layer, c);
    return [
      { name: LA, shape: s[LA], trainable: true, role: 'a' },
      { name: LB, shape: s[LB], trainable: true, role: 'b' },
    ];
  },

  shared: (c): ParamSpec[] => [{ name: BANK, shape: [c.num_vectors, c.vector_length], trainable: true, role: 'other' }],

  async initShared({ config: c, rng }) {
    const b = c.init_vector_bank_bound;
    return { [BANK]: rng.uniformArray(c.num_vectors * c.vector_length, -b, b) };
  },

  async init({ layer, config: c, rng }) {
    const s = logitShapes(layer, c);
    const n = (shape: number[]) => shape.reduce((x, y) => x * y, 1);
    const std = c.init_logits_std;
    return { values: { [LA]: rng.normalArray(n(s[LA]), std), [LB]: rng.normalArray(n(s[LB]), std) } };
  },

  forward(ctx) {
    const { layer, config: c, p, shared } = ctx;
    const bank = shared[BANK]; // [h, b]
    // Σ_{top-k} softmax(top-k logits)·V[idx]: [.., h] → [.., b] (TopK in f32 or f64)
    const mix = (logits: Tensor): Tensor => {
      const [vals, idx] = logits.cast(logits.dtype === 'f64' ? 'f64' : 'f32').topk(c.topk); // [.., k]
      const w = vals.softmax(-1).cast(bank.dtype).unsqueeze(-1); // [.., k, 1]
      return bank.gather(idx).mul(w).sum(-2); // [.., k, b] → [.., b]
    };
    const A = mix(p[LA]).reshape([c.r, layer.inFeatures]); // [r, in/b, b] → [r, in]
    const B = mix(p[LB]).transpose([0, 2, 1]).reshape([layer.outFeatures, c.r]); // [out/b, r, b] → [out, r]
    const h = ctx.dropout(ctx.x, c.vblora_dropout).matmul(A.T); // [.., in]·[in, r]
    return ctx.y.add(h.matmul(B.T)); // [.., r]·[r, out]
  },

  // the bank once, and h logits per sub-vector of A and B (the paper's count of trained parameters)
  trainableCount(c, layers) {
    const [r, b, h] = [c.r, c.vector_length, c.num_vectors];
    return layers.reduce((n, { layer }) => n + h * r * (layer.inFeatures / b + layer.outFeatures / b), h * b);
  },

  fileLayout: (layer, _s, c) => (c.save_only_topk_weights ? topkLayout(layer, c) : null),

  // ΔW = B·A; stored layout: GPT-2's Conv1D gets ΔWᵀ
  delta({ layer, config: c, p, shared }) {
    const { A, B } = vbloraFactors(layer, c, p, shared[BANK]);
    return fromMatrix(layer, matmul(B, A, layer.outFeatures, c.r, layer.inFeatures));
  },
};
