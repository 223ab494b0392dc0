/**
 * Rotary position embeddings as transformers computes them: inverse frequencies (default, linear, llama3 scaling)
 * computed with float32 rounding at each step like torch does, cos/sin tables precomputed on the host for positions
 * 0..maxPositions-1 and gathered by position_ids in the graph, and the rotate_half layout (first half of each head
 * pairs with the second half). Not here: attention itself (attention.ts).
 */
import { LorakitError } from '../errors.ts';
import { type Graph, type Tensor, memoTable } from '../graph/index.ts';
import type { ComputeDType } from './weights.ts';

const f = Math.fround;

/** RoPE scaling as config.ts normalises it. */
export interface RopeScalingSpec {
  rope_type: 'default' | 'linear' | 'llama3';
  factor: number;
  low_freq_factor?: number;
  high_freq_factor?: number;
  original_max_position_embeddings?: number;
}

/**
 * inv_freq[i] = 1 / θ^(2i/d), i < d/2, then scaled (transformers' `_compute_default_rope_parameters`,
 * `_compute_linear_scaling_rope_parameters` and `_compute_llama3_parameters`), each step rounded to float32.
 */
export function ropeInvFreq(headDim: number, theta: number, scaling: RopeScalingSpec | null): Float32Array {
  const half = headDim / 2;
  const inv = Float32Array.from({ length: half }, (_, i) => f(1 / f(theta ** f((2 * i) / headDim))));
  if (!scaling || scaling.rope_type === 'default') return inv;
  if (scaling.rope_type === 'linear') return inv.map((x) => f(x / scaling.factor));
  const { factor, low_freq_factor: lo, high_freq_factor: hi, original_max_position_embeddings: oldLen } = scaling;
  if (lo === undefined || hi === undefined || oldLen === undefined) {
    throw new LorakitError(
      'LK_CONFIG_INVALID',
      'rope_scaling llama3 needs low_freq_factor, high_freq_factor and original_max_position_embeddings',
    );
  }
  const lowWavelen = oldLen / lo,
    highWavelen = oldLen / hi;
  return inv.map((x) => {
    const wavelen = f(f(2 * Math.PI) / x);
    const scaled = wavelen > lowWavelen ? f(x / factor) : x; // long wavelengths: divide by factor
    if (wavelen < highWavelen || wavelen > lowWavelen) return scaled; // short wavelengths: keep
    const smooth = f(f(f(oldLen / wavelen) - lo) / (hi - lo)); // in between: interpolate
    return f(f(f(f(1 - smooth) * scaled) / factor) + f(smooth * scaled));
  });
}

/** cos and sin of position·inv_freq for positions 0..n-1: two [n, hd/2] initializers in `dtype`. */
export function ropeTables(
  g: Graph,
  invFreq: Float32Array,
  n: number,
  dtype: ComputeDType,
  attentionScaling = 1,
): { cos: Tensor; sin: Tensor } {
  const half = invFreq.length;
  const Arr = dtype === 'f64' ? Float64Array : Float32Array;
  const cos = new Arr(n * half),
    sin = new Arr(n * half);
  for (let p = 0; p < n; p++) {
    for (let i = 0; i < half; i++) {
      const angle = f(p * invFreq[i]); // torch: float32 product of position and inv_freq
      cos[p * half + i] = Math.cos(angle) * attentionScaling;
      sin[p * half + i] = Math.sin(angle) * attentionScaling;
    }
  }
  return {
    cos: g.initializer(`rope.cos.${g.initializers.size}`, dtype, [n, half], cos),
    sin: g.initializer(`rope.sin.${g.initializers.size}`, dtype, [n, half], sin),
  };
}

/** RoPE for one forward: the cos/sin tables [P, hd/2] and the tokens' position_ids [B, T] (or [1, T]: every row). */
export interface Rope {
  tables: { cos: Tensor; sin: Tensor };
  positionIds: Tensor;
}

export function ropeAt(tables: { cos: Tensor; sin: Tensor }, positionIds: Tensor): Rope {
  return { tables, positionIds };
}

/** What every projection of one forward shares, built once per Rope in its graph: position ids per row, or the
 * gathered table rows. */
const SHARED = memoTable<Rope, { pos?: Tensor; rows?: { cos: Tensor; sin: Tensor } }>('RoPE: per-forward tensors');

/**
 * x·cos + rotate_half(x)·sin for x [B, H, T, hd], with rotate_half(x) = [−x₂, x₁] over the two halves of hd:
 * [x₁·c − x₂·s, x₂·c + x₁·s]. In float32 one com.microsoft RotaryEmbedding node (its kernel is float32 only);
 * float64 (gradient checks) keeps the composite over the gathered table rows.
 */
export function applyRope(x: Tensor, rope: Rope): Tensor {
  const s = rope.positionIds.graph.memo(SHARED, rope, () => ({}));
  const { cos, sin } = rope.tables;
  if (x.dtype === 'f32' && cos.dtype === 'f32') {
    // The kernel takes position ids [B, T] (or [1] for a common start): a [1, T] row is repeated for each batch row.
    if (!s.pos) {
      const p = rope.positionIds;
      s.pos =
        p.shape[0] === 1 && x.shape[0] !== 1
          ? p.expand(x.graph.concat([x.shapeOf().slice([0], [1]), p.shapeOf().slice([1], [2])], 0), [
              x.shape[0],
              p.shape[1],
            ])
          : p;
    }
    return x.graph.op('RotaryEmbedding', [x, s.pos, cos, sin], { interleaved: 0 }); // [B, H, T, hd]
  }
  // [B|1, 1, T, hd/2]
  s.rows ??= { cos: cos.gather(rope.positionIds).unsqueeze(1), sin: sin.gather(rope.positionIds).unsqueeze(1) };
  const hd = x.shape[x.rank - 1] as number;
  const [x1, x2] = x.split([hd / 2, hd / 2], -1); // [B, H, T, hd/2] each
  const r = s.rows;
  return x.graph.concat([x1.mul(r.cos).sub(x2.mul(r.sin)), x2.mul(r.cos).add(x1.mul(r.sin))], -1); // [B, H, T, hd]
}
