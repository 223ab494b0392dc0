/**
 * The one causal-LM loss, built into a model graph: next-token cross-entropy (natural log) over the counted
 * targets (label -100 is not counted), mean over counted targets, plus the trained adapter's loss terms. The
 * Trainer's task, `lorakit eval`, the demo and the bench all build their graphs with it, so what is benchmarked and
 * evaluated is what `lorakit train` runs.
 *
 * Labels come in one of two conventions: `aligned` (transformers': labels[b, t] is the token at t and is predicted
 * from position t − 1; the shift happens here, so the last position's [B, V] logits are never built) or `next`
 * (labels[b, t] is already the target of position t, as the demo's windows of T + 1 bytes give).
 * Not here: the model (models/), the terms (peft/methods/), the optimizer (optim/).
 */
import { type Tensor, tokenNll } from '../graph/index.ts';
import { type FrozenHead, buildCausalLM } from '../models/index.ts';
import type { ModelConfig } from '../io/index.ts';
import type { ModelContext } from '../nn/index.ts';
import type { LossTermHandle } from '../peft/index.ts';
import { IGNORE_INDEX } from './data/encode.ts';

/**
 * Rows per chunk of a training graph's fused head and loss (`eagerHeadNll`): a [256, V] block of logits at a time
 * (50 MB at SmolLM2's 49k vocabulary) instead of a batch's [N, V] logits and their gradient (bench/RESULTS.md).
 */
export const HEAD_CHUNK_ROWS = 256;

/** Options of `causalLmLoss`. */
export interface CausalLmLossOptions {
  /** The model with its weights and adapter hooks, recording into the graph. */
  ctx: ModelContext<ModelConfig>;
  /** [B, T] i64. */
  inputIds: Tensor;
  /** [B, T] i64 (or [B·T] with `next`); -100 = not counted. */
  labels: Tensor;
  /** `aligned`: labels equal input ids where counted (shifted here); `next`: labels are the next-token targets. */
  labelsAre: 'aligned' | 'next';
  /** [B, T] i64, 1 = attend (right or left padding). */
  attentionMask?: Tensor;
  /** Extra terms (the trained adapter's), each added to the loss with weight 1 and reported by name. */
  terms?: readonly LossTermHandle[];
  /** Builds the frozen model (every adapter off) in the same graph, for terms that compare against it. */
  frozen?: () => ModelContext<ModelConfig>;
  /**
   * Training graphs: compute the head's logits, the loss and the loss's gradient at the head's input in chunks of
   * this many rows during the forward pass (`eagerHeadNll`), so the [N, V] logits never exist whole. Used only when
   * the head has nothing to train and no term reads the logits; otherwise (and when unset) the plain path.
   */
  headChunkRows?: number;
}

/** The loss and its parts, as scalars of the graph. */
export interface CausalLmLoss {
  /** Cross-entropy plus every term. */
  loss: Tensor;
  /** Mean cross-entropy over counted targets. */
  ce: Tensor;
  /** Sum of the counted targets' negative log-likelihoods and their count (exact averages over many batches). */
  nllSum: Tensor;
  count: Tensor;
  /** Each term's value, by name. */
  terms: Record<string, Tensor>;
  /** The logits of the targets' positions, [N, V] (row-major over B and T'), for callers that also read predictions. */
  logits: Tensor;
}

/** Builds the causal-LM loss of `o.ctx` on one batch. */
export function causalLmLoss(o: CausalLmLossOptions): CausalLmLoss {
  const model = (ctx: ModelContext<ModelConfig>) => {
    const out = buildCausalLM(ctx, { inputIds: o.inputIds, attentionMask: o.attentionMask });
    // aligned: positions 0..T-2 predict tokens 1..T-1, so the last position's logits are never built
    const hidden = o.labelsAre === 'aligned' ? out.hidden.slice([0], [-1], [1]) : out.hidden; // [B, T', D]
    return { hidden, lmHead: out.lmHead, frozen: out.frozenHead };
  };
  const predicted = (ctx: ModelContext<ModelConfig>) => {
    const { hidden, lmHead } = model(ctx);
    return lmHead(hidden); // [B, T', V]
  };
  const { hidden, lmHead, frozen } = model(o.ctx);
  const targets = (o.labelsAre === 'aligned' ? o.labels.slice([1], [2 ** 62], [1]) : o.labels).reshape([-1]); // [N]
  // the full logits are recorded only when something reads them (the plain path, a term, a caller of .logits)
  let full: Tensor | null = null;
  const flatLogits = () => {
    full ??= rowsOf(lmHead(hidden)); // [N, V]
    return full;
  };
  const D = hidden.shape[hidden.rank - 1] as number;
  const eager =
    o.headChunkRows && frozen && !o.terms?.length
      ? eagerHeadNll(frozen, hidden.reshape([-1, D]), targets, o.headChunkRows)
      : null;
  const { nll, valid } = eager ?? tokenNll(flatLogits(), targets, IGNORE_INDEX); // [N] each
  const nllSum = nll.sum();
  const count = valid.sum();
  const ce = nllSum.div(count.maximum(1));
  const terms: Record<string, Tensor> = {};
  let loss = ce;
  if (o.terms?.length) {
    let frozen: Tensor | null = null;
    const frozenLogits = () => {
      if (!o.frozen)
        throw new Error('internal: a loss term asked for the frozen model, but causalLmLoss got no frozen()');
      frozen ??= rowsOf(predicted(o.frozen())).detach(); // [N, V], no gradient
      return frozen;
    };
    const counted = targets.equal(targets.lift(IGNORE_INDEX)).not(); // [N] bool
    for (const t of o.terms) {
      terms[t.name] = t.build({ logits: flatLogits(), targets, counted, frozenLogits });
      loss = loss.add(terms[t.name]);
    }
  }
  return {
    loss,
    ce,
    nllSum,
    count,
    terms,
    get logits() {
      return flatLogits();
    },
  };
}

