/**
 * Which pooled LoRAs an adaptive merge uses (the Recycling study's `jobs/run_hub_selection.py`): `evaluation` scores
 * every candidate alone on the target's training batches and keeps the k with the lowest loss; `random` keeps k
 * at random (seeded). The study's `closeness` and quasi-FIM strategies need a target LoRA or Fisher estimates and
 * are not implemented here; with a pool no larger than k every strategy keeps the whole pool.
 * Not here: what is done with the selection (subPool in pool.ts, the methods).
 */
import { LorakitError } from '../errors.ts';
import { Rng } from '../linalg/index.ts';
import type { LoadedModel } from '../models/index.ts';
import { CoefficientObjective, type TokenBatch } from './objective.ts';
import { type RecycledPool, subPool } from './pool.ts';

/** A selection strategy. */
export type Selection = 'evaluation' | 'random';

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
}

/** Indices of the selected adapters (best first for 'evaluation') and each candidate's score when evaluated. */
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
    const keep = scores
      .map((s, i) => [s, i] as const)
      .sort((a, b) => a[0] - b[0])
      .slice(0, k)
      .map(([, i]) => i);
    return { keep, scores };
  } finally {
    await obj.dispose();
  }
}

/** The pool restricted to a selection. */
export const selectedPool = (pool: RecycledPool, keep: readonly number[]): RecycledPool => subPool(pool, keep);
