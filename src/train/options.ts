/**
 * The Trainer's options: one object, checked once, with every default in one place. Names are camelCase here;
 * run configs spell the same settings the transformers/PEFT way (`gradient_accumulation_steps`,
 * `loraplus_lr_ratio`, `max_grad_norm`) and map onto this object. Not here: the loop (`trainer.ts`).
 */
import type { Writable } from 'node:stream';
import { LorakitError, check } from '../errors.ts';
import { adamw, type Optimizer } from '../optim/index.ts';
import type { CompileOptions } from '../runtime/index.ts';
import type { Notice, ProgressMode, StepRecord } from './report.ts';
import type { ScheduleKind } from './schedule.ts';
import type { TrainTask } from './task.ts';

/** Options of `train` / `new Trainer`. Exactly one of `steps` and `epochs` is required, and `lr`. */
export interface TrainOptions {
  /** Folder of the run: checkpoints, `latest`, metrics.jsonl, loss.svg, and the task's `final/` and `best/` artefacts.
   * */
  outputDir: string;
  /** Optimizer steps to take (transformers' max_steps). */
  steps?: number;
  /** Passes over the data; the schedule is sized with the task's `batchesPerEpoch`. */
  epochs?: number;
  /** Base learning rate. */
  lr: number;
  /** lr schedule after warmup (default 'linear', as transformers' Trainer). */
  schedule?: ScheduleKind;
  warmupSteps?: number;
  warmupRatio?: number;
  /** Decay to lr·minLrRatio instead of 0 (linear, cosine). */
  minLrRatio?: number;
  /** Cosine waves (default 0.5). */
  numCycles?: number;
  /** Default AdamW (β 0.9/0.999, ε 1e-8). */
  optimizer?: Optimizer;
  /** Weight decay for groups that set none (default 0). */
  weightDecay?: number;
  /** LoRA+: the lr ratio of "B" groups (task groups with `loraplusB`), PEFT's loraplus_lr_ratio (e.g. 16). */
  loraplusLrRatio?: number;
  /**
   * With loraplusLrRatio: the weight decay of every group that sets none (default 0), replacing weightDecay, as
   * PEFT's create_loraplus_optimizer does with its loraplus_weight_decay.
   */
  loraplusWeightDecay?: number;
  /** Micro-batches per optimizer step (default 1); they are weighted by their loss-term counts. */
  gradientAccumulation?: number;
  /** Clip the global gradient norm to this (default: no clipping). */
  clipNorm?: number;
  /** Evaluate every N optimizer steps and after the last one (needs `task.evaluate` or `task.sample`). */
  evalEvery?: number;
  /** Evaluate once before the first step of a fresh run (transformers' eval_on_start; needs `task.evaluate`). */
  evalOnStart?: boolean;
  /** Stop after this many evaluations without improvement (needs `evalEvery`). */
  earlyStoppingPatience?: number;
  /** An eval loss counts as better only when below best − threshold (default 0). */
  earlyStoppingThreshold?: number;
  /** Write a checkpoint every N optimizer steps (a final one is always written). */
  checkpointEvery?: number;
  /** Keep only the newest K checkpoints (default: all). */
  keepCheckpoints?: number;
  /** Seeds the run's generator (initial params, step inputs); default 42. */
  seed?: number;
  /**
   * `true`: continue from `<outputDir>/latest` if there is one; a path: continue from that checkpoint folder.
   * Without it, an outputDir that already holds checkpoints is refused (nothing is overwritten by accident).
   */
  resume?: boolean | string;
  /**
   * Resume even when a setting exact resume depends on changed since the checkpoint (lr, schedule, accumulation,
   * seed, optimizer, the task's batch size and data; resume.ts); each change is then a warning. Default false: such
   * a resume is refused, naming the settings.
   */
  resumeOverride?: boolean;
  /** Progress output (default 'auto': a bar on a terminal, plain lines otherwise). */
  progress?: ProgressMode;
  /** Where progress goes (default process.stdout). */
  progressStream?: Writable & { isTTY?: boolean };
  /** Plain progress lines every N steps (default 10). */
  logEvery?: number;
  /** Write loss.svg at checkpoints and at the end (default true). */
  plot?: boolean;
  /** Overrides the task's compile options. */
  compile?: CompileOptions;
  /** Stops the run after the current step, with a checkpoint (Ctrl-C in the CLI). */
  signal?: AbortSignal;
  /** Receives notices (resumed from a checkpoint, changed settings); default: the progress stream, see noticeSink. */
  onNotice?: (notice: Notice) => void;
  /** Called after each optimizer step with its record. */
  onStep?: (record: StepRecord) => void | Promise<void>;
}

/** Options after defaults, plus the run's length in optimizer steps. */
export type ResolvedOptions = Required<
  Pick<
    TrainOptions,
    | 'outputDir'
    | 'lr'
    | 'schedule'
    | 'optimizer'
    | 'weightDecay'
    | 'gradientAccumulation'
    | 'earlyStoppingThreshold'
    | 'seed'
    | 'progress'
    | 'logEvery'
    | 'plot'
  >
> &
  TrainOptions & { totalSteps: number };

const positiveInt = (v: unknown) => typeof v === 'number' && Number.isInteger(v) && v > 0;

function optInt(o: TrainOptions, key: keyof TrainOptions): void {
  const v = o[key];
  if (v !== undefined && !positiveInt(v))
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `train: option ${key} must be a positive integer, got ${JSON.stringify(v)}`,
    );
}

