/**
 * `lorakit train` for a diffusion run (`task: diffusion` in run.yaml): train a UNet2DConditionModel from scratch, or
 * one concept LoRA on a saved one, on digit canvases (digit-canvas.ts) with the noise-prediction task (diffusion.ts).
 * The YAML is validated strictly (an unknown key or a wrong type is an error naming its path); relative paths are
 * resolved against the YAML's folder. Writes output_dir/unet (a diffusers folder with scheduler_config.json) or
 * output_dir/adapter (a PEFT folder), plus the Trainer's checkpoints and metrics.
 * Not here: the causal-LM run config (config.ts), which `lorakit train` reads when `task` is absent.
 */
import { dirname, join, readFileSync, resolve } from '../io/host.ts';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { LorakitError } from '../errors.ts';
import { SafetensorsFile, writeFileAtomic } from '../io/index.ts';
import { Rng } from '../linalg/index.ts';
import {
  initUNetConditionWeights,
  loadUNetCondition,
  memoryUNetCondition,
  noiseSchedule,
  parseUNet2DConditionConfig,
  saveUNetCondition,
} from '../models/index.ts';
import { PeftModel, saveAdapter } from '../peft/index.ts';
import { diffusionTask } from './diffusion.ts';
import { checkedConfig } from './config.ts';
import { digitCanvases, PROMPT_KINDS, promptKindOf, savePromptKind } from './digit-canvas.ts';
import { train, type TrainResult } from './trainer.ts';
import type { TrainOptions } from './options.ts';

const digit = z.number().int().min(0).max(9);

/** The schema of a diffusion run.yaml. */
export const diffusionRunSchema = z.strictObject({
  task: z.literal('diffusion').describe('Selects this schema (a conditional DDPM on digit canvases).'),
  output_dir: z.string().min(1).describe('Run folder: checkpoints, metrics.jsonl, and unet/ or adapter/.'),
  model: z
    .union([
      z.strictObject({
        from: z.string().min(1).describe('A saved UNet2DConditionModel folder: continued, or the base of a LoRA.'),
      }),
      z.strictObject({
        config: z.record(z.string(), z.unknown()).describe("A new U-Net: diffusers' UNet2DConditionModel config."),
        init_seed: z.number().int().default(0).describe("Seed of the new U-Net's initial weights."),
      }),
    ])
    .describe(
      '`{from: DIR}` continues a saved U-Net (or, with `adapter`, trains a LoRA on it); `{config}` starts one.',
    ),
  noise_schedule: z
    .strictObject({
      num_train_timesteps: z.number().int().min(2).default(1000).describe('Training timesteps T of the DDPM.'),
      beta_start: z.number().positive().default(0.0001).describe('β of the first timestep.'),
      beta_end: z.number().positive().default(0.02).describe('β of the last timestep.'),
      beta_schedule: z
        .enum(['linear', 'scaled_linear', 'squaredcos_cap_v2'])
        .default('linear')
        .describe("How β runs from beta_start to beta_end (diffusers' names)."),
    })
    .prefault({})
    .describe("The DDPM noise schedule (diffusers' DDPMScheduler settings)."),
  data: z
    .strictObject({
      digits: z.string().min(1).describe('The digits file (data/digits/digits.safetensors: images and labels).'),
      main: z.array(digit).min(1).describe("Digits of the first slot: the base's digits, or the concept's one."),
      other: z.array(digit).default([]).describe('Digits the other half may hold (empty list: always blank).'),
      empty_probability: z.number().min(0).max(1).default(0.3).describe('Chance that the other half is blank.'),
      count: z.number().int().positive().default(2000).describe('Canvases generated for training.'),
      seed: z.number().int().default(1).describe('Seed of the canvases (which digits, images and halves).'),
      prompt: z
        .enum(PROMPT_KINDS as ['set', 'positional'])
        .optional()
        .describe(
          'set: one-hot tokens, the U-Net picks the halves (cross_attention_dim 12); positional: tokens [left, right] ' +
            "with one-hot positions (cross_attention_dim 14). Default: model.from's saved kind, else set. Saved with " +
            'the U-Net (lorakit_prompt.json), so `lorakit sample` needs no flag.',
        ),
    })
    .describe('Digit canvases (two 8×8 digits side by side) and their two-token prompts.'),
  adapter: z
    .record(z.string(), z.unknown())
    .optional()
    .describe('A PEFT adapter config: train this LoRA on model.from instead of the U-Net itself.'),
  training: z
    .strictObject({
      max_steps: z.number().int().positive().default(300).describe('Optimizer steps.'),
      per_device_train_batch_size: z.number().int().positive().default(32).describe('Canvases per step.'),
      learning_rate: z.number().positive().default(2e-3).describe('Peak AdamW learning rate.'),
      lr_scheduler_type: z
        .enum(['constant', 'linear', 'cosine'])
        .default('cosine')
        .describe('Learning-rate schedule over max_steps.'),
      cond_dropout: z
        .number()
        .min(0)
        .max(1)
        .default(0.1)
        .describe('Chance that a canvas is trained on the null prompt (for classifier-free guidance).'),
      seed: z.number().int().default(42).describe('Seed of the LoRA init, the batches, noise and timesteps.'),
    })
    .prefault({})
    .describe('The noise-prediction training.'),
});

