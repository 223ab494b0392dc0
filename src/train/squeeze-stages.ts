/**
 * LoRA-Squeeze during training (spec methods-b §11): In-Squeeze (rank annealing: the adapter is squeezed to lower
 * ranks at stage boundaries while it trains) and Cont-Squeeze (squeeze once, then a few steps at the target rank) as
 * one mechanism: a run of `max_steps` cut into stages at the given steps; each stage is an ordinary run
 * (`runTraining`) in `<output_dir>/stage-<i>`, and between stages the stage's final adapter is squeezed
 * (peft/squeeze-adapter.ts) into `<output_dir>/stage-<i>/squeezed-r<k>`, which the next stage continues
 * (`adapter: {from}`). A rank change is a new graph shape, so each stage compiles its own step.
 * Choices where the paper gives no number (its In-Squeeze schedule is UNVERIFIED, spec §11): every stage starts a fresh
 * optimizer (the spec's "simplest" policy: Adam moments of the old factors are not rotated into the new ones), and
 * its own lr schedule over its steps (warmup only in the first stage), i.e. warm restarts. `annealingStages` gives a
 * default schedule: halve the rank at evenly spaced steps over the first half of the run.
 * Not here: the compression (peft/squeeze*.ts), the run itself (run.ts).
 */
import { join } from '../io/host.ts';
import { LorakitError, check } from '../errors.ts';
import { loadModel } from '../models/index.ts';
import { PeftModel, adaptable, loadAdapter, squeezeAdapter, type SqueezeReport } from '../peft/index.ts';
import type { RunConfig } from './config.ts';
import type { TrainOptions } from './options.ts';
import { type RunOutput, runTraining } from './run.ts';

/** A stage boundary: after optimizer step `at` (counted over the whole run), squeeze the adapter to `rank`. */
export interface SqueezeStage {
  at: number;
  rank: number;
  /** Keep per layer the smallest rank holding this fraction of Σσ² (at most `rank`). */
  energy?: number;
}

/** One finished stage. */
export interface SqueezeStageResult {
  /** The stage's run folder, its steps, and the rank it trained at (null: the config's own ranks). */
  dir: string;
  steps: number;
  rank: number | null;
  output: RunOutput;
  /** The squeezed adapter the next stage continues (null for the last stage), and what the squeeze kept. */
  squeezed: { dir: string; report: SqueezeReport } | null;
}

/** What `runSqueezeStages` did; the trained adapter is `adapterDir` (the last stage's final/). */
export interface StagedSqueezeOutput {
  stages: SqueezeStageResult[];
  adapterDir: string;
}

/**
 * In-Squeeze's default schedule (UNVERIFIED constants): from `sourceRank` halve the rank at each boundary down to
 * `targetRank` (the last stage is exactly the target), the boundaries evenly spaced over the first `until` (default
 * 0.5) of `steps`.
 */
export function annealingStages(o: { sourceRank: number; targetRank: number; steps: number; until?: number }) {
  const { sourceRank, targetRank, steps, until = 0.5 } = o;
  check(
    Number.isInteger(targetRank) && targetRank >= 1 && targetRank < sourceRank,
    'LK_INVALID_ARGUMENT',
    `annealingStages: targetRank must be an integer in 1..${sourceRank - 1}, got ${targetRank}`,
  );
  const ranks: number[] = [];
  for (let r = Math.floor(sourceRank / 2); r > targetRank; r = Math.floor(r / 2)) ranks.push(r);
  ranks.push(targetRank);
  const span = Math.floor(until * steps);
  check(
    span >= ranks.length && until > 0 && until < 1,
    'LK_INVALID_ARGUMENT',
    `annealingStages: ${ranks.length} rank changes need at least as many steps in the first ${until} of ${steps}`,
  );
  return ranks.map((rank, i): SqueezeStage => ({ at: Math.round(((i + 1) * span) / ranks.length), rank }));
}

/** Checks a stage list against a run of `total` steps: boundaries strictly inside and increasing, ranks decreasing. */
function checkStages(stages: readonly SqueezeStage[], total: number): void {
  check(stages.length > 0, 'LK_INVALID_ARGUMENT', 'squeeze stages: give at least one stage');
  stages.forEach((s, i) => {
    const prev = stages[i - 1];
    check(
      Number.isInteger(s.at) && s.at > (prev?.at ?? 0) && s.at < total,
      'LK_INVALID_ARGUMENT',
      `squeeze stages: stage ${i} is at step ${s.at}; boundaries must be increasing integers in 1..${total - 1}`,
    );
    check(
      Number.isInteger(s.rank) && s.rank >= 1 && (prev === undefined || s.rank < prev.rank),
      'LK_INVALID_ARGUMENT',
      `squeeze stages: stage ${i} has rank ${s.rank}; ranks must be positive integers, each below the one before`,
    );
  });
}

/**
 * Trains `c` in stages, squeezing the adapter at each boundary (In-Squeeze with several stages, Cont-Squeeze with
 * one). `c.training.max_steps` is the total; `extra` goes to every stage's Trainer (progress, signal, ...).
 */
export async function runSqueezeStages(
  c: RunConfig,
  stages: readonly SqueezeStage[],
  extra: Partial<TrainOptions> = {},
): Promise<StagedSqueezeOutput> {
  const total = c.training.max_steps;
  if (total === undefined)
    throw new LorakitError(
      'LK_CONFIG_INVALID',
      'squeeze stages: set training.max_steps (the stage boundaries are steps of the whole run)',
    );
  check(
    !c.training.resume,
    'LK_UNSUPPORTED',
    'squeeze stages: training.resume is not supported; rerun the remaining stages from the last squeezed adapter',
  );
  checkStages(stages, total);
  const done: SqueezeStageResult[] = [];
  const bounds = [0, ...stages.map((s) => s.at), total];
  let from: string | null = null;
  for (let i = 0; i + 1 < bounds.length; i++) {
    const dir = join(c.output_dir, `stage-${i}`);
    const steps = bounds[i + 1] - bounds[i];
    const t = c.training;
    const training =
      i === 0 ? { ...t, max_steps: steps } : { ...t, max_steps: steps, warmup_steps: 0, warmup_ratio: undefined };
    const output = await runTraining(
      { ...c, output_dir: dir, training, adapter: from === null ? c.adapter : { from } },
      extra,
    );
    const next = stages[i];
    let squeezed: SqueezeStageResult['squeezed'] = null;
    if (next) {
      const out = join(dir, `squeezed-r${next.rank}`);
      squeezed = { dir: out, report: await squeezeFolder(c.model, output.adapterDir, out, next) };
      from = out;
    }
    done.push({ dir, steps, rank: i === 0 ? null : stages[i - 1].rank, output, squeezed });
  }
  return { stages: done, adapterDir: done[done.length - 1].output.adapterDir };
}

/** Squeezes the adapter folder `dir` on `modelDir` into `out`. */
async function squeezeFolder(modelDir: string, dir: string, out: string, s: SqueezeStage): Promise<SqueezeReport> {
  const model = await loadModel(modelDir);
  try {
    const peft = new PeftModel(adaptable(model));
    await loadAdapter(peft, dir);
    return await squeezeAdapter(peft, 'default', out, { rank: s.rank, energy: s.energy, baseModel: modelDir });
  } finally {
    await model.close();
  }
}
