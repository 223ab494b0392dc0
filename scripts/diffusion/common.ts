/**
 * What the phases of scripts/diffusion-compose.ts share: the U-Net and LoRA recipes, the digits, reading saved
 * folders, the judge, and drawing samples of one composition method (src/serve/diffusion-compose.ts) or of CLoRA
 * (src/diffusion/clora.ts) with the prompt kind the base was trained with (read from its folder, never repeated).
 * Not here: the phases (train.ts: base, concepts, classifier; compose.ts: the measurements).
 */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { SafetensorsFile } from '../../src/io/index.ts';
import {
  loadUNetCondition,
  memoryUNetCondition,
  noiseSchedule,
  parseUNet2DConditionConfig,
  sampleDiffusion,
  type UNet2DConditionConfig,
} from '../../src/models/index.ts';
import { clora, passAdapter } from '../../src/diffusion/index.ts';
import { loadAdapter, PeftModel } from '../../src/peft/index.ts';
import {
  COMPOSE_METHODS,
  type CmloraSplit,
  type ComposeMethod,
  cmloraFrequencyOrder,
  sampleComposed,
} from '../../src/serve/index.ts';
import {
  CANVAS,
  CANVAS_TOKENS,
  type CellClassifier,
  canvasPrompt,
  type DigitImages,
  type PromptKind,
  promptKindOf,
  promptStates,
  promptWidth,
} from '../../src/train/index.ts';

export const ROOT = resolve(import.meta.dirname, '../..');

/** The diffusion U-Net: 8×16 → 4×8, cross-attention to the prompt at 4×8 (down, mid, up); ~250k parameters. */
export function unetConfig(kind: PromptKind): UNet2DConditionConfig {
  return parseUNet2DConditionConfig(
    {
      sample_size: [8, 16],
      in_channels: 1,
      out_channels: 1,
      block_out_channels: [16, 32],
      layers_per_block: 1,
      down_block_types: ['DownBlock2D', 'CrossAttnDownBlock2D'],
      up_block_types: ['CrossAttnUpBlock2D', 'UpBlock2D'],
      norm_num_groups: 8,
      cross_attention_dim: promptWidth(kind),
      attention_head_dim: 4,
    },
    'diffusion-compose unetConfig',
  );
}

/** The base's digits; the concepts are new digits. */
export const BASE_DIGITS = [0, 1, 2, 3, 4];
/** The concept LoRAs: rank 4 on the attention projections and the resnets' convolutions. */
export const LORA = {
  peft_type: 'LORA',
  r: 4,
  lora_alpha: 8,
  target_modules: ['to_q', 'to_k', 'to_v', 'to_out.0', 'conv1', 'conv2'],
};
export const CONCEPTS = (process.env.DIFF_CONCEPTS ?? '5,7,9').split(',').map(Number);
/** Every pair of concepts, (5, 7), (5, 9), (7, 9). */
export const PAIRS = CONCEPTS.flatMap((a, i) => CONCEPTS.slice(i + 1).map((b) => [a, b] as const));
export const GUIDANCE = Number(process.env.DIFF_GUIDANCE ?? 3);
export const STEPS = Number(process.env.DIFF_STEPS ?? 50);
/** DIFF_CLIPPED_EPS=0 samples as diffusers' DDIM pipeline does (ε not recomputed from the clipped x̂₀). */
export const CLIPPED_EPS = process.env.DIFF_CLIPPED_EPS !== '0';

export async function digits(): Promise<DigitImages> {
  const f = await SafetensorsFile.open(join(ROOT, 'data/digits/digits.safetensors'));
  const [images, labels] = [await f.readAs('images', 'u8'), await f.readAs('labels', 'u8')];
  await f.close();
  return { images, labels };
}

/** Every weight of a saved U-Net folder. */
export async function readWeights(dir: string) {
  const m = await loadUNetCondition(dir);
  const weights = new Map<string, Float32Array>();
  for (const p of m.parameters()) weights.set(p.name, await m.read(p.name));
  await m.close();
  return weights;
}

export type MemoryUNet = ReturnType<typeof memoryUNetCondition>;

/** A saved U-Net folder read into memory (weights editable, as training needs) with its prompt kind. */
export async function openFolder(dir: string): Promise<{ unet: MemoryUNet; kind: PromptKind }> {
  const m = await loadUNetCondition(dir);
  await m.close();
  const kind = promptKindOf(dir, m.config.cross_attention_dim);
  return { unet: memoryUNetCondition(m.config, await readWeights(dir)), kind };
}

export const openBase = (out: string) => openFolder(join(out, 'base'));

