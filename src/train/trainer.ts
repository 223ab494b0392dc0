/**
 * The training loop, generic over what is trained (a `TrainTask`: an adapter, a small model, a test regression).
 * Per optimizer step: take k micro-batches from the task's resumable stream, set the lr from the schedule, run the
 * compiled step (engine.ts), stop on a non-finite loss, record metrics, evaluate (and write the task's samples),
 * early-stop, checkpoint. Everything a resumed run needs is in the checkpoint (checkpoint.ts), so stopping after step
 * s and resuming gives bit-identical parameters to an uninterrupted run; a resume whose settings differ from the
 * checkpoint's is refused (resume.ts). Nothing here knows about LoRA, tokens or models.
 */
import { basename, dirname, join, mkdir, processId, randomHex, rename, resolve, rm, stat } from '../io/host.ts';
import { LorakitError } from '../errors.ts';
import { Rng } from '../linalg/index.ts';
import {
  checkpointStep,
  latestCheckpoint,
  listCheckpoints,
  setLatest,
  loadCheckpoint,
  pruneCheckpoints,
  removeLeftovers,
  writeCheckpoint,
  type TrainerState,
} from './checkpoint.ts';
import { type EngineOptions, StepEngine, type MicroBatch } from './engine.ts';
import { perplexity } from './eval.ts';
import { resolveOptions, type ResolvedOptions, type TrainOptions } from './options.ts';
import { writeLossPlot } from './plot.ts';
import { MetricsLog, Progress, noticeSink, writeSamples, type StepRecord } from './report.ts';
import { checkResume, resumeNotices, runSettings, settingChanges, type RunSettings } from './resume.ts';
import { makeSchedule, type LrSchedule } from './schedule.ts';
import { batchIterator, type DataPosition, type ParamValues, type TrainBatch, type TrainTask } from './task.ts';

/** Why a run ended. `data_exhausted`: the task's stream ended before `steps` were taken. */
export type StopReason = 'completed' | 'early_stopping' | 'aborted' | 'data_exhausted';

/** What `train` returns. */
export interface TrainResult {
  stopReason: StopReason;
  /** Optimizer steps taken in total (including those before a resume). */
  step: number;
  params: Map<string, Float32Array>;
  /** One record per step (the lines of metrics.jsonl). */
  history: StepRecord[];
  bestEvalLoss: number | null;
  bestStep: number | null;
  /** The held-out loss before the first step (options.evalOnStart on a fresh run), else null. */
  evalOnStartLoss: number | null;
  /** The final checkpoint folder. */
  checkpoint: string;
}