/** [..., V] logits as [N, V] rows. */
const rowsOf = (logits: Tensor) => logits.reshape([-1, logits.shape[logits.rank - 1] as number]);

/**
 * Per-row NLL [N] and valid mask of `head`'s logits on `hidden` [N, D], with the loss's gradient at the head's input
 * taken chunk by chunk in the forward pass. For each chunk of `rows` rows: the logits of the detached rows, their
 * NLL and log-probabilities, and E = ∂nll_n/∂h_n = (softmax − onehot(target))·W (0 on ignored rows), a [rows, D]
 * block made by the head's own input-gradient product (the row n of the NLL reads only row n). The returned NLL
 * is nll + (s − s̄) with s = Σ_d h⊙E and s̄ its detached copy: the value is nll exactly (s − s̄ is 0), and
 * the gradient at h is dnll ⊙ E, so the backward reads E instead of the [N, V] log-probabilities. The chunks
 * are one Scan (equal chunks of at most `rows`): each chunk's [rows, V] blocks are freed before the next, so the
 * step's peak holds one chunk's rather than [N, V] ones, and ORT packs the head's weight once for its kernels
 * rather than once per chunk (8 copies of 113 MB on SmolLM2, 1 s of session creation). E is written out rather
 * than differentiated through the head: that skips the passes over [rows, V] that the head's own rules would add
 * (its per-row scales, its outlier columns, the loss's row weights).
 */
export function eagerHeadNll(
  head: FrozenHead,
  hidden: Tensor,
  targets: Tensor,
  rows: number,
): { nll: Tensor; valid: Tensor } | null {
  const [N, D] = hidden.shape;
  if (typeof N !== 'number' || typeof D !== 'number') return null; // a symbolic row count: no static chunks
  const g = hidden.graph;
  const chunk = (hd: Tensor, t: Tensor): Tensor[] => {
    // LogSoftmax on the last axis rather than SoftmaxCrossEntropyLoss, whose expansion is 3.4× slower (ops/nn.ts)
    const logProb = g.op('LogSoftmax', [head.forward(hd)], { axis: -1 }); // [n, V]
    const counted = t.equal(t.lift(IGNORE_INDEX)).not(); // [n]
    const target = counted.where(t, t.lift(0)); // [n]: ignored rows point at class 0, then are zeroed
    const nll = counted.where(logProb.gatherElements(target.unsqueeze(-1), 1).squeeze(-1).neg(), 0); // [n]
    // (softmax − onehot)·W as softmax·W − W[target]: a quantized product then rounds the probabilities on
    // their own grid, not one the −1 at the target sets (SmolLM2, real text: E 0.85 → 0.55 % from the exact
    // one with blocks, 1.45 → 0.57 % with residual rows; bench/head-grad.ts); no [n, V] copy takes the −1
    const E = head.inputGrad(logProb.exp(), hd).sub(head.rows(target));
    return [nll, E.mul(counted.cast(hd.dtype).unsqueeze(-1))]; // [n], [n, D]
  };
  let nll: Tensor;
  let E: Tensor;
  if (N <= rows) [nll, E] = chunk(hidden.detach(), targets);
  else {
    // equal chunks for Scan: C of n rows, the last padded with ignored rows (fewer than C of them)
    const C = Math.ceil(N / rows);
    const n = Math.ceil(N / C);
    const pad = C * n - N;
    let hs = hidden.detach();
    let ts = targets;
    if (pad > 0) {
      hs = g.concat([hs, g.scalar(0, hs.dtype).expand([pad, D])], 0);
      ts = g.concat([ts, g.constant(new Array(pad).fill(IGNORE_INDEX), ts.dtype, [pad])], 0);
    }
    const [nlls, Es] = g.scan([hs.reshape([C, n, D]), ts.reshape([C, n])], ([h, t]) => chunk(h, t));
    nll = nlls.reshape([C * n]);
    E = Es.reshape([C * n, D]);
    if (pad > 0) [nll, E] = [nll.slice([0], [N], [0]), E.slice([0], [N], [0])];
  }
  const dot = hidden.mul(E.detach()).sum(-1); // [N]
  const valid = targets.equal(targets.lift(IGNORE_INDEX)).not().cast(hidden.dtype);
  return { nll: nll.detach().add(dot.sub(dot.detach())), valid };
}