/** The base with every concept LoRA loaded as lora-<digit>. */
export async function withLoras(out: string) {
  const { unet, kind } = await openBase(out);
  const peft = new PeftModel(unet.base());
  for (const c of CONCEPTS) await loadAdapter(peft, join(out, `lora-${c}`), `lora-${c}`);
  return { unet, kind, peft };
}

export function readClassifier(out: string): CellClassifier {
  const j = JSON.parse(readFileSync(join(out, 'classifier.json'), 'utf8'));
  return {
    hidden: j.hidden,
    w1: Float64Array.from(j.w1),
    b1: Float64Array.from(j.b1),
    w2: Float64Array.from(j.w2),
    b2: Float64Array.from(j.b2),
  };
}

/** Samples of one method for prompt [a, b] (positional: a left, b right) with the LoRAs `loras` of `peft`. */
export async function draw(
  m: { unet: MemoryUNet; kind: PromptKind; peft?: PeftModel },
  loras: string[],
  method: ComposeMethod,
  a: number,
  b: number,
  n: number,
  seed: number,
  split?: CmloraSplit,
) {
  const N = CANVAS_TOKENS.null;
  return sampleComposed({
    split,
    unet: m.unet,
    peft: m.peft,
    adapters: loras,
    method,
    schedule: noiseSchedule(),
    batch: n,
    states: promptStates(canvasPrompt(n, a, b), m.kind),
    nullStates: promptStates(canvasPrompt(n, N, N), m.kind),
    sampleShape: [1, CANVAS.height, CANVAS.width],
    guidance: GUIDANCE,
    steps: STEPS,
    sampler: 'ddim',
    seed,
    useClippedModelOutput: CLIPPED_EPS,
  });
}

/**
 * CLoRA's samples for prompt [a, b]: a background pass (the base) and one pass per concept LoRA, every pass on the
 * composed prompt [a, b] (as the official notebook gives each LoRA the full prompt with its own concept token);
 * token 0 forms concept a and token 1 concept b across all three prompts, LoRA a's mask comes from token 0 and LoRA
 * b's from token 1. Guidance is the table's (the same for every method); the other options are the official defaults.
 */
export async function drawClora(
  m: { unet: MemoryUNet; kind: PromptKind; peft: PeftModel },
  a: number,
  b: number,
  n: number,
  seed: number,
) {
  const prompt = promptStates([a, b], m.kind); // [2, width]
  const passes = [
    { states: prompt, adapter: null, maskTokens: [] },
    { states: prompt, adapter: passAdapter(m.peft, `lora-${a}`), maskTokens: [0] },
    { states: prompt, adapter: passAdapter(m.peft, `lora-${b}`), maskTokens: [1] },
  ];
  const concepts = [0, 1].map((token) => [0, 1, 2].map((p) => ({ prompt: p, token })));
  const c = clora({
    unet: m.unet,
    passes,
    concepts,
    uncond: promptStates([CANVAS_TOKENS.null, CANVAS_TOKENS.null], m.kind),
    guidanceScale: GUIDANCE,
    stepSize: Number(process.env.DIFF_CLORA_STEP ?? 20),
  });
  try {
    return await sampleDiffusion({
      schedule: noiseSchedule(),
      predictNoise: c.predictNoise,
      hook: c.hook,
      shape: [n, 1, CANVAS.height, CANVAS.width],
      steps: STEPS,
      sampler: 'ddim',
      seed,
      useClippedModelOutput: CLIPPED_EPS,
    });
  } finally {
    await c.close();
  }
}

/** The table's rows: the four baselines, CMLoRA with its frequency order, CLoRA. */
export const TABLE_METHODS = [...COMPOSE_METHODS, 'cmlora-freq', 'clora'] as const;
export type TableMethod = (typeof TABLE_METHODS)[number];

/** Samples of one table method for the pair [a, b]; `scores` are the LoRAs' amplitude scores (cmlora-freq). */
export async function drawPair(
  m: { unet: MemoryUNet; kind: PromptKind; peft: PeftModel },
  method: TableMethod,
  a: number,
  b: number,
  n: number,
  seed: number,
  scores: Map<number, number>,
) {
  if (method === 'clora') return drawClora(m, a, b, n, seed);
  if (method !== 'cmlora-freq') return draw(m, [`lora-${a}`, `lora-${b}`], method, a, b, n, seed);
  const o = cmloraFrequencyOrder([a, b].map((d) => scores.get(d) ?? 0));
  const ordered = o.order.map((i) => `lora-${[a, b][i]}`);
  return draw(m, ordered, 'cmlora', a, b, n, seed, { highCount: o.highCount });
}
