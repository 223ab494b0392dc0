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
import { buildCausalLM } from '../models/index.ts';
import type { ModelConfig } from '../io/index.ts';
import type { ModelContext } from '../nn/index.ts';
import type { LossTermHandle } from '../peft/index.ts';
import { IGNORE_INDEX } from './data/encode.ts';

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
  const predicted = (ctx: ModelContext<ModelConfig>) => {
    const out = buildCausalLM(ctx, { inputIds: o.inputIds, attentionMask: o.attentionMask });
    // aligned: positions 0..T-2 predict tokens 1..T-1, so the last position's logits are never built
    const hidden = o.labelsAre === 'aligned' ? out.hidden.slice([0], [-1], [1]) : out.hidden; // [B, T', D]
    return out.lmHead(hidden); // [B, T', V]
  };
  const logits = predicted(o.ctx);
  const V = logits.shape[logits.rank - 1] as number;
  const flat = logits.reshape([-1, V]); // [N, V]
  const targets = (o.labelsAre === 'aligned' ? o.labels.slice([1], [2 ** 62], [1]) : o.labels).reshape([-1]); // [N]
  const { nll, valid } = tokenNll(flat, targets, IGNORE_INDEX); // [N] each
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
      frozen ??= predicted(o.frozen()).reshape([-1, V]).detach(); // [N, V], no gradient
      return frozen;
    };
    const counted = targets.equal(targets.lift(IGNORE_INDEX)).not(); // [N] bool
    for (const t of o.terms) {
      terms[t.name] = t.build({ logits: flat, targets, counted, frozenLogits });
      loss = loss.add(terms[t.name]);
    }
  }
  return { loss, ce, nllSum, count, terms, logits: flat };
}
