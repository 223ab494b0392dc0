/**
 * The usual `TrainTask.evaluate`: the task's own forward graph, compiled once without backward or update, run over
 * a held-out batch stream; the result is the mean loss over all loss terms (batches weighted by `weight`, so a
 * token-level loss averages over tokens, not over batches). Perplexity is exp of that mean.
 */
import { check } from '../errors.ts';
import { compile, type CompileOptions, type Feed, type Session } from '../runtime/index.ts';
import { batchIterator, type BatchStream, type EvalResult, type ParamValues, type TrainTask } from './task.ts';

/** Options of `lossEvaluator`. */
export interface LossEvaluatorOptions {
  /** Feeds every eval batch also gets (e.g. a dropout seed input set to "off"). */
  extraFeeds?: Record<string, Feed>;
  /** Overrides the task's compile options. */
  compile?: CompileOptions;
}

/** Returns an `evaluate(params)` computing the weighted mean loss of `task` over `batches()` (called anew each time).
 * */
export function lossEvaluator(
  task: Pick<TrainTask, 'build' | 'compileOptions'>,
  batches: () => BatchStream,
  opts: LossEvaluatorOptions = {},
): (params: ParamValues) => Promise<EvalResult> {
  let session: Promise<Session> | null = null;
  return async (params) => {
    session ??= (() => {
      const tg = task.build();
      tg.graph.output('loss', tg.loss);
      return compile(tg.graph, opts.compile ?? task.compileOptions);
    })();
    const s = await session;
    const it = batchIterator(batches());
    let sum = 0,
      weight = 0;
    for (let r = await it.next(); !r.done; r = await it.next()) {
      const w = r.value.weight ?? 1;
      const feeds: Record<string, Feed> = { ...r.value.feeds, ...opts.extraFeeds };
      for (const [k, v] of params) feeds[k] = v;
      const out = await s.run(feeds, ['loss']);
      sum += w * Number(out.loss.data[0]);
      weight += w;
    }
    check(weight > 0, 'LK_INVALID_ARGUMENT', 'lossEvaluator: the held-out stream gave no batches');
    return { loss: sum / weight, weight };
  };
}

/** Perplexity of a mean token-level cross-entropy (natural log). */
export function perplexity(loss: number): number {
  return Math.exp(loss);
}
