/**
 * A whole fine-tuning run from a RunConfig: load the model and tokenizer, tokenise the data, add the adapter, train
 * with the Trainer, and say where everything was written. The CLI's `train` command is a thin shell over this.
 */
import { join } from '../io/host.ts';
import { loadModel, quantizeModel, refuseTrainedHead } from '../models/index.ts';
import { HfTokenizer, fsError, isSystemError, lockFolder } from '../io/index.ts';
import { LorakitError, respell } from '../errors.ts';
import { PeftModel, adaptable, loadAdapter, readAdapterConfig } from '../peft/index.ts';
import { causalLmTask } from './causal-lm.ts';
import { causalLmCalibrator } from './calibrate.ts';
import { train, type TrainResult } from './trainer.ts';
import type { RunConfig } from './config.ts';
import { RUN_CONFIG_NAMES, checkRunData, checkRunModel, checkRunPaths } from './run-checks.ts';
import type { TrainOptions } from './options.ts';
import { noticeSink, SAMPLES_DIR } from './report.ts';
import { loadRunData } from './run-data.ts';

export interface RunOutput {
  result: TrainResult;
  adapterDir: string;
  metricsFile: string;
  plotFile: string;
  checkpointDir: string;
  /** Where the sample generations of each evaluation went (null without sample_prompts). */
  samplesDir: string | null;
  skippedRecords: number;
  warnings: string[];
}

/**
 * Runs the fine-tuning described by `c`. `extra` passes Trainer options the config has no field for (progress,
 * signal, onNotice: data warnings are notices too, reported before training starts). Every value is checked against
 * the paths, the model and the data before anything is written (run-checks.ts); the output folder is locked for the
 * run (a second run on it fails with LK_LOCKED); errors name the run config's keys, and a system error (a full disk,
 * a read-only folder) is a lorakit error naming the path.
 */
export async function runTraining(c: RunConfig, extra: Partial<TrainOptions> = {}): Promise<RunOutput> {
  try {
    return await run(c, extra);
  } catch (e) {
    if (e instanceof LorakitError) throw respell(e, RUN_CONFIG_NAMES);
    throw isSystemError(e) ? fsError(e, undefined, e.path ?? `a file in ${c.output_dir}`) : e; // appends name no path
  }
}

async function run(c: RunConfig, extra: Partial<TrainOptions>): Promise<RunOutput> {
  await checkRunPaths(c);
  const loaded = await loadModel(c.model);
  const model = await quantizeModel(loaded, c.quantize, { head: c.quantize_head, inputs: c.quantize_inputs }).catch(
    async (e) => {
      await loaded.close();
      throw e;
    },
  );
  try {
    checkRunModel(c, model);
    const tokenizer = await HfTokenizer.fromDir(model.dir);
    const data = await loadRunData(c.data, tokenizer, noticeSink(extra));
    checkRunData(c, data);
    const peft = new PeftModel(adaptable(model));
    const t = c.training;
    const calibrate = causalLmCalibrator({
      model,
      train: data.train,
      batchSize: t.per_device_train_batch_size,
      seed: t.seed,
    });
    if (c.adapter.from === undefined) {
      await peft.addAdapter('default', c.adapter, { seed: t.seed, source: 'run config: adapter', calibrate });
    } else {
      const { from, ...extra } = c.adapter;
      if (typeof from !== 'string') {
        throw new LorakitError('LK_CONFIG_INVALID', 'run config: adapter.from must be the path of an adapter folder');
      }
      const configOverrides = await continuingConfig(from, extra);
      await loadAdapter(peft, from, 'default', { configOverrides, seed: t.seed, calibrate });
    }
    const added = peft.get('default');
    refuseTrainedHead(model.quantizedBase, { trainable: added.weights.keys(), saved: added.modules.keys() });
    const task = causalLmTask({
      model,
      peft,
      adapter: 'default',
      train: data.train,
      eval: data.eval,
      batchSize: t.per_device_train_batch_size,
      dataSeed: t.seed,
      baseModelName: c.model,
      ...(t.sample_prompts
        ? {
            samples: {
              tokenizer,
              prompts: t.sample_prompts,
              maxNewTokens: t.sample_max_new_tokens,
              chatTemplate: data.chatTemplate,
            },
          }
        : {}),
    });
    const lock = await lockFolder(c.output_dir, 'a training run', { option: 'output_dir' });
    const result = await train(task, {
      outputDir: c.output_dir,
      steps: t.max_steps,
      epochs: t.max_steps === undefined ? t.num_train_epochs : undefined, // max_steps overrides, as in transformers
      lr: t.learning_rate,
      schedule: t.lr_scheduler_type,
      warmupSteps: t.warmup_steps,
      warmupRatio: t.warmup_ratio,
      gradientAccumulation: t.gradient_accumulation_steps,
      clipNorm: t.max_grad_norm ? t.max_grad_norm : undefined,
      weightDecay: t.weight_decay,
      loraplusLrRatio: t.loraplus_lr_ratio,
      loraplusWeightDecay: t.loraplus_weight_decay,
      evalEvery: data.eval || t.sample_prompts ? t.eval_steps : undefined,
      evalOnStart: t.eval_on_start,
      earlyStoppingPatience: t.early_stopping_patience,
      checkpointEvery: t.save_steps,
      keepCheckpoints: t.save_total_limit,
      seed: t.seed,
      resume: t.resume,
      resumeOverride: t.resume_override,
      logEvery: t.logging_steps,
      ...extra,
    }).finally(() => lock.release());
    return {
      result,
      adapterDir: join(c.output_dir, 'final'),
      metricsFile: join(c.output_dir, 'metrics.jsonl'),
      plotFile: join(c.output_dir, 'loss.svg'),
      checkpointDir: result.checkpoint,
      samplesDir: t.sample_prompts ? join(c.output_dir, SAMPLES_DIR) : null,
      skippedRecords: data.skipped,
      warnings: data.warnings,
    };
  } finally {
    await model.close();
  }
}

/**
 * The settings a run may add to an adapter it continues: keys the folder's adapter_config.json does not hold (a
 * variant's training settings) or holds with the same value. A key with another value is refused, naming both.
 */
async function continuingConfig(from: string, extra: Record<string, unknown>): Promise<Record<string, unknown>> {
  const saved = await readAdapterConfig(from);
  const conflicts = Object.entries(extra)
    .filter(([k, v]) => k in saved && JSON.stringify(saved[k]) !== JSON.stringify(v))
    .map(([k, v]) => `adapter.${k} is ${JSON.stringify(v)} but ${from} has ${JSON.stringify(saved[k])}`);
  if (conflicts.length) {
    throw new LorakitError(
      'LK_CONFIG_INVALID',
      `run config: ${conflicts.join('; ')}; a continued adapter keeps its config: remove these keys or start a new adapter`,
    );
  }
  return extra;
}
