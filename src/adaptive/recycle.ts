/**
 * The Recycling study's own method (Liu et al., "The Appeal and Reality of Recycling LoRAs with Adaptive Merging",
 * ICML 2026, arXiv 2602.12323), found by its design-space search: select the top-k LoRAs by evaluating each alone
 * on the target's training samples, then learn per-module coefficients with φ = leaky-ReLU from an all-zero init
 * (`target` init with force_routing 0: the model starts as the base model), lr 5e-2, 100 steps.
 * Not here: the selection (select.ts), the shared loop (fit.ts).
 */
import { runCoefficientMethod, type MergeRun, type MethodContext } from './fit.ts';
import { subPool } from './pool.ts';
import { selectTopK } from './select.ts';

/** Options of `recycle`. */
export interface RecycleOptions {
  /** How many LoRAs evaluation-based selection keeps (the study: 30). */
  topK?: number;
  lr?: number;
  steps?: number;
}

/** Selects by evaluation and learns leaky-ReLU per-module coefficients from zero; see the file header. */
export async function recycle(ctx: MethodContext, o: RecycleOptions = {}): Promise<MergeRun & { selected: string[] }> {
  const t0 = performance.now();
  const { keep } = await selectTopK(ctx.pool, {
    strategy: 'evaluation',
    k: o.topK ?? 30,
    model: ctx.model,
    train: ctx.data.train,
    batch: ctx.batch,
    seqLen: ctx.seqLen,
  });
  const pool = subPool(ctx.pool, keep);
  const run = await runCoefficientMethod('recycle', { ...ctx, pool }, { granularity: 'module', phi: 'leaky_relu' }, 0, {
    lr: o.lr ?? 5e-2,
    steps: o.steps ?? 100,
  });
  return { ...run, selected: pool.names, seconds: (performance.now() - t0) / 1000 };
}
