/**
 * Multi-LoRA composition in diffusion at small scale (issue 18, part 3): a conditional DDPM on canvases of two
 * handwritten digits (src/train/digit-canvas.ts), one concept LoRA per new digit, and the composition methods
 * (LoRA Merge, Switch, Composite, CMLoRA; src/serve/diffusion-compose.ts) scored by a digit classifier per half.
 *
 *   node --import tsx scripts/diffusion-compose.ts base OUT              # base U-Net on digits 0–4 → OUT/base
 *   node --import tsx scripts/diffusion-compose.ts concept OUT DIGIT     # concept LoRA of DIGIT → OUT/lora-DIGIT
 *   node --import tsx scripts/diffusion-compose.ts classifier OUT        # the scoring classifier → OUT/classifier
 *   node --import tsx scripts/diffusion-compose.ts table OUT [N]         # compose every pair, N canvases per pair
 *   node --import tsx scripts/diffusion-compose.ts grid OUT PNG          # one row of samples per method
 *
 * Not here: the training task (src/train/diffusion.ts), the sampler (src/models/diffusion-sampler.ts).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { SafetensorsFile } from '../src/io/index.ts';
import { Rng } from '../src/linalg/index.ts';
import {
  initUNetConditionWeights,
  memoryUNetCondition,
  noiseSchedule,
  parseUNet2DConditionConfig,
  saveUNetCondition,
  type UNet2DConditionConfig,
} from '../src/models/index.ts';
import { loadAdapter, PeftModel, saveAdapter } from '../src/peft/index.ts';
import { COMPOSE_METHODS, type ComposeMethod, sampleComposed } from '../src/serve/index.ts';
import {
  CANVAS,
  CANVAS_TOKENS,
  type CellClassifier,
  canvasPrompt,
  cellAccuracy,
  cellSet,
  type DigitImages,
  diffusionTask,
  digitCanvases,
  oneHotStates,
  scoreCanvases,
  train,
  trainCellClassifier,
} from '../src/train/index.ts';
import { loadUNetCondition } from '../src/models/index.ts';
import { canvasGridPng } from '../src/cli/png.ts';

const ROOT = resolve(import.meta.dirname, '..');

/** The diffusion U-Net: 8×16 → 4×8, cross-attention to the one-hot prompt at 4×8 (down, mid, up); ~200k parameters. */
export const CONFIG: UNet2DConditionConfig = parseUNet2DConditionConfig(
  {
    sample_size: [8, 16],
    in_channels: 1,
    out_channels: 1,
    block_out_channels: [16, 32],
    layers_per_block: 1,
    down_block_types: ['DownBlock2D', 'CrossAttnDownBlock2D'],
    up_block_types: ['CrossAttnUpBlock2D', 'UpBlock2D'],
    norm_num_groups: 8,
    cross_attention_dim: CANVAS_TOKENS.vocab,
    attention_head_dim: 4,
  },
  'diffusion-compose CONFIG',
);
/** The base's digits; the concepts are new digits. */
const BASE_DIGITS = [0, 1, 2, 3, 4];
const BASE_STEPS = Number(process.env.DIFF_BASE_STEPS ?? 800);

async function digits(): Promise<DigitImages> {
  const f = await SafetensorsFile.open(join(ROOT, 'data/digits/digits.safetensors'));
  const [images, labels] = [await f.readAs('images', 'u8'), await f.readAs('labels', 'u8')];
  await f.close();
  return { images, labels };
}

const quiet = (dir: string) => ({ outputDir: dir, progress: 'none' as const, checkpointEvery: 1e9, plot: false });

async function base(out: string) {
  const d = await digits();
  const set = digitCanvases(d, {
    main: BASE_DIGITS,
    other: BASE_DIGITS,
    emptyProbability: 0.3,
    count: 4000,
    seed: 1,
    split: 'train',
  });
  const weights = initUNetConditionWeights(CONFIG, new Rng(5));
  const unet = memoryUNetCondition(CONFIG, weights);
  console.log(
    'parameters',
    [...weights.values()].reduce((n, v) => n + v.length, 0),
  );
  const tmp = mkdtempSync(join(tmpdir(), 'lk-diff-'));
  const t0 = performance.now();
  const losses: number[] = [];
  const r = await train(diffusionTask({ unet, schedule: noiseSchedule(), train: set, batchSize: 32 }), {
    ...quiet(tmp),
    steps: BASE_STEPS,
    lr: 2e-3,
    schedule: 'cosine',
    seed: 1,
    onStep: (s) => {
      losses.push(s.loss);
      if (s.step % 50 === 0 || s.step <= 3)
        console.log(s.step, s.loss.toFixed(4), ((performance.now() - t0) / 1000).toFixed(0));
    },
  });
  const secs = (performance.now() - t0) / 1000;
  rmSync(tmp, { recursive: true, force: true });
  await saveUNetCondition(join(out, 'base'), CONFIG, r.params);
  const mean = (a: number[]) => a.reduce((x, y) => x + y, 0) / a.length;
  const result = {
    steps: BASE_STEPS,
    seconds: secs,
    firstLoss: mean(losses.slice(0, 50)),
    lastLoss: mean(losses.slice(-50)),
  };
  writeFileSync(join(out, 'base.json'), `${JSON.stringify(result, null, 2)}\n`);
  console.log(JSON.stringify(result));
}

