/**
 * A segmentation run from YAML (`task: segmentation`, what `lorakit train` reads besides causal-LM runs): adapt a
 * diffusers UNet2DModel folder to labelled images with one adapter method at rank r (or full fine-tuning), then write
 * the adapter (or the fine-tuned U-Net folder) and the Dice on held-out images — the SAH-style transfer that
 * scripts/segmentation-transfer.ts runs through the API. The data are safetensors files holding `images` and `masks`,
 * F32 [n, 1, S, S] each (masks 0/1), as `segmentation-transfer.ts export-data` writes them.
 * Not here: the task and Dice (segmentation.ts), the trainer (trainer.ts), the causal-LM run config (config.ts).
 */
import { YAMLParseError, parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { LorakitError } from '../errors.ts';
import { dirname, existsSync, join, readFileSync, resolve, statSync } from '../io/host.ts';
import { SafetensorsFile, writeFileAtomic } from '../io/index.ts';
import { loadUNet, saveUNet } from '../models/index.ts';
import { PeftModel, saveAdapter } from '../peft/index.ts';
import { applySet, checkedConfig } from './config.ts';
import { type SegmentationSet, segmentationDice, segmentationTask } from './segmentation.ts';
import { train } from './trainer.ts';

const positiveInt = z.number().int().positive();

/** The schema of a segmentation run's YAML. */
export const segmentationRunSchema = z.strictObject({
  task: z.literal('segmentation').describe('Selects this schema (binary segmentation with a diffusers U-Net).'),
  base_model: z.string().min(1).describe('A diffusers UNet2DModel folder (config.json + safetensors), 1 → 1 channel.'),
  output_dir: z.string().min(1).describe('Run folder: checkpoints, metrics.jsonl, final/ and result.json.'),
  data: z
    .strictObject({
      train: z.string().min(1).describe('safetensors with `images` and `masks`, F32 [n, 1, S, S] each.'),
      eval: z
        .string()
        .min(1)
        .optional()
        .describe('Held-out images and masks in the same format; Dice is measured on them.'),
    })
    .describe('Images and masks to train and evaluate on.'),
  adapter: z
    .strictObject({
      method: z
        .string()
        .min(1)
        .describe('A registered method that wraps Conv2d/Linear (lora, lora_c, conv_lora, cp_lora, ...) or "full".'),
      r: positiveInt.default(4).describe('Rank (ignored for full).'),
      lora_alpha: z.number().positive().optional().describe('Scale numerator; default 2·r.'),
      target_modules: z
        .array(z.string().min(1))
        .default(['conv1', 'conv2'])
        .describe("Modules to adapt, PEFT's target_modules (default: every resnet's 3×3 convs)."),
    })
    .describe('The adapter trained on the frozen U-Net (or "full": every weight trained).'),
  training: z
    .strictObject({
      steps: positiveInt.default(100).describe('Optimizer steps.'),
      batch_size: positiveInt.default(8).describe('Images per step.'),
      learning_rate: z.number().positive().default(5e-3).describe('Peak AdamW learning rate.'),
      schedule: z
        .enum(['constant', 'linear', 'cosine'])
        .default('cosine')
        .describe('Learning-rate schedule over the steps.'),
      seed: z.number().int().nonnegative().default(1).describe('Seed of the adapter init and the batches.'),
    })
    .default({ steps: 100, batch_size: 8, learning_rate: 5e-3, schedule: 'cosine', seed: 1 })
    .describe('The optimisation (binary cross-entropy on the mask logits).'),
});

/** A parsed segmentation run, paths resolved against the YAML's folder. */
export type SegmentationRunConfig = z.output<typeof segmentationRunSchema>;

function readYaml(file: string): Record<string, unknown> {
  if (!existsSync(file) || statSync(file).isDirectory())
    throw new LorakitError('LK_FILE_NOT_FOUND', `run config ${file} does not exist or is a folder`);
  let raw: unknown;
  try {
    raw = parseYaml(readFileSync(file, 'utf8'));
  } catch (e) {
    const at = e instanceof YAMLParseError && e.linePos ? ` at line ${e.linePos[0].line}` : '';
    throw new LorakitError('LK_FILE_INVALID', `${file}: not valid YAML${at}: ${(e as Error).message.split('\n')[0]}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    throw new LorakitError('LK_CONFIG_INVALID', `${file}: expected a mapping at the top level`);
  return raw as Record<string, unknown>;
}

/** Reads and checks a segmentation run's YAML (with `--set key=value` overrides); paths become absolute. */
export function loadSegmentationConfig(file: string, sets: readonly string[] = []): SegmentationRunConfig {
  const raw = readYaml(file);
  for (const s of sets) applySet(raw, s);
  const c = checkedConfig(segmentationRunSchema, raw, file);
  const base = dirname(resolve(file));
  const at = (p: string) => resolve(base, p);
  return {
    ...c,
    base_model: at(c.base_model),
    output_dir: at(c.output_dir),
    data: { train: at(c.data.train), eval: c.data.eval && at(c.data.eval) },
  };
}

/** Reads `images` and `masks` [n, 1, S, S] from a safetensors file. */
export async function readSegmentationSet(path: string): Promise<SegmentationSet> {
  const f = await SafetensorsFile.open(path);
  try {
    const shape = (name: string) => {
      if (!f.has(name))
        throw new LorakitError(
          'LK_FILE_INVALID',
          `${path}: no tensor '${name}'; a segmentation set holds images, masks`,
        );
      return f.info(name).shape;
    };
    const [si, sm] = [shape('images'), shape('masks')];
    if (si.length !== 4 || si[1] !== 1 || si[2] !== si[3] || si.some((d, i) => d !== sm[i]))
      throw new LorakitError(
        'LK_SHAPE_MISMATCH',
        `${path}: images [${si}] and masks [${sm}] must both be [n, 1, S, S]`,
      );
    return { images: await f.readAs('images', 'f32'), masks: await f.readAs('masks', 'f32'), n: si[0], size: si[2] };
  } finally {
    await f.close();
  }
}

/** What a segmentation run wrote and measured. */
export interface SegmentationRunResult {
  /** The adapter folder (or, for full fine-tuning, the U-Net folder). */
  outputDir: string;
  method: string;
  r: number | null;
  trainable: number;
  steps: number;
  seconds: number;
  /** Mean Dice on data.eval (null without it). */
  dice: number | null;
  resultFile: string;
}

/** Runs a segmentation adaptation as the config says. */
export async function runSegmentation(c: SegmentationRunConfig): Promise<SegmentationRunResult> {
  const unet = await loadUNet(c.base_model);
  try {
    const trainSet = await readSegmentationSet(c.data.train);
    const evalSet = c.data.eval ? await readSegmentationSet(c.data.eval) : null;
    const t = c.training;
    const opts = {
      outputDir: c.output_dir,
      steps: t.steps,
      lr: t.learning_rate,
      schedule: t.schedule,
      seed: t.seed,
      progress: 'none' as const,
      checkpointEvery: t.steps,
      plot: false,
    };
    const common = { unet, train: trainSet, batchSize: Math.min(t.batch_size, trainSet.n), dataSeed: t.seed };
    const finalDir = join(c.output_dir, 'final');
    const t0 = performance.now();
    let trainable: number;
    let dice: number | null = null;
    const method = c.adapter.method;
    if (method === 'full') {
      const r = await train(segmentationTask(common), opts);
      trainable = [...r.params.values()].reduce((n, v) => n + v.length, 0);
      await saveUNet(finalDir, unet.config, r.params);
      if (evalSet) dice = await segmentationDice(unet, evalSet, { weights: r.params });
    } else {
      const peft = new PeftModel(unet.base());
      const a = c.adapter;
      const config = {
        peft_type: method.toUpperCase(),
        r: a.r,
        lora_alpha: a.lora_alpha ?? 2 * a.r,
        target_modules: a.target_modules,
      };
      await peft.addAdapter('default', config, { seed: t.seed, source: 'adapter' });
      const r = await train(segmentationTask({ ...common, peft }), opts);
      peft.setValues('default', r.params);
      trainable = [...peft.trainableValues('default').values()].reduce((n, v) => n + v.length, 0);
      await saveAdapter(peft, 'default', finalDir);
      if (evalSet) dice = await segmentationDice(unet, evalSet, { peft });
    }
    const seconds = (performance.now() - t0) / 1000;
    const result = {
      outputDir: finalDir,
      method,
      r: method === 'full' ? null : c.adapter.r,
      trainable,
      steps: t.steps,
      seconds,
      dice,
      resultFile: join(c.output_dir, 'result.json'),
    };
    await writeFileAtomic(result.resultFile, `${JSON.stringify(result, null, 2)}\n`);
    return result;
  } finally {
    await unet.close();
  }
}