/** Saves `params` with `task.save` into `<outputDir>/<name>`, swapping the folder in only once it is complete. */
async function saveArtefact(task: TrainTask, outputDir: string, name: string, params: ParamValues): Promise<void> {
  if (!task.save) return;
  const tag = `${processId()}-${randomHex(4)}`;
  const tmp = join(outputDir, `.tmp-${name}-${tag}`),
    final = join(outputDir, name),
    old = join(outputDir, `.old-${name}-${tag}`);
  await mkdir(tmp);
  try {
    await task.save(tmp, params);
    const had = await stat(final).then(
      () => true,
      () => false,
    );
    if (had) await rename(final, old);
    await rename(tmp, final);
    if (had) await rm(old, { recursive: true, force: true });
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
}

/** The step-engine settings of resolved Trainer options (what a benchmark needs to build the Trainer's step). */
export function engineOptions(o: ResolvedOptions): EngineOptions {
  return {
    optimizer: o.optimizer,
    accumulation: o.gradientAccumulation,
    clipNorm: o.clipNorm,
    weightDecay: o.weightDecay,
    loraplusLrRatio: o.loraplusLrRatio,
    loraplusWeightDecay: o.loraplusWeightDecay,
    compile: o.compile,
  };
}

/** Trains a task; construct with the task and options, then `run()` once. */
export class Trainer {
  readonly options: ResolvedOptions;
  readonly schedule: LrSchedule;

  constructor(
    readonly task: TrainTask,
    options: TrainOptions,
  ) {
    this.options = resolveOptions(task, options);
    const o = this.options;
    this.schedule = makeSchedule({
      kind: o.schedule,
      totalSteps: o.totalSteps,
      warmupSteps: o.warmupSteps,
      warmupRatio: o.warmupRatio,
      minLrRatio: o.minLrRatio,
      numCycles: o.numCycles,
    });
  }

  /** Runs training to the end (or early stop, abort, exhausted data); throws LK_NON_FINITE on a NaN/inf loss. */
  async run(): Promise<TrainResult> {
    const o = this.options,
      task = this.task;
    await mkdir(o.outputDir, { recursive: true });
    await removeLeftovers(o.outputDir);
    const { dir: resumeDir, moveLatest } = await this.resumeDir();
    const engineOpts = engineOptions(o);
    const notify = noticeSink(o);
    const settings = runSettings(o, task);
    let state: TrainerState, engine: StepEngine, rng: Rng;
    const metrics = new MetricsLog(join(o.outputDir, 'metrics.jsonl'));
    if (resumeDir) {
      engine = await StepEngine.create(task, engineOpts);
      const ck = await loadCheckpoint(resumeDir, { ...engine.shapes(), optimizer: o.optimizer.name });
      checkResume(resumeDir, settingChanges(ck.state, settings), o.resumeOverride ?? false, notify);
      for (const n of resumeNotices(resumeDir, ck.state, o)) notify(n);
      engine.restore(ck.state.step, ck.params, ck.optimizer);
      if (moveLatest) await setLatest(o.outputDir, basename(resumeDir));
      // the options may extend the run; later checkpoints record the settings this run continues with
      state = {
        ...ck.state,
        total_steps: o.totalSteps,
        schedule: this.freshState(engine, settings).schedule,
        settings,
      };
      rng = new Rng(state.rng_state);
    } else {
      rng = new Rng(o.seed);
      engine = await StepEngine.create(task, engineOpts, await task.initialParams(rng));
      state = this.freshState(engine, settings);
    }
    await metrics.reset(state.history);
    try {
      return await this.loop(engine, state, rng, metrics, resumeDir);
    } finally {
      // the step's sessions hold its arena (every activation of a step): a process that trains several adapters in
      // turn (the pool, transfer and adaptive-merge scripts) would otherwise keep one per run (18 GB on SmolLM2)
      await engine.dispose();
    }
  }

  /**
   * The checkpoint to resume from, or null for a fresh run. Resuming from an older checkpoint of this outputDir
   * moves `latest` back to it once it has loaded, so the folders of the abandoned steps are never `latest` while
   * being replaced.
   */
  private async resumeDir(): Promise<{ dir: string | null; moveLatest: boolean }> {
    const o = this.options;
    const latest = await latestCheckpoint(o.outputDir);
    const taken = latest || (await listCheckpoints(o.outputDir)).length > 0;
    if (typeof o.resume === 'string') {
      const dir = resolve(o.resume);
      if (dirname(dir) === resolve(o.outputDir))
        return { dir, moveLatest: (latest && resolve(latest)) !== dir && checkpointStep(basename(dir)) !== null };
      if (taken) {
        throw new LorakitError(
          'LK_INVALID_ARGUMENT',
          `train: option resume names ${o.resume}, outside outputDir ${o.outputDir}, which already holds ` +
            `checkpoints of another run; choose an empty outputDir`,
        );
      }
      return { dir, moveLatest: false };
    }
    if (o.resume) return { dir: latest, moveLatest: false };
    if (taken) {
      throw new LorakitError(
        'LK_INVALID_ARGUMENT',
        `train: ${o.outputDir} already holds checkpoints${latest ? ` (latest: ${latest})` : ''}; pass resume: true ` +
          `to continue that run, or choose another outputDir`,
      );
    }
    return { dir: null, moveLatest: false };
  }

  private freshState(engine: StepEngine, settings: RunSettings): TrainerState {
    const o = this.options,
      s = this.schedule;
    return {
      format: 'lorakit.trainer_state',
      version: 1,
      step: 0,
      total_steps: o.totalSteps,
      position: { epoch: 0, index: 0 },
      rng_state: 0,
      schedule: {
        kind: s.kind,
        lr: o.lr,
        warmup_steps: s.warmupSteps,
        total_steps: s.totalSteps,
        min_lr_ratio: s.minLrRatio,
        num_cycles: s.numCycles,
      },
      best_eval_loss: null,
      best_step: null,
      evals_without_improvement: 0,
      tokens: 0,
      elapsed: 0,
      params: engine.paramNames(),
      optimizer: { name: o.optimizer.name, slots: [...o.optimizer.stateSlots] },
      settings,
      history: [],
    };
  }

  private async checkpoint(engine: StepEngine, state: TrainerState, rng: Rng, elapsed: number): Promise<string> {
    const o = this.options;
    state.rng_state = rng.state;
    state.elapsed = elapsed;
    const shapes = engine.shapes();
    const withShapes = (values: Map<string, Float32Array>, sh: Map<string, number[]>) =>
      new Map([...values].map(([k, v]) => [k, { shape: sh.get(k)!, data: v }]));
    const dir = await writeCheckpoint(
      o.outputDir,
      state,
      withShapes(engine.params(), shapes.params),
      withShapes(engine.optimizerState(), shapes.state),
    );
    if (o.keepCheckpoints !== undefined) await pruneCheckpoints(o.outputDir, o.keepCheckpoints, state.step);
    if (o.plot) await writeLossPlot(join(o.outputDir, 'loss.svg'), state.history);
    return dir;
  }

  /** Pulls up to k batches, stopping at the end of the stream or of the last epoch. */
  private async nextMicroBatches(it: AsyncIterator<TrainBatch>, position: DataPosition): Promise<TrainBatch[]> {
    const out: TrainBatch[] = [];
    let pos = position;
    while (out.length < this.options.gradientAccumulation) {
      if (this.options.epochs !== undefined && pos.epoch >= this.options.epochs) break;
      const r = await it.next();
      if (r.done) break;
      const b = r.value;
      const w = b.weight ?? 1;
      if (
        !(Number.isFinite(w) && w > 0) ||
        !b.next ||
        !Number.isInteger(b.next.epoch) ||
        !Number.isInteger(b.next.index)
      ) {
        throw new LorakitError(
          'LK_INVALID_ARGUMENT',
          `train task: the batch after position {epoch: ${pos.epoch}, index: ${pos.index}} needs weight > 0 and an ` +
            `integer next {epoch, index}, got weight ${w} and next ${JSON.stringify(b.next)}`,
        );
      }
      out.push(b);
      pos = b.next;
    }
    return out;
  }

  private async loop(
    engine: StepEngine,
    state: TrainerState,
    rng: Rng,
    metrics: MetricsLog,
    resumedFrom: string | null,
  ): Promise<TrainResult> {
    const o = this.options,
      task = this.task;
    const t0 = performance.now(),
      elapsed0 = state.elapsed;
    const elapsed = () => elapsed0 + (performance.now() - t0) / 1000;
    const progress = new Progress(o.progress, o.totalSteps, o.progressStream, o.logEvery);
    const it = batchIterator(task.batches(state.position));
    let lastCheckpoint = resumedFrom,
      lastCheckpointStep = resumedFrom ? state.step : -1;
    let stopReason: StopReason = 'completed';
    let evalOnStartLoss: number | null = null;
    progress.start(state.step);
    try {
      // Only on a fresh run: a resumed one was evaluated (if asked) when it started the first time.
      if (o.evalOnStart && state.step === 0 && task.evaluate) {
        evalOnStartLoss = (await task.evaluate(engine.params())).loss;
        if (!Number.isFinite(evalOnStartLoss))
          throw this.nonFinite(`the eval loss before step 1 is ${evalOnStartLoss}`, 0, lastCheckpoint);
        progress.note(
          `eval loss at start ${evalOnStartLoss.toFixed(4)} (ppl ${perplexity(evalOnStartLoss).toFixed(2)})`,
        );
      }
      while (state.step < o.totalSteps) {
        if (o.signal?.aborted) {
          stopReason = 'aborted';
          break;
        }
        const tStep = performance.now();
        const batches = await this.nextMicroBatches(it, state.position);
        if (batches.length === 0) {
          stopReason = o.epochs !== undefined ? 'completed' : 'data_exhausted';
          break;
        }
        const step = state.step + 1;
        const micro: MicroBatch[] = batches.map((b, i) => ({
          feeds: {
            ...b.feeds,
            ...task.stepInputs?.({ step, micro: i, rng, params: engine.params(), state: engine.optimizerState() }),
          },
          weight: b.weight ?? 1,
        }));
        const lr = o.lr * this.schedule.multiplier(state.step);
        const out = await engine.run(micro, lr);
        const badMicro = out.micro.findIndex((l) => !Number.isFinite(l));
        if (badMicro >= 0 || !Number.isFinite(out.loss) || !Number.isFinite(out.grad_norm)) {
          const what =
            badMicro >= 0 || !Number.isFinite(out.loss)
              ? `the loss became ${out.micro[badMicro] ?? out.loss}`
              : `the gradient norm became ${out.grad_norm}`;
          const at = batches.length > 1 ? ` in micro-batch ${Math.max(badMicro, 0) + 1} of ${batches.length}` : '';
          throw this.nonFinite(
            `${what} at step ${step}${at} (data position before the step: epoch ${state.position.epoch}, index ` +
              `${state.position.index})`,
            step,
            lastCheckpoint,
          );
        }
        const tokens = batches.reduce((a, b) => a + (b.tokens ?? b.weight ?? 1), 0);
        state.step = step;
        state.position = batches[batches.length - 1].next;
        state.tokens += tokens;
        const bpe = task.batchesPerEpoch;
        const rec: StepRecord = {
          step,
          ...(bpe ? { epoch: state.position.epoch + state.position.index / bpe } : {}),
          loss: out.loss,
          lr,
          grad_norm: out.grad_norm,
          tokens: state.tokens,
          tokens_per_s: tokens / Math.max((performance.now() - tStep) / 1000, 1e-9),
          elapsed: 0,
          ...out.metrics,
        };
        if (o.evalEvery !== undefined && (step % o.evalEvery === 0 || step === o.totalSteps)) {
          if (task.evaluate && (await this.evaluate(engine, state, rec, lastCheckpoint))) stopReason = 'early_stopping';
          if (task.sample) await writeSamples(o.outputDir, step, await task.sample(engine.params()));
        }
        rec.elapsed = elapsed();
        state.history.push(rec);
        await metrics.append(rec);
        progress.update(rec);
        await o.onStep?.(rec);
        if (o.checkpointEvery !== undefined && step % o.checkpointEvery === 0) {
          lastCheckpoint = await this.checkpoint(engine, state, rng, elapsed());
          lastCheckpointStep = step;
        }
        if (stopReason === 'early_stopping') {
          progress.note(
            `early stopping at step ${step}: no eval improvement in ${state.evals_without_improvement} evaluations ` +
              `(best ${state.best_eval_loss} at step ${state.best_step})`,
          );
          break;
        }
      }
      if (lastCheckpointStep !== state.step) lastCheckpoint = await this.checkpoint(engine, state, rng, elapsed());
      else if (o.plot) await writeLossPlot(join(o.outputDir, 'loss.svg'), state.history);
      await saveArtefact(task, o.outputDir, 'final', engine.params());
    } catch (e) {
      if (o.plot) await writeLossPlot(join(o.outputDir, 'loss.svg'), state.history).catch(() => undefined);
      throw e;
    } finally {
      progress.stop();
      await it.return?.();
    }
    return {
      stopReason,
      step: state.step,
      params: engine.params(),
      history: state.history,
      bestEvalLoss: state.best_eval_loss,
      bestStep: state.best_step,
      evalOnStartLoss,
      checkpoint: lastCheckpoint!,
    };
  }

  /** Evaluates into `rec`, tracks the best eval loss (saving `best/`); returns true when early stopping triggers. */
  private async evaluate(
    engine: StepEngine,
    state: TrainerState,
    rec: StepRecord,
    lastCheckpoint: string | null,
  ): Promise<boolean> {
    const o = this.options;
    const ev = await this.task.evaluate!(engine.params());
    if (!Number.isFinite(ev.loss))
      throw this.nonFinite(`the eval loss became ${ev.loss} at step ${rec.step}`, rec.step, lastCheckpoint);
    rec.eval_loss = ev.loss;
    rec.eval_ppl = perplexity(ev.loss);
    // transformers' EarlyStoppingCallback: better means lower by more than the threshold.
    if (state.best_eval_loss === null || ev.loss < state.best_eval_loss - o.earlyStoppingThreshold) {
      state.best_eval_loss = ev.loss;
      state.best_step = rec.step;
      state.evals_without_improvement = 0;
      await saveArtefact(this.task, o.outputDir, 'best', engine.params());
    } else {
      state.evals_without_improvement++;
    }
    return o.earlyStoppingPatience !== undefined && state.evals_without_improvement >= o.earlyStoppingPatience;
  }

  private nonFinite(what: string, step: number, lastCheckpoint: string | null): LorakitError {
    const keep = lastCheckpoint
      ? `the last good checkpoint is ${lastCheckpoint}`
      : 'no checkpoint was written before it';
    return new LorakitError(
      'LK_NON_FINITE',
      `training stopped: ${what}; ${keep} (resume from it with a lower lr, clipNorm, or the bad batch fixed)`,
      { step, checkpoint: lastCheckpoint },
    );
  }
}

/** Trains `task` with `options` (`new Trainer(task, options).run()`). */
export function train(task: TrainTask, options: TrainOptions): Promise<TrainResult> {
  return new Trainer(task, options).run();
}
