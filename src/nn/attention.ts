/**
 * Scaled dot-product attention decomposed into MatMul/Softmax (no fused kernel, so autodiff sees every step),
 * the masks it takes (causal, sliding window, padding), and the head reshapes around it.
 * Shapes: B batch, H heads, T query tokens, P cached tokens, S = P + T key tokens, hd head size.
 * Not here: projections (they are modules in models/), position encodings (rope.ts).
 */
import { LorakitError } from '../errors.ts';
import { type Graph, type Tensor, fmtShape, memoTable } from '../graph/index.ts';

/** The score at masked positions: float32's lowest, transformers' additive mask value (softmax stays finite). */
export const MASK_VALUE = -3.4028234663852886e38;

/** A runtime dim as an i64 scalar tensor. */
export function dimOf(x: Tensor, axis: number): Tensor {
  const d = x.shape[axis];
  const g = x.graph;
  return typeof d === 'number'
    ? g.constInts([d], [])
    : x.shapeOf().gather(g.constInts([axis < 0 ? x.rank + axis : axis], []));
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

type Scaling = { scale: number } | { divisor: number };

/**
 * softmax(q·kᵀ·scale, masked)·v for q [B, H, T, hd], k and v [B, Hkv, S, hd], the mask broadcastable to [B, H, T, S].
 * With fewer kv heads (grouped-query attention, H = Hkv·nRep) query head h attends kv head ⌊h / nRep⌋, as transformers'
 * repeat_kv has it, without repeating k and v: the nRep query heads of a kv head are one [nRep·T, hd] matrix (a free
 * reshape of q), so Q·Kᵀ and P·V are Hkv larger products and k and v's gradients need no sum over copies.
 * `scaling` multiplies the scores (Llama, BERT: hd^-0.5) or divides them (GPT-2: by √hd), as transformers does.
 * Masked scores are set to MASK_VALUE: the same values transformers' additive finfo.min mask gives (score + finfo.min
 * rounds to finfo.min in float32), but the gradient is that of the function computed, so a fully masked row (a
 * left-pad query) gets a zero gradient rather than softmax's spurious one. The full T×S square is computed: skipping
 * the blocks above a causal diagonal (query blocks against their keys only) measured no faster (bench/RESULTS.md).
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, mask: AttentionMask | null, scaling: Scaling): Tensor {
  const [H, Hkv, hd] = [q.shape[1], k.shape[1], q.shape[3]];
  if (typeof H !== 'number' || typeof Hkv !== 'number' || typeof hd !== 'number' || H % Hkv) {
    throw new LorakitError(
      'LK_SHAPE_MISMATCH',
      `attention: q ${fmtShape(q.shape)} and k ${fmtShape(k.shape)} need static heads, query heads a multiple of kv ` +
        `heads`,
    );
  }
  const nRep = H / Hkv;
  const qg = nRep === 1 ? q : q.reshape([0, Hkv, -1, hd]); // [B, Hkv, nRep·T, hd]: rows (r, t) of kv head's group
  const raw = qg.matmul(k.T); // [B, Hkv, nRep·T, S]
  let scores = 'scale' in scaling ? raw.mul(scaling.scale) : scaling.divisor === 1 ? raw : raw.div(scaling.divisor);
  if (mask) scores = maskScores(scores, mask, nRep);
  const o = scores.softmax(-1).matmul(v); // [B, Hkv, nRep·T, hd]
  return nRep === 1 ? o : o.reshape([0, H, -1, hd]); // [B, H, T, hd]
}

/**
 * Where(mask, scores, MASK_VALUE) computed as scores·rowAllowed + bias, with bias = 0 where allowed and MASK_VALUE
 * elsewhere, rowAllowed = 1 for rows that allow some key and 0 for fully masked rows (both the mask's size, not the
 * scores'; without empty rows the product is skipped). The values are Where's (score + MASK_VALUE rounds to
 * MASK_VALUE; a fully masked row is MASK_VALUE throughout) and so is the gradient: zero on fully masked rows, and on
 * the masked entries of the other rows softmax's gradient is zero already (their probability is exactly 0). ORT's
 * broadcasting Where, forward and
 * backward, took about twice as long as this Mul + Add and the Mul of the backward (bench/RESULTS.md).
 */
function maskScores(scores: Tensor, mask: AttentionMask, nRep: number): Tensor {
  const [bias, rowAllowed] = maskFactors(mask, scores.dtype, nRep);
  return rowAllowed ? scores.mul(rowAllowed).add(bias) : scores.add(bias); // [B, Hkv, nRep·T, S]
}

/**
 * bias and rowAllowed, built once per mask, dtype and group size rather than once per layer (ORT folds each copy at
 * session creation). Grouped heads stack nRep query blocks as rows, so the mask's rows repeat nRep times.
 */
const FACTORS = memoTable<AttentionMask, Map<string, [Tensor, Tensor | null]>>('attention: mask factors');
function maskFactors(mask: AttentionMask, dtype: Tensor['dtype'], nRep: number): [Tensor, Tensor | null] {
  const byKey = mask.allowed.graph.memo(FACTORS, mask, () => new Map<string, [Tensor, Tensor | null]>());
  const key = `${dtype}:${nRep}`;
  let f = byKey.get(key);
  if (!f) {
    const { allowed } = mask;
    const rows = (t: Tensor) =>
      nRep === 1 || t.shape[t.rank - 2] === 1 ? t : t.graph.concat(new Array<Tensor>(nRep).fill(t), t.rank - 2);
    const bias = rows(allowed.where(allowed.graph.scalar(0, dtype), MASK_VALUE)); // [B|1, 1, nRep·T|1, S]
    // Without empty rows rowAllowed is 1 throughout and the product is skipped.
    f = [bias, mask.emptyRows ? rows(allowed.cast(dtype).max(-1, true)) : null]; // [B|1, 1, nRep·T|1, 1]
    byKey.set(key, f);
  }
  return f;
}
