/**
 * PaCA — "PaCA: Partial Connection Adaptation for Efficient Fine-Tuning" (Woo et al., ICLR 2025, arXiv:2503.01905);
 * official code WooSunghyeon/paca, a PEFT fork with peft_type PACA (not in PEFT's releases). No adapter branch: r
 * randomly chosen input columns of W itself train (spec methods-a §13). Per layer:
 *   idx = the first r of a random permutation of the in features (`paca_indices`, frozen, int64 in files),
 *   P [out, r] (`paca_w`, trainable) = W0[:, idx] / s,  s = paca_alpha / r,
 *   adapted weight W' = W0 with its columns idx replaced by s·P,
 * so ΔW is zero except on those columns, and merging writes them (a replacement, which depends on W0: `merge`, no
 * `delta`). The forward adds only the changed columns' contribution to the frozen output,
 *   y = base(x) + x[.., idx]·(s·P − W0[:, idx])ᵀ,
 * whose backward needs x[.., idx] alone (r of the in features) and one [out, r] product for ∂P = s·gᵀ·x[.., idx] —
 * the paper's memory and speed argument; bench/paca.ts measures what it buys here. The official forward instead
 * writes s·P into W every other call (a counter over forward calls and gradient_accumulation_steps) and runs one
 * GEMM with a custom backward; lorakit computes the same adapted function in every forward, so it has no counter
 * (gradient_accumulation_steps is accepted and unused). At init s·P equals W0[:, idx] up to the rounding of the
 * division (exactly when s is a power of two). No dropout (the fork has none), no rsLoRA. Count r·out per layer.
 * Saved as the fork saves it: peft_type "PACA", `paca_w` [out, r] and `paca_indices` [r] (int64) per layer.
 * Linear and GPT-2 Conv1D; the fork's Conv1D path slices the stored [in, out] weight (output columns) and multiplies
 * by its transpose, so lorakit, which selects input columns of the [out, in] matrix, departs from it there.
 * Not here: the merge loop (model.ts), the files (format.ts).
 */
import { z } from 'zod';
import { LorakitError } from '../../errors.ts';
import type { Rng } from '../../linalg/index.ts';
import { patternValue } from '../config.ts';
import { fromMatrix, matrixDims, matrixOf, toMatrix } from '../layers.ts';
import type { AdapterMethod, FileLayout, LayerInfo, ParamSpec } from '../method.ts';

export const pacaFields = {
  /** Trained columns per layer. */
  r: z.number().int().positive().default(8),
  /** Scaling numerator: P is stored at 1/s, s = paca_alpha / r. */
  paca_alpha: z.number().positive().default(8),
  /** True for GPT-2's Conv1D (lorakit reads the layer kind; kept for the fork). */
  fan_in_fan_out: z.boolean().default(false),
  /** Which base biases train: none or all ("paca_only" is refused, as the fork's saving raises on it). */
  bias: z.enum(['none', 'all', 'paca_only']).default('none'),
  /** Per-module r overrides. */
  rank_pattern: z.record(z.string(), z.number().int().positive()).default({}),
  /** Per-module paca_alpha overrides. */
  alpha_pattern: z.record(z.string(), z.number().positive()).default({}),
  /** The fork's write-back counter setting; lorakit writes no weights during training (accepted, unused). */
  gradient_accumulation_steps: z.number().int().positive().default(1),
  megatron_config: z.null().default(null),
  megatron_core: z.string().default('megatron.core'),
  layer_replication: z.null().default(null),
};

/** A PacaConfig with defaults filled (targeting fields included). */
export type PacaConfig = { [K in keyof typeof pacaFields]: z.output<(typeof pacaFields)[K]> } & {
  target_modules: string | string[] | null;
  [k: string]: unknown;
};

/** Per-layer r, alpha and s = alpha / r. */
export interface PacaSettings {
  r: number;
  alpha: number;
  scaling: number;
}

/** The first r of a uniform random permutation of 0..n−1 (torch.randperm(n)[:r]'s distribution). */
function randomColumns(rng: Rng, n: number, r: number): Float32Array {
  const perm = Array.from({ length: n }, (_, i) => i);
  for (let i = 0; i < r; i++) {
    const j = i + Math.floor(rng.next() * (n - i)); // partial Fisher–Yates: positions 0..r−1 are settled
    [perm[i], perm[j]] = [perm[j], perm[i]];
  }
  return Float32Array.from(perm.slice(0, r));
}

/**
 * The fork's file layout: `paca_w` float32 and `paca_indices` int64. Loaded indices must be distinct input columns
 * of the layer (a gather with a bad index would fail inside ORT, far from the file).
 */