/** The concept LoRAs: rank 4 on the attention projections and the resnets' convolutions. */
export const LORA = {
  peft_type: 'LORA',
  r: 4,
  lora_alpha: 8,
  target_modules: ['to_q', 'to_k', 'to_v', 'to_out.0', 'conv1', 'conv2'],
};
const CONCEPTS = (process.env.DIFF_CONCEPTS ?? '5,7,9').split(',').map(Number);
const CONCEPT_STEPS = Number(process.env.DIFF_CONCEPT_STEPS ?? 300);

async function openBase(out: string) {
  const m = await loadUNetCondition(join(out, 'base'));
  const weights = new Map<string, Float32Array>();
  for (const p of m.parameters()) weights.set(p.name, await m.read(p.name));
  await m.close();
  return memoryUNetCondition(m.config, weights);
}

async function concept(out: string, digit: number) {
  const d = await digits();
  const set = digitCanvases(d, {
    main: [digit],
    other: BASE_DIGITS,
    emptyProbability: 0.3,
    count: 1500,
    seed: 10 + digit,
    split: 'train',
  });
  const unet = await openBase(out);
  const peft = new PeftModel(unet.base());
  await peft.addAdapter('default', LORA, { seed: digit });
  const tmp = mkdtempSync(join(tmpdir(), 'lk-diff-'));
  const t0 = performance.now();
  const losses: number[] = [];
  const r = await train(
    diffusionTask({ unet, schedule: noiseSchedule(), train: set, batchSize: 32, peft, dataSeed: digit }),
    {
      ...quiet(tmp),
      steps: CONCEPT_STEPS,
      lr: 5e-3,
      schedule: 'cosine',
      seed: digit,
      onStep: (s) => {
        losses.push(s.loss);
        if (s.step % 50 === 0) console.log(digit, s.step, s.loss.toFixed(4));
      },
    },
  );
  rmSync(tmp, { recursive: true, force: true });
  peft.setValues('default', r.params);
  await saveAdapter(peft, 'default', join(out, `lora-${digit}`));
  const mean = (a: number[]) => a.reduce((x, y) => x + y, 0) / a.length;
  const trainable = [...peft.trainableValues('default').values()].reduce((n, v) => n + v.length, 0);
  const result = {
    digit,
    steps: CONCEPT_STEPS,
    trainable,
    seconds: (performance.now() - t0) / 1000,
    firstLoss: mean(losses.slice(0, 20)),
    lastLoss: mean(losses.slice(-50)),
  };
  writeFileSync(join(out, `lora-${digit}.json`), `${JSON.stringify(result, null, 2)}\n`);
  console.log(JSON.stringify(result));
}

async function classifier(out: string) {
  const d = await digits();
  const m = trainCellClassifier(cellSet(d, 'train', 1), { seed: 1 });
  const accuracy = cellAccuracy(m, cellSet(d, 'test', 2));
  const json = { hidden: m.hidden, w1: [...m.w1], b1: [...m.b1], w2: [...m.w2], b2: [...m.b2], accuracy };
  writeFileSync(join(out, 'classifier.json'), JSON.stringify(json));
  console.log('held-out cell accuracy', accuracy.toFixed(4));
}

function readClassifier(out: string): CellClassifier {
  const j = JSON.parse(readFileSync(join(out, 'classifier.json'), 'utf8'));
  return {
    hidden: j.hidden,
    w1: Float64Array.from(j.w1),
    b1: Float64Array.from(j.b1),
    w2: Float64Array.from(j.w2),
    b2: Float64Array.from(j.b2),
  };
}

const GUIDANCE = Number(process.env.DIFF_GUIDANCE ?? 3);
const STEPS = Number(process.env.DIFF_STEPS ?? 50);

