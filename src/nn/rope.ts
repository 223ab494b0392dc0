/**
 * Rotary position embeddings as transformers computes them: inverse frequencies (default, linear, llama3 scaling)
 * computed with float32 rounding at each step like torch does, cos/sin tables precomputed on the host for positions
 * 0..maxPositions-1 and gathered by position_ids in the graph, and the rotate_half layout (first half of each head
 * pairs with the second half). Not here: attention itself (attention.ts).
 */
import { LorakitError } from '../errors.ts';
import type { Graph, Tensor } from '../graph/index.ts';
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
    throw new LorakitError('LK_CONFIG_INVALID', 'rope_scaling llama3 needs low_freq_factor, high_freq_factor and original_max_position_embeddings');
  }
  const lowWavelen = oldLen / lo, highWavelen = oldLen / hi;
  return inv.map((x) => {
    const wavelen = f(f(2 * Math.PI) / x);
    const scaled = wavelen > lowWavelen ? f(x / factor) : x; // long wavelengths: divide by factor
    if (wavelen < highWavelen || wavelen > lowWavelen) return scaled; // short wavelengths: keep
    const smooth = f(f(f(oldLen / wavelen) - lo) / (hi - lo)); // in between: interpolate
    return f(f(f(f(1 - smooth) * scaled) / factor) + f(smooth * scaled));
  });
}

/** cos and sin of position·inv_freq for positions 0..n-1: two [n, hd/2] initializers in `dtype`. */
export function ropeTables(g: Graph, invFreq: Float32Array, n: number, dtype: ComputeDType, attentionScaling = 1): { cos: Tensor; sin: Tensor } {
  const half = invFreq.length;
  const Arr = dtype === 'f64' ? Float64Array : Float32Array;
  const cos = new Arr(n * half), sin = new Arr(n * half);
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

/** The tables' rows for position_ids [B, T] (or [1, T]), shaped to broadcast over heads: [B, 1, T, hd/2] each. */
export function ropeAt(tables: { cos: Tensor; sin: Tensor }, positionIds: Tensor): { cos: Tensor; sin: Tensor } {
  return { cos: tables.cos.gather(positionIds).unsqueeze(1), sin: tables.sin.gather(positionIds).unsqueeze(1) };
}

/**
 * x·cos + rotate_half(x)·sin for x [B, H, T, hd], with rotate_half(x) = [−x₂, x₁] over the two halves of hd:
 * [x₁·c − x₂·s, x₂·c + x₁·s].
 */
export function applyRope(x: Tensor, rope: { cos: Tensor; sin: Tensor }): Tensor {
  const hd = x.shape[x.rank - 1] as number;
  const [x1, x2] = x.split([hd / 2, hd / 2], -1); // [B, H, T, hd/2] each
  const { cos, sin } = rope;
  return x.graph.concat([x1.mul(cos).sub(x2.mul(sin)), x2.mul(cos).add(x1.mul(sin))], -1); // [B, H, T, hd]
}
