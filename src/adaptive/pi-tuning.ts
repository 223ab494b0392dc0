/**
 * π-Tuning (Wu et al., ICML 2023, arXiv 2304.14381) as the Recycling study configures it: interpolate the selected
 * experts with per-module weights a ⊙ softmax(w) + b (w, a, b trainable; a = 1, b = 0 and equal w at init, so the
 * merge starts as the mean ΔW) and a small learning rate (1e-4, 100 steps). The paper first selects its experts by
 * quasi Fisher-information similarity to the target's expert (the study's "quasi-FIM top-20"): selectTopK's
 * 'quasi-fisher' (similarity.ts), which adaptiveMergeFolders runs before this when given a target LoRA.
 * Not here: the shared loop (fit.ts), the merged forward (coefficients.ts).
 */
import { runCoefficientMethod, type MergeRun, type MethodContext } from './fit.ts';

/** Options of `piTuning`. */
export interface PiTuningOptions {
  lr?: number;
  steps?: number;
}

/** Learns π-Tuning's interpolation weights on ctx.data; see the file header. */
export function piTuning(ctx: MethodContext, o: PiTuningOptions = {}): Promise<MergeRun> {
  return runCoefficientMethod(
    'pi-tuning',
    ctx,
    { granularity: 'module', phi: 'softmax', affine: true },
    1 / Math.sqrt(ctx.pool.names.length),
    { lr: o.lr ?? 1e-4, steps: o.steps ?? 100 },
  );
}
