/**
 * Learning-rate schedules: a multiplier λ(step) of the base lr, as transformers' LambdaLR schedules compute it.
 * `step` counts the optimizer steps already taken (0 for the first update), because transformers calls
 * `scheduler.step()` after each `optimizer.step()`: with warmup, the first update runs at lr·0, exactly as there.
 * Formulas mirror transformers/optimization.py line for line (including `max(1, …)` guards and what happens past
 * `totalSteps`); this is not a general scheduler library (no restarts, no polynomial, no plateau).
 */
import { LorakitError, check } from '../errors.ts';

/** The schedule families: transformers' `constant_with_warmup`, `linear` and `cosine` (`cosine_with_min_lr`). */
export type ScheduleKind = 'constant' | 'linear' | 'cosine';

/** Schedule options; warmup is given as steps or as a ratio of `totalSteps`, not both. */
export interface ScheduleOptions {
  kind: ScheduleKind;
  /** Number of optimizer steps the run takes (transformers' num_training_steps). */
  totalSteps: number;
  /** Linear warmup from 0 over this many steps (default 0). */
  warmupSteps?: number;
  /** Warmup as a fraction of totalSteps, rounded up as TrainingArguments.get_warmup_steps does. */
  warmupRatio?: number;
  /** Decay to this fraction of lr instead of 0 (transformers' min_lr_rate; for `linear` lorakit applies it alike). */
  minLrRatio?: number;
  /** Cosine waves over the decay (default 0.5: one half-cosine from 1 down to the minimum). */
  numCycles?: number;
}

/** A resolved schedule; the same options always give the same λ, so a checkpoint only needs the step. */
export interface LrSchedule {
  readonly kind: ScheduleKind;
  readonly totalSteps: number;
  readonly warmupSteps: number;
  readonly minLrRatio: number;
  readonly numCycles: number;
  /** λ(step): the factor applied to the base lr for the update after `step` completed updates. */
  multiplier(step: number): number;
}

/** Warmup steps for a ratio of the run: ⌈totalSteps·ratio⌉ (transformers' TrainingArguments.get_warmup_steps). */
export function warmupStepsFor(totalSteps: number, ratio: number): number {
  return Math.ceil(totalSteps * ratio);
}

/** Resolves and validates schedule options; errors name the option. */
export function makeSchedule(opts: ScheduleOptions): LrSchedule {
  const { kind, totalSteps, minLrRatio = 0, numCycles = 0.5 } = opts;
  check(
    kind === 'constant' || kind === 'linear' || kind === 'cosine',
    'LK_INVALID_ARGUMENT',
    () => `schedule: kind must be "constant", "linear" or "cosine", got ${JSON.stringify(kind)}`,
  );
  check(
    Number.isInteger(totalSteps) && totalSteps > 0,
    'LK_INVALID_ARGUMENT',
    `schedule: totalSteps must be a positive integer, got ${totalSteps}`,
  );
  if (opts.warmupSteps !== undefined && opts.warmupRatio !== undefined) {
    throw new LorakitError('LK_INVALID_ARGUMENT', 'schedule: give warmupSteps or warmupRatio, not both');
  }
  if (opts.warmupRatio !== undefined) {
    check(
      opts.warmupRatio >= 0 && opts.warmupRatio <= 1,
      'LK_INVALID_ARGUMENT',
      `schedule: warmupRatio must be in [0, 1], got ${opts.warmupRatio}`,
    );
  }
  const warmupSteps = opts.warmupSteps ?? warmupStepsFor(totalSteps, opts.warmupRatio ?? 0);
  check(
    Number.isInteger(warmupSteps) && warmupSteps >= 0,
    'LK_INVALID_ARGUMENT',
    `schedule: warmupSteps must be a non-negative integer, got ${warmupSteps}`,
  );
  check(
    minLrRatio >= 0 && minLrRatio <= 1,
    'LK_INVALID_ARGUMENT',
    `schedule: minLrRatio must be in [0, 1], got ${minLrRatio}`,
  );
  check(
    kind !== 'constant' || minLrRatio === 0,
    'LK_INVALID_ARGUMENT',
    `schedule: minLrRatio applies to "linear" and "cosine" decay, not to "constant"`,
  );
  check(
    Number.isFinite(numCycles) && numCycles > 0,
    'LK_INVALID_ARGUMENT',
    `schedule: numCycles must be > 0, got ${numCycles}`,
  );
  check(
    kind === 'cosine' || opts.numCycles === undefined,
    'LK_INVALID_ARGUMENT',
    `schedule: numCycles applies to "cosine" only`,
  );

  const multiplier = (step: number): number => {
    check(
      Number.isInteger(step) && step >= 0,
      'LK_INVALID_ARGUMENT',
      `schedule: step must be a non-negative integer, got ${step}`,
    );
    // All three warm up as float(current_step) / float(max(1, num_warmup_steps)).
    if (step < warmupSteps) return step / Math.max(1, warmupSteps);
    if (kind === 'constant') return 1.0; // _get_constant_schedule_with_warmup_lr_lambda
    if (kind === 'linear') {
      // _get_linear_schedule_with_warmup_lr_lambda; the min-lr blend is lorakit's, the same one cosine uses.
      const f = Math.max(0.0, (totalSteps - step) / Math.max(1, totalSteps - warmupSteps));
      return minLrRatio === 0 ? f : f * (1 - minLrRatio) + minLrRatio;
    }
    // _get_cosine_schedule_with_warmup_lr_lambda (with min_lr_rate, as get_cosine_with_min_lr_schedule_with_warmup)
    const progress = (step - warmupSteps) / Math.max(1, totalSteps - warmupSteps);
    let factor = 0.5 * (1.0 + Math.cos(Math.PI * numCycles * 2.0 * progress));
    factor = factor * (1 - minLrRatio) + minLrRatio;
    return Math.max(0, factor);
  };
  return { kind, totalSteps, warmupSteps, minLrRatio, numCycles, multiplier };
}
