/**
 * What exact resume depends on. A checkpoint records the settings of the run that wrote it (trainer_state.json
 * `settings`, under transformers' names: learning_rate, lr_scheduler_type, warmup, gradient_accumulation_steps,
 * seed, the optimizer and its hyperparameters, weight_decay, max_grad_norm, LoRA+) and the task's (batch size, data
 * order seed, dataset size). A resumed run compares its own settings with them: a difference means the run would not
 * continue the saved one (another lr from the next step on, other batches behind the saved data position, another
 * update rule), so it is refused naming each key, unless overridden, and then each change is a warning.
 * Deliberately not compared: the run's length (max_steps, epochs: extending a run is what resuming is for; a decaying
 * schedule is re-sized, which a notice says), evaluation, checkpoint and logging cadence, early stopping.
 * Not here: reading and writing checkpoints (checkpoint.ts), the loop (trainer.ts).
 */
import { LorakitError } from '../errors.ts';
import type { TrainerState } from './checkpoint.ts';
import type { ResolvedOptions } from './options.ts';
import type { Notice } from './report.ts';
import type { TrainTask } from './task.ts';

/** Settings by name, as saved in trainer_state.json. */
export type RunSettings = Record<string, string | number | boolean | null>;

/** The Trainer option behind each recorded Trainer setting (named in messages for library users). */
const OPTION_OF: Record<string, string> = {
  learning_rate: 'lr',
  lr_scheduler_type: 'schedule',
  warmup_steps: 'warmupSteps',
  warmup_ratio: 'warmupRatio',
  min_lr_ratio: 'minLrRatio',
  num_cycles: 'numCycles',
  gradient_accumulation_steps: 'gradientAccumulation',
  seed: 'seed',
  optim: 'optimizer',
  optim_args: 'optimizer',
  weight_decay: 'weightDecay',
  max_grad_norm: 'clipNorm',
  loraplus_lr_ratio: 'loraplusLrRatio',
  loraplus_weight_decay: 'loraplusWeightDecay',
};

/** The settings of a run with options `o` training `task` (what a checkpoint records). */
export function runSettings(o: ResolvedOptions, task: TrainTask): RunSettings {
  const args = Object.entries(o.optimizer.settings ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
  // warmup as configured, not resolved: a ratio's step count grows with an extended run, as it should
  const own: RunSettings = {
    learning_rate: o.lr,
    lr_scheduler_type: o.schedule,
    warmup_steps: o.warmupSteps ?? null,
    warmup_ratio: o.warmupRatio ?? null,
    min_lr_ratio: o.minLrRatio ?? null,
    num_cycles: o.numCycles ?? null,
    gradient_accumulation_steps: o.gradientAccumulation,
    seed: o.seed,
    optim: o.optimizer.name,
    optim_args: args,
    weight_decay: o.weightDecay,
    max_grad_norm: o.clipNorm ?? null,
    loraplus_lr_ratio: o.loraplusLrRatio ?? null,
    loraplus_weight_decay: o.loraplusWeightDecay ?? null,
  };
  const clash = Object.keys(task.settings ?? {}).filter((k) => k in own);
  if (clash.length) throw new Error(`internal: task settings ${clash.join(', ')} shadow the Trainer's own`);
  return { ...own, ...task.settings };
}

/** One setting that differs between a checkpoint and the run resuming from it. */
export interface SettingChange {
  key: string;
  saved: unknown;
  now: unknown;
}

/**
 * The settings of `now` that differ from those `state` was saved with. A checkpoint written before settings were
 * recorded has only its schedule to compare (lr and kind).
 */
export function settingChanges(state: TrainerState, now: RunSettings): SettingChange[] {
  const saved: RunSettings = state.settings ?? {
    learning_rate: state.schedule.lr,
    lr_scheduler_type: state.schedule.kind,
  };
  // a key one side lacks (a task that records fewer settings) is not evidence of a change
  return Object.keys(saved)
    .filter((k) => k in now && saved[k] !== now[k])
    .map((key) => ({ key, saved: saved[key], now: now[key] }));
}

const named = (key: string) => (OPTION_OF[key] ? `${key} (${OPTION_OF[key]})` : key);
const describe = (c: SettingChange) =>
  `${named(c.key)}: the checkpoint has ${JSON.stringify(c.saved)}, this run ${JSON.stringify(c.now)}`;

/**
 * Refuses to resume from `dir` when settings changed, naming each; with `override` each change becomes a warning.
 * Called before anything of the run folder is touched.
 */
export function checkResume(
  dir: string,
  changes: readonly SettingChange[],
  override: boolean,
  notify: (n: Notice) => void,
): void {
  if (changes.length === 0) return;
  if (!override) {
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `train: cannot resume exactly from ${dir}: ${changes.map(describe).join('; ')}. Exact resume needs the ` +
        `checkpoint's values: restore them, or resume anyway with resumeOverride (run config: ` +
        `training.resume_override: true)`,
      { checkpoint: dir, keys: changes.map((c) => c.key) },
    );
  }
  for (const c of changes)
    notify({
      level: 'warning',
      message:
        `resuming with a changed setting (resume_override): ${describe(c)}; the run will not equal an ` +
        `uninterrupted one`,
    });
}

/** The notices of a resume: where it continues from, and a run length that changed (the schedule re-sized). */
export function resumeNotices(dir: string, state: TrainerState, o: ResolvedOptions): Notice[] {
  const out: Notice[] = [{ level: 'info', message: `resumed from ${dir} (step ${state.step} of ${o.totalSteps})` }];
  if (state.total_steps !== o.totalSteps) {
    const resized = o.schedule === 'constant' ? '' : `; the ${o.schedule} schedule now spans the new length`;
    out.push({
      level: 'info',
      message: `the run's length changed from ${state.total_steps} to ${o.totalSteps} steps${resized}`,
    });
  }
  return out;
}
