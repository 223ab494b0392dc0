/**
 * The training phases of scripts/diffusion-compose.ts: the base U-Net on digits 0–4, one concept LoRA per new digit,
 * and the host classifier that judges the samples.
 * Not here: the training task (src/train/diffusion.ts), the measurements (compose.ts).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Rng } from '../../src/linalg/index.ts';
import {
  initUNetConditionWeights,
  memoryUNetCondition,
  noiseSchedule,
  saveUNetCondition,
} from '../../src/models/index.ts';
import { loadAdapter, PeftModel, saveAdapter } from '../../src/peft/index.ts';
import {
  cellAccuracy,
  cellSet,
  diffusionTask,
  digitCanvases,
  PROMPT_KINDS,
  type PromptKind,
  savePromptKind,
  train,
  trainCellClassifier,
} from '../../src/train/index.ts';
import { BASE_DIGITS, digits, LORA, openBase, openFolder, readWeights, unetConfig } from './common.ts';

const quiet = (dir: string) => ({ outputDir: dir, progress: 'none' as const, checkpointEvery: 1e9, plot: false });
const mean = (a: number[]) => a.reduce((x, y) => x + y, 0) / a.length;

/** OUT/base: a fresh U-Net (or DIFF_BASE_FROM continued) on 4,000 canvases of digits 0–4. */
export async function base(out: string) {
  const from = process.env.DIFF_BASE_FROM;
  // a continued base keeps its own prompt kind; a new one takes DIFF_PROMPT (default positional)
  const kind = from
    ? (await openFolder(resolve(from))).kind
    : ((process.env.DIFF_PROMPT ?? 'positional') as PromptKind);
  if (!PROMPT_KINDS.includes(kind)) throw new Error(`DIFF_PROMPT must be set or positional, got ${kind}`);
  const steps = Number(process.env.DIFF_BASE_STEPS ?? 800);
  const lr = Number(process.env.DIFF_BASE_LR ?? 2e-3);
  const batchSize = Number(process.env.DIFF_BASE_BATCH ?? 32);
  const d = await digits();
  const set = digitCanvases(d, {
    main: BASE_DIGITS,
    other: BASE_DIGITS,
    emptyProbability: 0.3,
    count: 4000,
    seed: 1,
    split: 'train',
  });
  const config = unetConfig(kind);
  const weights = from ? await readWeights(resolve(from)) : initUNetConditionWeights(config, new Rng(5));
  const unet = memoryUNetCondition(config, weights);
  console.log(
    'parameters',
    [...weights.values()].reduce((n, v) => n + v.length, 0),
  );
  const tmp = mkdtempSync(join(tmpdir(), 'lk-diff-'));
  const t0 = performance.now();
  const losses: number[] = [];
  const task = diffusionTask({ unet, schedule: noiseSchedule(), train: set, batchSize, prompt: kind });
  const r = await train(task, {
    ...quiet(tmp),
    steps,
    lr,
    schedule: 'cosine',
    seed: 1,
    onStep: (s) => {
      losses.push(s.loss);
      if (s.step % 50 === 0 || s.step <= 3)
        console.log(s.step, s.loss.toFixed(4), ((performance.now() - t0) / 1000).toFixed(0));
    },
  });
  const seconds = (performance.now() - t0) / 1000;
  rmSync(tmp, { recursive: true, force: true });
  await saveUNetCondition(join(out, 'base'), config, r.params);
  await savePromptKind(join(out, 'base'), kind);
  const result = {
    from: from ?? null,
    prompt: kind,
    steps,
    lr,
    batchSize,
    seconds,
    firstLoss: mean(losses.slice(0, 50)),
    lastLoss: mean(losses.slice(-50)),
  };
  writeFileSync(join(out, 'base.json'), `${JSON.stringify(result, null, 2)}\n`);
  console.log(JSON.stringify(result));
}

/** OUT/lora-DIGIT: a LoRA on 1,500 canvases of DIGIT beside a base digit or a blank half (DIFF_CONCEPT_FROM continues). */
export async function concept(out: string, digit: number) {
  const steps = Number(process.env.DIFF_CONCEPT_STEPS ?? 300);
  const d = await digits();
  const set = digitCanvases(d, {
    main: [digit],
    other: BASE_DIGITS,
    emptyProbability: 0.3,
    count: 1500,
    seed: 10 + digit,
    split: 'train',
  });
  const { unet, kind } = await openBase(out);
  const peft = new PeftModel(unet.base());
  const from = process.env.DIFF_CONCEPT_FROM;
  if (from) await loadAdapter(peft, join(resolve(from), `lora-${digit}`), 'default');
  else await peft.addAdapter('default', LORA, { seed: digit });
  const tmp = mkdtempSync(join(tmpdir(), 'lk-diff-'));
  const t0 = performance.now();
  const losses: number[] = [];
  const task = diffusionTask({
    unet,
    schedule: noiseSchedule(),
    train: set,
    batchSize: 32,
    peft,
    dataSeed: digit,
    prompt: kind,
  });
  const r = await train(task, {
    ...quiet(tmp),
    steps,
    lr: 5e-3,
    schedule: 'cosine',
    seed: digit,
    onStep: (s) => {
      losses.push(s.loss);
      if (s.step % 50 === 0) console.log(digit, s.step, s.loss.toFixed(4));
    },
  });
  rmSync(tmp, { recursive: true, force: true });
  peft.setValues('default', r.params);
  await saveAdapter(peft, 'default', join(out, `lora-${digit}`));
  const trainable = [...peft.trainableValues('default').values()].reduce((n, v) => n + v.length, 0);
  const result = {
    digit,
    from: from ?? null,
    prompt: kind,
    steps,
    trainable,
    seconds: (performance.now() - t0) / 1000,
    firstLoss: mean(losses.slice(0, 20)),
    lastLoss: mean(losses.slice(-50)),
  };
  writeFileSync(join(out, `lora-${digit}.json`), `${JSON.stringify(result, null, 2)}\n`);
  console.log(JSON.stringify(result));
}

/** OUT/classifier.json: the host MLP over 8×8 cells (digits and blank), with its held-out accuracy. */
export async function classifier(out: string) {
  const d = await digits();
  const m = trainCellClassifier(cellSet(d, 'train', 1), { seed: 1 });
  const accuracy = cellAccuracy(m, cellSet(d, 'test', 2));
  const json = { hidden: m.hidden, w1: [...m.w1], b1: [...m.b1], w2: [...m.w2], b2: [...m.b2], accuracy };
  writeFileSync(join(out, 'classifier.json'), JSON.stringify(json));
  console.log('held-out cell accuracy', accuracy.toFixed(4));
}
