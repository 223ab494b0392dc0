/**
 * AdaMerging (Yang et al., ICLR 2024, arXiv 2310.02575) as the Recycling study runs it on LoRAs: the merge
 * coefficients are learned by gradient descent on the target set, task-wise (one coefficient per adapter) or
 * layer-wise (one per adapter and pooled module), with the identity φ and equal-weight init. The original
 * minimises prediction entropy on unlabeled test data; the study (and lorakit) uses the supervised loss of its 100
 * target samples instead. Settings: the study's defaults (lr 5e-2, 100 steps, equal-weight init 1/√n as the
 * study's `equal_weight`).
 * Not here: the shared loop (fit.ts), the merged forward (coefficients.ts).
 */
import { runCoefficientMethod, type MergeRun, type MethodContext } from './fit.ts';

/** Options of `adaMerging`. */
export interface AdaMergingOptions {
  /** 'task': task-wise coefficients; 'module': layer-wise (one per pooled Linear). Default 'task'. */
  granularity?: 'task' | 'module';
  lr?: number;
  steps?: number;
}

/** Learns AdaMerging coefficients on ctx.data; see the file header. */
export function adaMerging(ctx: MethodContext, o: AdaMergingOptions = {}): Promise<MergeRun> {
  const granularity = o.granularity ?? 'task';
  const n = ctx.pool.names.length;
  return runCoefficientMethod(
    `adamerging-${granularity === 'task' ? 'task' : 'layer'}`,
    ctx,
    { granularity, phi: 'linear' },
    1 / Math.sqrt(n),
    { lr: o.lr ?? 5e-2, steps: o.steps ?? 100 },
  );
}
