/**
 * A whole fine-tuning run from a RunConfig: load the model and tokenizer, tokenise the data, add the adapter, train
 * with the Trainer, and say where everything was written. The CLI's `train` command is a thin shell over this.
 */
import { join } from 'node:path';
import { loadModel } from '../models/index.ts';
import { HfTokenizer } from '../io/index.ts';
import { PeftModel, adaptable } from '../peft/index.ts';
import { loadDataset } from './data/index.ts';
import { causalLmTask } from './causal-lm.ts';
import { causalLmCalibrator } from './calibrate.ts';
import { train, type TrainResult } from './trainer.ts';
import type { RunConfig } from './config.ts';
import type { TrainOptions } from './options.ts';

export interface RunOutput {
  result: TrainResult;
  adapterDir: string;
  metricsFile: string;
  plotFile: string;
  checkpointDir: string;
  skippedRecords: number;
  warnings: string[];
}

/** Runs the fine-tuning described by `c`. `extra` passes Trainer options the config has no field for (progress,
 * signal). */
export async function runTraining(c: RunConfig, extra: Partial<TrainOptions> = {}): Promise<RunOutput> {
  const model = await loadModel(c.model);
  try {
    const tokenizer = await HfTokenizer.fromDir(model.dir);
    const d = c.data;
    const data = await loadDataset(d.path, {
      tokenizer,
      seqLen: d.seq_len,
      format: d.format,
      fields: d.fields,
      packing: d.packing,
      heldOut: d.held_out,
      onError: d.on_error,
      ...(d.cache_dir !== undefined ? { cacheDir: d.cache_dir } : {}),
    });
    const peft = new PeftModel(adaptable(model));
    const t = c.training;
    const calibrate = causalLmCalibrator({
      model,
      train: data.train,
      batchSize: t.per_device_train_batch_size,
      seed: t.seed,
    });
    await peft.addAdapter('default', c.adapter, { seed: t.seed, source: 'run config: adapter', calibrate });
    const task = causalLmTask({
      model,
      peft,
      adapter: 'default',
      train: data.train,
      eval: data.eval,
      batchSize: t.per_device_train_batch_size,
      dataSeed: t.seed,
      baseModelName: c.model,
    });
    const result = await train(task, {
      outputDir: c.output_dir,
      steps: t.max_steps,
      epochs: t.num_train_epochs,
      lr: t.learning_rate,
      schedule: t.lr_scheduler_type,
      warmupSteps: t.warmup_steps,
      warmupRatio: t.warmup_ratio,
      gradientAccumulation: t.gradient_accumulation_steps,
      clipNorm: t.max_grad_norm,
      weightDecay: t.weight_decay,
      loraplusLrRatio: t.loraplus_lr_ratio,
      evalEvery: data.eval ? t.eval_steps : undefined,
      earlyStoppingPatience: t.early_stopping_patience,
      checkpointEvery: t.save_steps,
      keepCheckpoints: t.save_total_limit,
      seed: t.seed,
      resume: t.resume,
      ...extra,
    });
    return {
      result,
      adapterDir: join(c.output_dir, 'final'),
      metricsFile: join(c.output_dir, 'metrics.jsonl'),
      plotFile: join(c.output_dir, 'loss.svg'),
      checkpointDir: result.checkpoint,
      skippedRecords: data.skipped,
      warnings: data.warnings,
    };
  } finally {
    await model.close();
  }
}