/** Samples of one method for prompt {a, b} with the LoRAs `loras` (names lora-<digit>) of `peft`. */
async function draw(
  unet: ReturnType<typeof memoryUNetCondition>,
  peft: PeftModel,
  loras: string[],
  method: ComposeMethod,
  a: number,
  b: number,
  n: number,
  seed: number,
) {
  return sampleComposed({
    unet,
    peft,
    adapters: loras,
    method,
    schedule: noiseSchedule(),
    batch: n,
    states: oneHotStates(canvasPrompt(n, a, b), CANVAS_TOKENS.vocab),
    nullStates: oneHotStates(canvasPrompt(n, CANVAS_TOKENS.null, CANVAS_TOKENS.null), CANVAS_TOKENS.vocab),
    sampleShape: [1, CANVAS.height, CANVAS.width],
    guidance: GUIDANCE,
    steps: STEPS,
    sampler: 'ddim',
    seed,
  });
}

async function withLoras(out: string) {
  const unet = await openBase(out);
  const peft = new PeftModel(unet.base());
  for (const c of CONCEPTS) await loadAdapter(peft, join(out, `lora-${c}`), `lora-${c}`);
  return { unet, peft };
}

async function table(out: string, n: number) {
  const { unet, peft } = await withLoras(out);
  const judge = readClassifier(out);
  const rows: Record<string, unknown>[] = [];
  const log = (r: Record<string, unknown>) => {
    rows.push(r);
    console.log(JSON.stringify(r));
  };
  // single LoRAs (and the base on its own digits): does each concept render at all?
  for (const c of CONCEPTS) {
    const t0 = performance.now();
    const x = await draw(unet, peft, [`lora-${c}`], 'merge', c, CANVAS_TOKENS.empty, n, 1);
    const s = scoreCanvases(judge, x, c, 10);
    log({
      kind: 'single',
      method: `lora-${c}`,
      a: c,
      b: 'empty',
      present: s.a,
      both: s.both,
      seconds: (performance.now() - t0) / 1000,
    });
  }
  const pairs = CONCEPTS.flatMap((a, i) => CONCEPTS.slice(i + 1).map((b) => [a, b]));
  for (const method of COMPOSE_METHODS)
    for (const [a, b] of pairs) {
      const t0 = performance.now();
      const x = await draw(unet, peft, [`lora-${a}`, `lora-${b}`], method, a, b, n, 2);
      const s = scoreCanvases(judge, x, a, b);
      log({
        kind: 'pair',
        method,
        a,
        b,
        presentA: s.a,
        presentB: s.b,
        both: s.both,
        seconds: (performance.now() - t0) / 1000,
      });
    }
  writeFileSync(join(out, 'table.json'), `${JSON.stringify({ n, steps: STEPS, guidance: GUIDANCE, rows }, null, 2)}\n`);
  const mean = (xs: number[]) => xs.reduce((p, q) => p + q, 0) / xs.length;
  console.log(
    `\n| method | A present | B present | both, one per half | s per pair (${n} canvases, ${STEPS} DDIM steps) |`,
  );
  console.log('|---|---|---|---|---|');
  for (const m of COMPOSE_METHODS) {
    const rs = rows.filter((r) => r.method === m) as {
      presentA: number;
      presentB: number;
      both: number;
      seconds: number;
    }[];
    console.log(
      `| ${m} | ${mean(rs.map((r) => r.presentA)).toFixed(3)} | ${mean(rs.map((r) => r.presentB)).toFixed(3)} | ${mean(rs.map((r) => r.both)).toFixed(3)} | ${mean(rs.map((r) => r.seconds)).toFixed(1)} |`,
    );
  }
}

async function grid(out: string, png: string) {
  const { unet, peft } = await withLoras(out);
  const [a, b] = CONCEPTS;
  const rows: Float32Array[] = [];
  for (const method of COMPOSE_METHODS)
    rows.push(await draw(unet, peft, [`lora-${a}`, `lora-${b}`], method, a, b, 8, 3));
  writeFileSync(png, canvasGridPng(rows, { height: CANVAS.height, width: CANVAS.width, scale: 4 }));
  console.log('wrote', png, 'rows:', COMPOSE_METHODS.join(', '));
}

const [cmd, out, arg] = process.argv.slice(2);
if (cmd === 'base') await base(resolve(out));
else if (cmd === 'concept') await concept(resolve(out), Number(arg));
else if (cmd === 'classifier') await classifier(resolve(out));
else if (cmd === 'table') await table(resolve(out), Number(arg ?? 32));
else if (cmd === 'grid') await grid(resolve(out), resolve(arg));
else console.error('usage: diffusion-compose.ts base|concept|classifier|table|grid OUT ...');
