/**
 * MiSS — "MiSS: Balancing LoRA Performance and Efficiency with Simple Shard Sharing" (Kang, arXiv:2409.15371, first
 * published as Bone, then DiSHA); PEFT peft_type MISS (peft/tuners/miss, 0.18.1 and 0.21.2 read; Bone, its
 * predecessor, is bone.ts and shares this file's math). Relative to LoRA: no factors and no scaling; one trainable
 * block per Linear, `miss_block`, shared by every shard of the weight (spec methods-a §3). Three modes, picked by
 * `init_weights`:
 *  - balance (true; false: the block drawn Kaiming-uniform, PEFT's test init): D [r, out], ΔW[o, i] = D[i mod r, o].
 *    Forward y = base(x) + u·D with u = Σ over the r-wide shards of x̃ = dropout(x), the last, partial shard of an
 *    in % r ≠ 0 layer adding only its width (PEFT zero-pads x to a multiple of r).
 *  - mini: D [r, mini_r], tiled out/mini_r times along out (torch's repeat(1, out/mini_r)), then as balance.
 *  - bat (Bone's "Block Affine Transformation"): T [out/r, r, r]; with W's r×r blocks W_{p,q} (p over out/r, q over
 *    in/r), W'_{p,q} = W_{p,q} + W_{p,q}·T_p + T_p. ΔW depends on W0, so the forward builds ΔW from the frozen weight
 *    each step, and the merge is W0 + blocks(W0·T + T) (a `merge` without `delta`). PEFT ignores miss_dropout here.
 * PEFT unmerges bat with (W' − T_p)·(I + T_p)⁻¹ per block; lorakit unmerges by dropping the merged copy, bit-exact.
 * Key `base_model.model.<path>.miss_block` (no `.weight`), PEFT's shapes; only nn.Linear, as in PEFT. Departures:
 * r > in is refused (PEFT 0.21 refuses it; 0.18 pads x up to r); with several bat adapters active on one layer each
 * sees W0 (PEFT feeds each the previous one's W').
 * Not here: the merge loop and its non-finite check (model.ts), Bone's names (bone.ts).
 */
import { z } from 'zod';
import { LorakitError } from '../../errors.ts';
import type { Tensor } from '../../graph/index.ts';
import { kaimingUniformBound, type Rng } from '../../linalg/index.ts';
import { fromMatrix, matrixDims, matrixOf, toMatrix } from '../layers.ts';
import type { AdapterMethod, ForwardContext, LayerInfo, LayerValues, ParamSpec } from '../method.ts';

/** How MiSS and Bone use their block. */
export type ShardMode = 'balance' | 'mini' | 'bat';

/** The block's shape: [r, out] (balance), [r, mini_r] (mini), [out/r, r, r] (bat). */
export function blockShape(layer: LayerInfo, mode: ShardMode, r: number, miniR: number): number[] {
  if (mode === 'bat') return [layer.outFeatures / r, r, r];
  return [r, mode === 'mini' ? miniR : layer.outFeatures];
}

/** Refuses a layer the mode cannot shard (PEFT's update_layer checks, and r ≤ in as PEFT 0.21). */
export function checkShards(
  method: string,
  layer: LayerInfo,
  mode: ShardMode,
  r: number,
  miniR: number,
  source: string,
): void {
  const [o, i] = matrixDims(layer);
  const refuse = (why: string, field: string) => {
    throw new LorakitError(
      'LK_CONFIG_INVALID',
      `${source}: ${method} cannot wrap ${layer.path} ([${o}, ${i}] as an [out, in] matrix): ${why}; change ${field} ` +
        'or exclude the layer',
      { field, layer: layer.path },
    );
  };
  if (r > i) refuse(`r = ${r} exceeds its ${i} inputs (PEFT ≥ 0.21 refuses this too)`, 'r');
  if (mode === 'bat' && (i % r !== 0 || o % r !== 0))
    refuse(`the "bat" mode needs r = ${r} to divide both sizes (r×r blocks)`, 'r');
  if (mode === 'mini' && o % miniR !== 0) refuse(`the "mini" mode needs mini_r = ${miniR} to divide out`, 'mini_r');
}

/** The initial block: zeros (ΔW = 0), or with `random` PEFT's kaiming_uniform_(a=√5) on [r, out] (bound 1/√out). */
export function initialBlock(shape: number[], random: boolean, rng: Rng): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  if (!random) return new Float32Array(n);
  const b = kaimingUniformBound(shape[1]);
  return rng.uniformArray(n, -b, b);
}

/** D [r, out] of the balance and mini modes as a graph tensor (mini: D [r, mini_r] tiled along out). */
function fullBlock(block: Tensor, mode: ShardMode, r: number, out: number, miniR: number): Tensor {
  if (mode !== 'mini') return block;
  return block
    .unsqueeze(1)
    .expand([r, out / miniR, miniR])
    .reshape([r, out]); // column c = D[:, c mod mini_r]
}

/** ΔW [out, in] of the bat mode as graph ops, from the frozen [out, in] matrix and T [out/r, r, r]. */
function batDelta(w: Tensor, t: Tensor, o: number, i: number, r: number): Tensor {
  const blocks = w.reshape([o / r, r, i / r, r]).transpose([2, 0, 1, 3]); // [in/r, out/r, r, r]: W_{p,q} at [q, p]
  return blocks.matmul(t).add(t).transpose([1, 2, 0, 3]).reshape([o, i]); // W_{p,q}·T_p + T_p, back to [out, in]
}