/** A validated diffusion run config with resolved paths. */
export type DiffusionRunConfig = z.output<typeof diffusionRunSchema>;

/** Validates a parsed diffusion run.yaml read from `file`, resolving its paths against the file's folder. */
export function parseDiffusionRun(raw: unknown, file: string): DiffusionRunConfig {
  const c = checkedConfig(diffusionRunSchema, raw, file);
  const base = dirname(resolve(file));
  return {
    ...c,
    output_dir: resolve(base, c.output_dir),
    model: 'from' in c.model ? { from: resolve(base, c.model.from) } : c.model,
    data: { ...c.data, digits: resolve(base, c.data.digits) },
  };
}

/** Reads a diffusion run.yaml. */
export function loadDiffusionRun(file: string): DiffusionRunConfig {
  return parseDiffusionRun(parseYaml(readFileSync(file, 'utf8')), file);
}

/** Runs a diffusion training; returns the Trainer's result and the folder written (unet/ or adapter/). */
export async function runDiffusionTraining(
  c: DiffusionRunConfig,
  extra: Partial<TrainOptions> = {},
): Promise<{ result: TrainResult; outDir: string }> {
  const f = await SafetensorsFile.open(c.data.digits);
  const digits = { images: await f.readAs('images', 'u8'), labels: await f.readAs('labels', 'u8') };
  await f.close();
  const set = digitCanvases(digits, {
    main: c.data.main,
    other: c.data.other,
    emptyProbability: c.data.empty_probability,
    count: c.data.count,
    seed: c.data.seed,
    split: 'train',
  });
  let unet: ReturnType<typeof memoryUNetCondition>;
  let kind = c.data.prompt ?? 'set';
  if ('from' in c.model) {
    const m = await loadUNetCondition(c.model.from);
    // a saved U-Net was trained with one prompt kind; training it (or a LoRA on it) with the other would be silent
    const saved = promptKindOf(c.model.from, m.config.cross_attention_dim);
    if (c.data.prompt !== undefined && c.data.prompt !== saved)
      throw new LorakitError(
        'LK_CONFIG_INVALID',
        `run config: data.prompt is ${c.data.prompt}, but ${c.model.from} was trained with ${saved} prompts`,
        { field: 'data.prompt' },
      );
    kind = saved;
    const w = new Map<string, Float32Array>();
    for (const p of m.parameters()) w.set(p.name, await m.read(p.name));
    await m.close();
    unet = memoryUNetCondition(m.config, w);
  } else {
    const config = parseUNet2DConditionConfig(c.model.config, 'run config: model.config');
    unet = memoryUNetCondition(config, initUNetConditionWeights(config, new Rng(c.model.init_seed)));
  }
  if (c.adapter && !('from' in c.model))
    throw new LorakitError(
      'LK_CONFIG_INVALID',
      'run config: adapter trains a LoRA on a saved U-Net; give model.from (a trained UNet2DConditionModel folder)',
    );
  const schedule = noiseSchedule(c.noise_schedule);
  const t = c.training;
  const peft = c.adapter ? new PeftModel(unet.base()) : undefined;
  if (peft) await peft.addAdapter('default', c.adapter, { seed: t.seed, source: 'run config: adapter' });
  const task = diffusionTask({
    unet,
    schedule,
    train: set,
    batchSize: t.per_device_train_batch_size,
    condDropout: t.cond_dropout,
    peft,
    dataSeed: t.seed,
    prompt: kind,
  });
  const result = await train(task, {
    outputDir: c.output_dir,
    steps: t.max_steps,
    lr: t.learning_rate,
    schedule: t.lr_scheduler_type,
    seed: t.seed,
    ...extra,
  });
  if (peft) {
    peft.setValues('default', result.params);
    const outDir = join(c.output_dir, 'adapter');
    await saveAdapter(peft, 'default', outDir);
    return { result, outDir };
  }
  const outDir = join(c.output_dir, 'unet');
  await saveUNetCondition(outDir, unet.config, result.params);
  const sched = { _class_name: 'DDPMScheduler', ...schedule.config };
  await writeFileAtomic(join(outDir, 'scheduler_config.json'), `${JSON.stringify(sched, null, 2)}\n`);
  await savePromptKind(outDir, kind);
  return { result, outDir };
}
