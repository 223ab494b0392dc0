/**
 * The gradient loop the coefficient methods share (AdaMerging, π-Tuning, the study's method): host Adam on the
 * coefficients over the target's training batches, cycled in order, with the validation loss measured every
 * `evalEvery` steps and at the end; the values with the lowest validation loss are returned (the study holds 20 of
 * its 100 target samples out for this choice). With no validation batches the last values are returned.
 * `runCoefficientMethod` wraps it for one method: compile, fit, measure validation and test loss.
 * Not here: the objective (objective.ts), each method's φ, init and learning rate (its own file).
 */
import { LorakitError } from '../errors.ts';
import type { LoadedModel } from '../models/index.ts';
import type { CoefficientSpec } from './coefficients.ts';
import { effectiveCoefficients } from './export.ts';
import { CoefficientObjective, type CoefficientValues, HostAdam, type TokenBatch } from './objective.ts';
import type { RecycledPool } from './pool.ts';

/** Options of `fitCoefficients`. */
export interface FitOptions {
  init: CoefficientValues;
  steps: number;
  lr: number;
  train: readonly TokenBatch[];
  val?: readonly TokenBatch[];
  /** Validation interval in steps (default: steps / 4, at least 1). */
  evalEvery?: number;
  log?: (line: string) => void;
}

/** What a fit returned. */
export interface FitResult {
  values: CoefficientValues;
  /** Training loss of each step. */
  trainLosses: number[];
  /** Validation loss at each check: [step, loss] (step 0 = the initial values). */
  valLosses: [number, number][];
  /** Step of the returned values. */
  bestStep: number;
}

const copy = (v: CoefficientValues): CoefficientValues => ({
  w: v.w.slice(),
  ...(v.a ? { a: v.a.slice() } : {}),
  ...(v.b ? { b: v.b.slice() } : {}),
});

/** Adam on the coefficients; see the file header. */
export async function fitCoefficients(obj: CoefficientObjective, o: FitOptions): Promise<FitResult> {
  if (!Number.isInteger(o.steps) || o.steps < 0 || !(o.lr > 0) || o.train.length === 0)
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `fitCoefficients: need steps ≥ 0, lr > 0 and training batches, got ${o.steps}, ${o.lr}, ${o.train.length}`,
    );
  const v = copy(o.init);
  const params = [v.w, ...(v.a && v.b ? [v.a, v.b] : [])];
  const adam = new HostAdam(o.lr);
  const every = o.evalEvery ?? Math.max(1, Math.floor(o.steps / 4));
  const valLosses: [number, number][] = [];
  let best = { loss: Infinity, step: o.steps, values: v };
  const check = async (step: number) => {
    if (!o.val?.length) return;
    const loss = await obj.loss(v, o.val);
    valLosses.push([step, loss]);
    if (loss < best.loss) best = { loss, step, values: copy(v) };
    o.log?.(`step ${step}: validation ${loss.toFixed(4)}`);
  };
  await check(0);
  const trainLosses: number[] = [];
  for (let s = 0; s < o.steps; s++) {
    const { loss, grad } = await obj.lossAndGrad(v, o.train[s % o.train.length]);
    trainLosses.push(loss);
    adam.step(params, [grad.w, ...(grad.a && grad.b ? [grad.a, grad.b] : [])]);
    if ((s + 1) % every === 0 || s + 1 === o.steps) await check(s + 1);
  }
  if (!o.val?.length) best = { loss: Infinity, step: o.steps, values: v };
  return { values: best.values, trainLosses, valLosses, bestStep: best.step };
}

/** The target task of an adaptive merge: training, validation and (optionally) held-out test batches. */
export interface TargetSet {
  train: readonly TokenBatch[];
  val: readonly TokenBatch[];
  test?: readonly TokenBatch[];
}

/** What every method gets: the base model, the pool, the target set and the batch shape of its batches. */
export interface MethodContext {
  model: LoadedModel;
  pool: RecycledPool;
  data: TargetSet;
  batch: number;
  seqLen: number;
  log?: (line: string) => void;
}

/** The outcome of one adaptive merge. */
export interface MergeRun {
  method: string;
  /** The pool the coefficients apply to (after selection; LoraHub's one merged adapter). */
  pool: RecycledPool;
  spec: CoefficientSpec;
  values: CoefficientValues;
  /** Effective coefficients per pooled module, c [M][n]. */
  coefficients: number[][];
  trainLosses: number[];
  /** Validation and test loss of the returned values (nats per token). */
  valLoss: number;
  testLoss: number | null;
  seconds: number;
}

/** Compiles the objective, fits by Adam (fitCoefficients) and measures the result: the gradient methods' body. */
export async function runCoefficientMethod(
  method: string,
  ctx: MethodContext,
  spec: CoefficientSpec,
  init: number,
  o: { lr: number; steps: number },
): Promise<MergeRun> {
  const t0 = performance.now();
  const obj = await CoefficientObjective.create({
    model: ctx.model,
    pool: ctx.pool,
    spec,
    batch: ctx.batch,
    seqLen: ctx.seqLen,
  });
  try {
    const fit = await fitCoefficients(obj, {
      init: obj.values(init),
      steps: o.steps,
      lr: o.lr,
      train: ctx.data.train,
      val: ctx.data.val,
      log: ctx.log,
    });
    const valLoss = await obj.loss(fit.values, ctx.data.val);
    const testLoss = ctx.data.test ? await obj.loss(fit.values, ctx.data.test) : null;
    return {
      method,
      pool: ctx.pool,
      spec,
      values: fit.values,
      coefficients: effectiveCoefficients(ctx.pool, spec, fit.values),
      trainLosses: fit.trainLosses,
      valLoss,
      testLoss,
      seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    await obj.dispose();
  }
}