/** The adapted output: y + (Σ shards of x̃)·D, or y + x·ΔWᵀ in the bat mode. */
export function shardForward(ctx: ForwardContext<any, any>, block: Tensor, mode: ShardMode, r: number, miniR: number) {
  const { layer } = ctx;
  const [o, i] = matrixDims(layer);
  if (mode === 'bat') return ctx.y.add(ctx.x.matmul(batDelta(matrixOf(layer, ctx.weight), block, o, i, r).T));
  const x = ctx.dropout(ctx.x, (ctx.config as { miss_dropout?: number }).miss_dropout ?? 0); // [.., in]
  const d = fullBlock(block, mode, r, o, miniR); // [r, out]
  const last = x.rank - 1;
  const [n, rem] = [Math.floor(i / r), i % r];
  const whole = rem ? x.slice([0], [n * r], [last]) : x; // [.., n·r]
  const u = whole.reshape([...x.shape.slice(0, -1).map(() => 0), n, r]).sum(-2); // [.., r]: shards summed
  let t = u.matmul(d); // [.., out]
  // the partial last shard (PEFT pads it with zeros to width r) meets only D's first rem rows
  if (rem) t = t.add(x.slice([n * r], [i], [last]).matmul(d.slice([0], [rem], [0]))); // [.., rem]·[rem, out]
  return ctx.y.add(t);
}

/** The merged weight (stored layout): W0 + tile(D)ᵀ, or W0 + blocks(W0·T + T) for bat, in float64 per entry. */
export function shardMerge(
  layer: LayerInfo,
  block: Float32Array,
  mode: ShardMode,
  r: number,
  miniR: number,
  w0: Float32Array,
): Float32Array {
  const [o, i] = matrixDims(layer);
  const w = toMatrix(layer, w0); // [out, in]
  const out = new Float32Array(o * i);
  for (let row = 0; row < o; row++) {
    const p = Math.floor(row / r),
      a = row % r;
    for (let col = 0; col < i; col++) {
      let d: number;
      if (mode === 'bat') {
        const q = Math.floor(col / r),
          b = col % r;
        d = block[(p * r + a) * r + b]; // T_p[a, b]
        for (let c = 0; c < r; c++) d += w[row * i + q * r + c] * block[(p * r + c) * r + b]; // (W_{p,q}·T_p)[a, b]
      } else {
        const width = mode === 'mini' ? miniR : o;
        d = block[(col % r) * width + (mode === 'mini' ? row % miniR : row)]; // D[i mod r, o]
      }
      out[row * i + col] = w[row * i + col] + d;
    }
  }
  return fromMatrix(layer, out);
}

export const missFields = {
  /** Shard width along in (balance, mini) or the block size (bat); PEFT's default 64. */
  r: z.number().int().positive().default(64),
  /** Dropout on x before the shards are summed (balance and mini; PEFT's bat forward ignores it). */
  miss_dropout: z.number().min(0).max(1).default(0),
  /** The mini mode's block width along out (out % mini_r must be 0). */
  mini_r: z.number().int().positive().default(1),
  /** true: balance, block 0; false: balance, block Kaiming-uniform (tests); "bat"; "mini". */
  init_weights: z.union([z.boolean(), z.enum(['bat', 'mini'])]).default(true),
  /** Base biases to train: only "none" (PEFT's MiSS layers never train them). */
  bias: z.enum(['none', 'all', 'MiSS_only']).default('none'),
};

/** A MissConfig with defaults filled (targeting fields included). */
export type MissConfig = { [K in keyof typeof missFields]: z.output<(typeof missFields)[K]> } & {
  target_modules: string | string[] | null;
  [k: string]: unknown;
};

/** The mode an init_weights value picks (PEFT's miss_fn). */
export const modeOf = (initWeights: boolean | string): ShardMode =>
  initWeights === 'bat' ? 'bat' : initWeights === 'mini' ? 'mini' : 'balance';

/** Refuses a bias other than "none" (`method` and the PEFT spelling of its adapter-only value in the message). */
export function noBias(method: string, bias: string, source: string): void {
  if (bias === 'none') return;
  throw new LorakitError(
    'LK_UNSUPPORTED',
    `${source}: bias = "${bias}" is not supported for ${method}: only "none" (list the modules whose weights ` +
      'should train in modules_to_save)',
    { field: 'bias' },
  );
}

const BLOCK = 'miss_block';

export const miss: AdapterMethod<MissConfig> = {
  name: 'miss',
  peftType: 'MISS',
  paper: 'MiSS: Balancing LoRA Performance and Efficiency with Simple Shard Sharing (arXiv:2409.15371)',
  layers: ['linear'],
  fields: missFields,

  check: (c, source) => noBias('MiSS', c.bias, source),

  checkLayer: (layer, _s, c, source) => checkShards('miss', layer, modeOf(c.init_weights), c.r, c.mini_r, source),

  params: (layer, _s, c): ParamSpec[] => [
    { name: BLOCK, shape: blockShape(layer, modeOf(c.init_weights), c.r, c.mini_r), trainable: true, role: 'other' },
  ],

  async init({ layer, config: c, rng }) {
    const shape = blockShape(layer, modeOf(c.init_weights), c.r, c.mini_r);
    return { values: { [BLOCK]: initialBlock(shape, c.init_weights === false, rng) } };
  },

  forward: (ctx) => shardForward(ctx, ctx.p[BLOCK], modeOf(ctx.config.init_weights), ctx.config.r, ctx.config.mini_r),

  // PEFT's counts: r·out (balance), r·mini_r (mini), (out/r)·r·r = out·r (bat)
  trainableCount: (c, layers) =>
    layers.reduce((n, { layer }) => n + c.r * (modeOf(c.init_weights) === 'mini' ? c.mini_r : layer.outFeatures), 0),

  merge: ({ layer, config: c, p }: LayerValues<MissConfig, unknown>, w0) =>
    shardMerge(layer, p[BLOCK], modeOf(c.init_weights), c.r, c.mini_r, w0),
};