/** Checks `options` against `task` and fills in defaults; each error names the option. */
export function resolveOptions(task: TrainTask, options: TrainOptions): ResolvedOptions {
  const o = options;
  check(
    typeof o.outputDir === 'string' && o.outputDir !== '',
    'LK_INVALID_ARGUMENT',
    'train: option outputDir (the run folder) is required',
  );
  check(
    typeof o.lr === 'number' && Number.isFinite(o.lr) && o.lr > 0,
    'LK_INVALID_ARGUMENT',
    `train: option lr must be a positive number, got ${JSON.stringify(o.lr)}`,
  );
  for (const k of [
    'steps',
    'epochs',
    'gradientAccumulation',
    'evalEvery',
    'earlyStoppingPatience',
    'checkpointEvery',
    'keepCheckpoints',
    'logEvery',
  ] as const)
    optInt(o, k);
  if ((o.steps === undefined) === (o.epochs === undefined)) {
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `train: give exactly one of the options steps and epochs (got ${o.steps === undefined ? 'neither' : 'both'})`,
    );
  }
  const k = o.gradientAccumulation ?? 1;
  let totalSteps = o.steps ?? 0;
  if (o.epochs !== undefined) {
    const bpe = task.batchesPerEpoch;
    check(
      bpe !== undefined && positiveInt(bpe),
      'LK_INVALID_ARGUMENT',
      `train: option epochs needs task.batchesPerEpoch (a positive integer) to size the schedule, got ` +
        `${JSON.stringify(bpe)}; or give steps instead`,
    );
    totalSteps = Math.ceil((o.epochs * bpe) / k);
  }
  if (o.clipNorm !== undefined)
    check(
      Number.isFinite(o.clipNorm) && o.clipNorm > 0,
      'LK_INVALID_ARGUMENT',
      `train: option clipNorm must be > 0, got ${o.clipNorm}`,
    );
  if (o.loraplusLrRatio !== undefined)
    check(
      Number.isFinite(o.loraplusLrRatio) && o.loraplusLrRatio > 0,
      'LK_INVALID_ARGUMENT',
      `train: option loraplusLrRatio must be > 0, got ${o.loraplusLrRatio}`,
    );
  const weightDecay = o.weightDecay ?? 0;
  check(
    Number.isFinite(weightDecay) && weightDecay >= 0,
    'LK_INVALID_ARGUMENT',
    `train: option weightDecay must be >= 0, got ${weightDecay}`,
  );
  if (o.loraplusWeightDecay !== undefined) {
    check(
      o.loraplusLrRatio !== undefined && Number.isFinite(o.loraplusWeightDecay) && o.loraplusWeightDecay >= 0,
      'LK_INVALID_ARGUMENT',
      `train: option loraplusWeightDecay (${o.loraplusWeightDecay}) must be >= 0 and goes with loraplusLrRatio`,
    );
  }
  check(
    o.loraplusLrRatio === undefined || weightDecay === 0 || o.loraplusWeightDecay !== undefined,
    'LK_INVALID_ARGUMENT',
    `train: with loraplusLrRatio, weight decay is loraplusWeightDecay (PEFT's loraplus_weight_decay, default 0) and ` +
      `weightDecay ${weightDecay} would be ignored; set loraplusWeightDecay instead`,
  );
  check(
    o.evalEvery === undefined || task.evaluate !== undefined || task.sample !== undefined,
    'LK_INVALID_ARGUMENT',
    'train: option evalEvery needs a task with evaluate() (see lossEvaluator) or sample()',
  );
  check(
    !o.evalOnStart || task.evaluate !== undefined,
    'LK_INVALID_ARGUMENT',
    'train: option evalOnStart needs a task with evaluate() (held-out data to evaluate)',
  );
  check(
    o.earlyStoppingPatience === undefined || o.evalEvery !== undefined,
    'LK_INVALID_ARGUMENT',
    'train: option earlyStoppingPatience needs evalEvery (early stopping watches the eval loss)',
  );
  check(
    o.earlyStoppingPatience === undefined || task.evaluate !== undefined,
    'LK_INVALID_ARGUMENT',
    'train: option earlyStoppingPatience needs a task with evaluate() (early stopping watches the eval loss)',
  );
  const threshold = o.earlyStoppingThreshold ?? 0;
  check(
    Number.isFinite(threshold) && threshold >= 0,
    'LK_INVALID_ARGUMENT',
    `train: option earlyStoppingThreshold must be >= 0, got ${threshold}`,
  );
  const seed = o.seed ?? 42;
  check(Number.isInteger(seed), 'LK_INVALID_ARGUMENT', `train: option seed must be an integer, got ${seed}`);
  check(
    o.progress === undefined || ['auto', 'bar', 'lines', 'none'].includes(o.progress),
    'LK_INVALID_ARGUMENT',
    () => `train: option progress must be "auto", "bar", "lines" or "none", got ${JSON.stringify(o.progress)}`,
  );
  check(
    o.resume === undefined || typeof o.resume === 'boolean' || typeof o.resume === 'string',
    'LK_INVALID_ARGUMENT',
    'train: option resume must be true/false or a checkpoint folder',
  );
  return {
    ...o,
    lr: o.lr,
    outputDir: o.outputDir,
    schedule: o.schedule ?? 'linear',
    optimizer: o.optimizer ?? adamw(),
    weightDecay,
    gradientAccumulation: k,
    earlyStoppingThreshold: threshold,
    seed,
    progress: o.progress ?? 'auto',
    logEvery: o.logEvery ?? 10,
    plot: o.plot ?? true,
    totalSteps,
  };
}
