/**
 * Scaled dot-product attention decomposed into MatMul/Softmax (no fused kernel, so autodiff sees every step),
 * the masks it takes (causal, sliding window, padding), and the head reshapes around it.
 * Shapes: B batch, H heads, T query tokens, P cached tokens, S = P + T key tokens, hd head size.
 * Not here: projections (they are modules in models/), position encodings (rope.ts).
 */
import type { Graph, Tensor } from '../graph/index.ts';

/** The score at masked positions: float32's lowest, transformers' additive mask value (softmax stays finite). */
export const MASK_VALUE = -3.4028234663852886e38;

/** A runtime dim as an i64 scalar tensor. */
export function dimOf(x: Tensor, axis: number): Tensor {
  const d = x.shape[axis];
  const g = x.graph;
  return typeof d === 'number' ? g.constInts([d], []) : x.shapeOf().gather(g.constInts([axis < 0 ? x.rank + axis : axis], []));
}

export interface MaskOptions {
  /** [B, S] with 1 for tokens to attend and 0 for padding (any integer dtype); absent: attend everywhere. */
  attentionMask?: Tensor;
  /** Causal: query t (at cache position P + t) sees keys 0..P+t. */
  causal: boolean;
  /** Query count T and cached count P as i64 scalars (P is 0 without a cache). */
  queryLen: Tensor;
  pastLen: Tensor;
  /** Keys further back than this many positions are masked (Mistral/Qwen2 sliding window); null: no window. */
  slidingWindow?: number | null;
}

/** Which keys each query may attend, and what is known of that pattern when the graph is built. */
export interface AttentionMask {
  /** [B, 1, T, S] bool, true = attend (or [1, 1, T, S] / [B, 1, 1, S] when only one kind of mask applies). */
  allowed: Tensor;
  /** Some query may allow no key at all (a left-pad query; only a padding mask does that). */
  emptyRows: boolean;
}

/**
 * The attention mask, or null when nothing is masked. Positions here are cache positions (indices into the key
 * sequence, pads included), as transformers' masks use; position_ids play no part.
 */
export function attentionMask(g: Graph, o: MaskOptions): AttentionMask | null {
  let allowed: Tensor | null = null;
  if (o.causal || o.slidingWindow) {
    const keyLen = o.pastLen.add(o.queryLen);
    const qpos = g.range(o.pastLen, keyLen).unsqueeze(1); // [T, 1]
    const kpos = g.range(0, keyLen); // [S]
    if (o.causal) allowed = kpos.greater(qpos).not(); // [T, S]: s <= P + t
    if (o.slidingWindow) {
      const inWindow = kpos.greater(qpos.sub(g.constInts([o.slidingWindow], []))); // s > P + t - window
      allowed = allowed ? allowed.and(inWindow) : inWindow;
    }
    allowed = allowed!.unsqueeze([0, 1]); // [1, 1, T, S]
  }
  if (o.attentionMask) {
    const pad = o.attentionMask.cast('bool').unsqueeze([1, 2]); // [B, 1, 1, S]
    allowed = allowed ? allowed.and(pad) : pad; // [B, 1, T, S]
  }
  return allowed && { allowed, emptyRows: !!o.attentionMask };
}

/** [B, T, H·hd] → [B, H, T, hd]. */
export function splitHeads(x: Tensor, heads: number, headDim: number): Tensor {
  return x.reshape([0, 0, heads, headDim]).transpose([0, 2, 1, 3]);
}

/** [B, H, T, hd] → [B, T, H·hd]. */
export function mergeHeads(x: Tensor, heads: number, headDim: number): Tensor {
  return x.transpose([0, 2, 1, 3]).reshape([0, 0, heads * headDim]);
}

/** Grouped-query attention: each of Hkv heads [B, Hkv, S, hd] repeated nRep times → [B, Hkv·nRep, S, hd] (transformers' repeat_kv order). */
export function repeatKv(x: Tensor, nRep: number): Tensor {
  if (nRep === 1) return x;
  const [, hkv, , hd] = x.shape as [unknown, number, unknown, number];
  return x.unsqueeze(2).expand([1, 1, nRep, 1, 1]).reshape([0, hkv * nRep, -1, hd]); // [B, Hkv, nRep, S, hd] → [B, H, S, hd]
}

type Scaling = { scale: number } | { divisor: number };

/**
 * softmax(q·kᵀ·scale, masked)·v for q [B, H, T, hd], k and v [B, H, S, hd], the mask broadcastable to [B, H, T, S].
 * `scaling` multiplies the scores (Llama, BERT: hd^-0.5) or divides them (GPT-2: by √hd), as transformers does.
 * Masked scores are set to MASK_VALUE: the same values transformers' additive finfo.min mask gives (score + finfo.min
 * rounds to finfo.min in float32), but the gradient is that of the function computed, so a fully masked row (a
 * left-pad query) gets a zero gradient rather than softmax's spurious one. The full T×S square is computed: skipping
 * the blocks above a causal diagonal (query blocks against their keys only) measured no faster (bench/RESULTS.md).
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, mask: AttentionMask | null, scaling: Scaling): Tensor {
  const raw = q.matmul(k.T); // [B, H, T, S]
  let scores = 'scale' in scaling ? raw.mul(scaling.scale) : scaling.divisor === 1 ? raw : raw.div(scaling.divisor);
  if (mask) scores = maskScores(scores, mask.allowed, mask.emptyRows);
  return scores.softmax(-1).matmul(v); // [B, H, T, hd]
}

/**
 * Where(mask, scores, MASK_VALUE) computed as scores·rowAllowed + bias, with bias = 0 where allowed and MASK_VALUE
 * elsewhere, rowAllowed = 1 for rows that allow some key and 0 for fully masked rows (both the mask's size, not the
 * scores'; without empty rows the product is skipped). The values are Where's (score + MASK_VALUE rounds to MASK_VALUE; a fully masked row is MASK_VALUE
 * throughout) and so is the gradient: zero on fully masked rows, and on the masked entries of the other rows
 * softmax's gradient is zero already (their probability is exactly 0). ORT's broadcasting Where, forward and
 * backward, took about twice as long as this Mul + Add and the Mul of the backward (bench/RESULTS.md).
 */
function maskScores(scores: Tensor, mask: Tensor, emptyRows: boolean): Tensor {
  const bias = mask.where(scores.lift(0), MASK_VALUE); // [B|1, 1, T|1, S]
  if (!emptyRows) return scores.add(bias); // every row allows a key: rowAllowed is 1 throughout
  const rowAllowed = mask.cast(scores.dtype).max(-1, true); // [B|1, 1, T|1, 1]
  return scores.mul(rowAllowed).add(bias); // [B, H, T, S]
}