function indicesLayout(layer: LayerInfo, r: number): FileLayout<PacaConfig, PacaSettings> {
  const [o, i] = matrixDims(layer);
  return {
    tensors: [
      { name: 'paca_w', shape: [o, r], dtype: 'F32' },
      { name: 'paca_indices', shape: [r], dtype: 'I64' },
    ],
    encode: ({ p }) => ({
      paca_w: p.paca_w,
      paca_indices: BigInt64Array.from(p.paca_indices, (v) => BigInt(Math.round(v))),
    }),
    decode(file) {
      const idx = file.paca_indices;
      const seen = new Set<number>();
      for (const c of idx) {
        if (!Number.isInteger(c) || c < 0 || c >= i || seen.has(c)) {
          throw new LorakitError(
            'LK_FILE_INVALID',
            `paca_indices of ${layer.path}: ${c} is not a distinct input column in [0, ${i})`,
            { field: 'paca_indices', layer: layer.path },
          );
        }
        seen.add(c);
      }
      return { paca_w: Float32Array.from(file.paca_w), paca_indices: Float32Array.from(idx) };
    },
  };
}

export const paca: AdapterMethod<PacaConfig, PacaSettings> = {
  name: 'paca',
  peftType: null,
  paper: 'PaCA: Partial Connection Adaptation for Efficient Fine-Tuning (arXiv:2503.01905)',
  layers: ['linear', 'conv1d'],
  fields: pacaFields,
  // the fork's PacaConfig (an older PEFT) has no exclude_modules and would fail on the unknown key
  peftLacks: ['exclude_modules'],

  check(c, source) {
    if (c.bias === 'paca_only') {
      throw new LorakitError(
        'LK_UNSUPPORTED',
        `${source}: bias "paca_only" is not supported (the official code raises NotImplementedError when saving it); ` +
          'use "none" or "all"',
        { field: 'bias' },
      );
    }
  },

  settings(c, layer) {
    const r = patternValue(c.rank_pattern, layer.path) ?? c.r;
    const alpha = patternValue(c.alpha_pattern, layer.path) ?? c.paca_alpha;
    return { r, alpha, scaling: alpha / r };
  },

  checkLayer(layer, s, _c, source) {
    const [, i] = matrixDims(layer);
    if (s.r > i) {
      throw new LorakitError(
        'LK_CONFIG_INVALID',
        `${source}: PaCA trains r = ${s.r} input columns of ${layer.path}, which has ${i}; lower r or use rank_pattern`,
        { field: 'r', layer: layer.path },
      );
    }
  },

  params(layer, s): ParamSpec[] {
    return [
      { name: 'paca_w', shape: [layer.outFeatures, s.r], trainable: true, role: 'other' },
      { name: 'paca_indices', shape: [s.r], trainable: false, role: 'other' },
    ];
  },

  fileLayout: (layer, s) => indicesLayout(layer, s.r),

  // idx = randperm(in)[:r]; P = W0[:, idx] / s, so that s·P writes W0's own columns back
  async init({ layer, settings: s, rng, readBase }) {
    const [o, i] = matrixDims(layer);
    const idx = randomColumns(rng, i, s.r);
    const w = toMatrix(layer, await readBase()); // [out, in]
    const P = new Float32Array(o * s.r);
    for (let row = 0; row < o; row++) for (let k = 0; k < s.r; k++) P[row * s.r + k] = w[row * i + idx[k]] / s.scaling;
    return { values: { paca_w: P, paca_indices: idx } };
  },

  forward(ctx) {
    const { layer, settings: s, p, x } = ctx;
    const idx = p.paca_indices.cast('i64'); // [r]
    const xr = x.gather(idx, x.rank - 1); // [.., r]: the selected input features
    const w0 = matrixOf(layer, ctx.weight).gather(idx, 1); // [out, r]: the frozen columns being replaced
    return ctx.y.add(xr.matmul(p.paca_w.mul(s.scaling).sub(w0).T)); // [.., r] · [r, out]
  },

  trainableCount: (_c, layers) => layers.reduce((n, { layer, settings: s }) => n + s.r * layer.outFeatures, 0),

  // W'[:, idx] = s·P: columns replaced, not added to
  merge({ layer, settings: s, p }, w0) {
    const [o, i] = matrixDims(layer);
    const w = Float32Array.from(toMatrix(layer, w0)); // [out, in], a copy
    for (let k = 0; k < s.r; k++) {
      const col = p.paca_indices[k];
      for (let row = 0; row < o; row++) w[row * i + col] = s.scaling * p.paca_w[row * s.r + k];
    }
    return fromMatrix(layer, w);
  },
};
