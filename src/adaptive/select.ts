/**
 * Which pooled LoRAs an adaptive merge uses (the Recycling study's `jobs/run_hub_selection.py`): `evaluation` scores
 * every candidate alone on the target's training batches and keeps the k with the lowest loss; `random` keeps k
 * at random (seeded); `quasi-fisher` (π-Tuning's) and `closeness` (the study's weight similarity) keep the k most
 * similar to a target LoRA (similarity.ts). With a pool no larger than k every strategy keeps the whole pool.
 * Not here: what is done with the selection (subPool in pool.ts, the methods), the similarities (similarity.ts).
 */
import { LorakitError } from '../errors.ts';
import { Rng } from '../linalg/index.ts';
import type { LoadedModel } from '../models/index.ts';
import { CoefficientObjective, type TokenBatch } from './objective.ts';
import { type RecycledPool, subPool } from './pool.ts';
import { type ClosenessVariant, closeness, quasiFisherSimilarity } from './similarity.ts';

/** A selection strategy. */
export type Selection = 'evaluation' | 'random' | 'quasi-fisher' | 'closeness';
/** All selection strategies, for option checks. */
export const SELECTIONS: readonly Selection[] = ['evaluation', 'random', 'quasi-fisher', 'closeness'];

/** Options of `selectTopK`. */
export interface SelectOptions {
  strategy: Selection;
  k: number;
  /** For 'evaluation': the model and the target's training batches (shape [batch, seqLen] each). */
  model?: LoadedModel;
  train?: readonly TokenBatch[];
  batch?: number;
  seqLen?: number;
  /** For 'random' (default 0). */
  seed?: number;
  /** For 'quasi-fisher' and 'closeness': the target LoRA as a one-adapter pool. */
  target?: RecycledPool;
  /** For 'closeness': the study's variant (default cosine). */
  variant?: ClosenessVariant;
}

/**
 * Indices of the selected adapters (best first, except 'random') and each candidate's score: its loss for
 * 'evaluation' (lower is better), its similarity to the target for 'quasi-fisher' and 'closeness' (higher is better).
 */
export async function selectTopK(
  pool: RecycledPool,
  o: SelectOptions,
): Promise<{ keep: number[]; scores: number[] | null }> {
  const n = pool.names.length;
  if (!Number.isInteger(o.k) || o.k < 1)
    throw new LorakitError('LK_INVALID_ARGUMENT', `selectTopK: k must be a positive integer, got ${o.k}`);
  const k = Math.min(o.k, n);
  if (o.strategy === 'random') {
    const rng = new Rng(o.seed ?? 0);
    const order = Array.from({ length: n }, (_, i) => i);
    for (let i = n - 1; i > 0; i--) {
      const j = Math.floor(rng.next() * (i + 1));
      [order[i], order[j]] = [order[j], order[i]];
    }
    return { keep: order.slice(0, k).sort((a, b) => a - b), scores: null };
  }
  if (o.strategy === 'quasi-fisher' || o.strategy === 'closeness') {
    if (!o.target)
      throw new LorakitError('LK_INVALID_ARGUMENT', `selectTopK: ${o.strategy} needs a target LoRA (target)`);
    if (o.strategy === 'quasi-fisher' && (!o.model || !o.train?.length || !o.seqLen))
      throw new LorakitError('LK_INVALID_ARGUMENT', 'selectTopK: quasi-fisher needs model, train and seqLen');
    const scores =
      o.strategy === 'closeness'
        ? closeness(pool, o.target, o.variant)
        : await quasiFisherSimilarity(pool, o.target, { model: o.model!, samples: o.train!, seqLen: o.seqLen! });
    return { keep: rank(scores, k, -1), scores };
  }
  if (o.strategy !== 'evaluation')
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `selectTopK: strategy must be one of ${SELECTIONS.join(', ')}, got ${String(o.strategy)}`,
    );
  if (!o.model || !o.train?.length || !o.batch || !o.seqLen)
    throw new LorakitError('LK_INVALID_ARGUMENT', 'selectTopK: evaluation needs model, train, batch and seqLen');
  // one compiled graph: the whole pool with a one-hot coefficient vector scores each adapter alone
  const obj = await CoefficientObjective.create({
    model: o.model,
    pool,
    spec: { granularity: 'task', phi: 'linear' },
    batch: o.batch,
    seqLen: o.seqLen,
    withGrad: false,
  });
  try {
    const scores: number[] = [];
    for (let i = 0; i < n; i++) {
      const w = new Float64Array(n);
      w[i] = 1;
      scores.push(await obj.loss({ w }, o.train));
    }
    return { keep: rank(scores, k, 1), scores };
  } finally {
    await obj.dispose();
  }
}

/** Indices of the k best scores: the lowest for sign 1, the highest for sign -1 (ties: lower index first). */
function rank(scores: readonly number[], k: number, sign: 1 | -1): number[] {
  return scores
    .map((s, i) => [s, i] as const)
    .sort((a, b) => sign * (a[0] - b[0]) || a[1] - b[1])
    .slice(0, k)
    .map(([, i]) => i);
}

/** The pool restricted to a selection. */
export const selectedPool = (pool: RecycledPool, keep: readonly number[]): RecycledPool => subPool(pool, keep);
