/**
 * Multi-LoRA composition in diffusion at small scale (issue 18, part 3): a conditional DDPM on canvases of two
 * handwritten digits (src/train/digit-canvas.ts), one concept LoRA per new digit, and the composition methods
 * (LoRA Merge, Switch, Composite, CMLoRA with and without its frequency order; src/serve/diffusion-compose.ts; and
 * CLoRA, src/diffusion/clora.ts) scored by a digit classifier per half.
 *
 *   node --import tsx scripts/diffusion-compose.ts base OUT              # base U-Net on digits 0–4 → OUT/base
 *     (DIFF_BASE_FROM=DIR continues a saved U-Net; DIFF_BASE_STEPS, DIFF_BASE_LR, DIFF_BASE_BATCH)
 *   node --import tsx scripts/diffusion-compose.ts basecheck OUT [N]     # the base's per-half accuracy on 0–4
 *   node --import tsx scripts/diffusion-compose.ts concept OUT DIGIT     # concept LoRA of DIGIT → OUT/lora-DIGIT
 *     (DIFF_CONCEPT_FROM=DIR continues DIR/lora-DIGIT; DIFF_CONCEPT_STEPS)
 *   node --import tsx scripts/diffusion-compose.ts classifier OUT        # the scoring classifier → OUT/classifier
 *   node --import tsx scripts/diffusion-compose.ts singles OUT [N]       # each LoRA alone + its amplitude score
 *   node --import tsx scripts/diffusion-compose.ts table OUT [N]         # every pair per method (DIFF_METHODS=a,b)
 *   node --import tsx scripts/diffusion-compose.ts diagnose OUT [N]      # where each LoRA alone puts its digit
 *   node --import tsx scripts/diffusion-compose.ts report OUT            # the markdown table of OUT/table-*.json
 *   node --import tsx scripts/diffusion-compose.ts grid OUT PNG          # one row of the table's samples per method
 *
 * Not here: the training task (src/train/diffusion.ts), the sampler (src/models/diffusion-sampler.ts).
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { SafetensorsFile } from '../src/io/index.ts';
import { Rng } from '../src/linalg/index.ts';
import {
  initUNetConditionWeights,
  memoryUNetCondition,
  noiseSchedule,
  parseUNet2DConditionConfig,
  sampleDiffusion,
  saveUNetCondition,
  type UNet2DConditionConfig,
} from '../src/models/index.ts';
import { clora, passAdapter } from '../src/diffusion/index.ts';
import { loadAdapter, PeftModel, saveAdapter } from '../src/peft/index.ts';
import {
  COMPOSE_METHODS,
  type CmloraSplit,
  type ComposeMethod,
  cmloraFrequencyOrder,
  cmloraFrequencyScore,
  sampleComposed,
} from '../src/serve/index.ts';
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
const BASE_LR = Number(process.env.DIFF_BASE_LR ?? 2e-3);
const BASE_BATCH = Number(process.env.DIFF_BASE_BATCH ?? 32);

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
  // DIFF_BASE_FROM=DIR continues from a saved U-Net (what users do to train longer); otherwise a fresh init.
  const from = process.env.DIFF_BASE_FROM;
  const weights = from ? await readWeights(resolve(from)) : initUNetConditionWeights(CONFIG, new Rng(5));
  const unet = memoryUNetCondition(CONFIG, weights);
  console.log(
    'parameters',
    [...weights.values()].reduce((n, v) => n + v.length, 0),
  );
  const tmp = mkdtempSync(join(tmpdir(), 'lk-diff-'));
  const t0 = performance.now();
  const losses: number[] = [];
  const r = await train(diffusionTask({ unet, schedule: noiseSchedule(), train: set, batchSize: BASE_BATCH }), {
    ...quiet(tmp),
    steps: BASE_STEPS,
    lr: BASE_LR,
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
    from: from ?? null,
    steps: BASE_STEPS,
    lr: BASE_LR,
    batchSize: BASE_BATCH,
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
  return openFolder(join(out, 'base'));
}

/** A saved U-Net folder read into memory (weights editable, as training needs). */
async function openFolder(dir: string) {
  const m = await loadUNetCondition(dir);
  await m.close();
  return memoryUNetCondition(m.config, await readWeights(dir));
}

/** Every weight of a saved U-Net folder. */
async function readWeights(dir: string) {
  const m = await loadUNetCondition(dir);
  const weights = new Map<string, Float32Array>();
  for (const p of m.parameters()) weights.set(p.name, await m.read(p.name));
  await m.close();
  return weights;
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
  // DIFF_CONCEPT_FROM=DIR continues DIR/lora-DIGIT (e.g. a LoRA of an earlier base this base was continued from)
  const from = process.env.DIFF_CONCEPT_FROM;
  if (from) await loadAdapter(peft, join(resolve(from), `lora-${digit}`), 'default');
  else await peft.addAdapter('default', LORA, { seed: digit });
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
    from: from ?? null,
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
  peft: PeftModel | undefined,
  loras: string[],
  method: ComposeMethod,
  a: number,
  b: number,
  n: number,
  seed: number,
  split?: CmloraSplit,
) {
  return sampleComposed({
    split,
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

/**
 * CLoRA's samples for prompt {a, b}: a background pass (the base) and one pass per concept LoRA, every pass on the
 * composed prompt [a, b] (as the official notebook gives each LoRA the full prompt with its own concept token);
 * token 0 forms concept a and token 1 concept b across all three prompts, LoRA a's mask comes from token 0 and LoRA
 * b's from token 1. Guidance is the table's (the same for every method); the other options are the official defaults.
 */
async function drawClora(
  unet: ReturnType<typeof memoryUNetCondition>,
  peft: PeftModel,
  a: number,
  b: number,
  n: number,
  seed: number,
) {
  const V = CANVAS_TOKENS.vocab;
  const prompt = oneHotStates([a, b], V); // [2, 12]
  const passes = [
    { states: prompt, adapter: null, maskTokens: [] },
    { states: prompt, adapter: passAdapter(peft, `lora-${a}`), maskTokens: [0] },
    { states: prompt, adapter: passAdapter(peft, `lora-${b}`), maskTokens: [1] },
  ];
  const concepts = [0, 1].map((token) => [0, 1, 2].map((p) => ({ prompt: p, token })));
  const c = clora({
    unet,
    passes,
    concepts,
    uncond: oneHotStates([CANVAS_TOKENS.null, CANVAS_TOKENS.null], V),
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
    });
  } finally {
    await c.close();
  }
}

async function withLoras(out: string) {
  const unet = await openBase(out);
  const peft = new PeftModel(unet.base());
  for (const c of CONCEPTS) await loadAdapter(peft, join(out, `lora-${c}`), `lora-${c}`);
  return { unet, peft };
}

/** The table's rows: the four baselines, CMLoRA with its frequency order, CLoRA. */
const TABLE_METHODS = [...COMPOSE_METHODS, 'cmlora-freq', 'clora'] as const;
type TableMethod = (typeof TABLE_METHODS)[number];

/** Samples of one table method for the pair {a, b}; `scores` are the LoRAs' amplitude scores (cmlora-freq). */
async function drawPair(
  unet: ReturnType<typeof memoryUNetCondition>,
  peft: PeftModel,
  method: TableMethod,
  a: number,
  b: number,
  n: number,
  seed: number,
  scores: Map<number, number>,
) {
  if (method === 'clora') return drawClora(unet, peft, a, b, n, seed);
  if (method !== 'cmlora-freq') return draw(unet, peft, [`lora-${a}`, `lora-${b}`], method, a, b, n, seed);
  const o = cmloraFrequencyOrder([a, b].map((d) => scores.get(d) ?? 0));
  const ordered = o.order.map((i) => `lora-${[a, b][i]}`);
  return draw(unet, peft, ordered, 'cmlora', a, b, n, seed, { highCount: o.highCount });
}

/** Each LoRA alone on [digit, empty]: how often its digit shows, and the amplitude score of its samples. */
async function singles(out: string, n: number) {
  const { unet, peft } = await withLoras(out);
  const judge = readClassifier(out);
  const rows = [];
  for (const c of CONCEPTS) {
    const t0 = performance.now();
    const x = await draw(unet, peft, [`lora-${c}`], 'merge', c, CANVAS_TOKENS.empty, n, 1);
    const s = scoreCanvases(judge, x, c, CANVAS_TOKENS.empty);
    const row = {
      lora: c,
      present: s.a,
      asked: s.both,
      frequencyScore: cmloraFrequencyScore(x, [n, 1, CANVAS.height, CANVAS.width]),
      seconds: (performance.now() - t0) / 1000,
    };
    rows.push(row);
    console.log(JSON.stringify(row));
  }
  writeFileSync(join(out, 'singles.json'), `${JSON.stringify({ n, rows }, null, 2)}\n`);
}

/** The pairs of every method in DIFF_METHODS (default all), N canvases each → OUT/table-<methods>.json. */
async function table(out: string, n: number) {
  const methods = (process.env.DIFF_METHODS?.split(',') ?? TABLE_METHODS) as TableMethod[];
  const { unet, peft } = await withLoras(out);
  const judge = readClassifier(out);
  const single = JSON.parse(readFileSync(join(out, 'singles.json'), 'utf8')) as {
    rows: { lora: number; frequencyScore: number }[];
  };
  const scores = new Map(single.rows.map((r) => [r.lora, r.frequencyScore]));
  const rows: Record<string, unknown>[] = [];
  const pairs = CONCEPTS.flatMap((a, i) => CONCEPTS.slice(i + 1).map((b) => [a, b]));
  for (const method of methods)
    for (const [a, b] of pairs) {
      const t0 = performance.now();
      const x = await drawPair(unet, peft, method, a, b, n, 2, scores);
      if (a === pairs[0][0] && b === pairs[0][1]) writeFileSync(join(out, `samples-${method}.f32`), x);
      const s = scoreCanvases(judge, x, a, b);
      const row = {
        method,
        a,
        b,
        presentA: s.a,
        presentB: s.b,
        both: s.both,
        seconds: (performance.now() - t0) / 1000,
      };
      rows.push(row);
      console.log(JSON.stringify(row));
    }
  const file = join(out, `table-${methods.join('+')}.json`);
  writeFileSync(file, `${JSON.stringify({ n, steps: STEPS, guidance: GUIDANCE, rows }, null, 2)}\n`);
}

/** The markdown table from every OUT/table-*.json and OUT/singles.json. */
function report(out: string) {
  const all: { method: string; presentA: number; presentB: number; both: number; seconds: number }[] = [];
  let n = 0;
  for (const f of readdirSync(out).filter((f) => /^table-.*\.json$/.test(f))) {
    const j = JSON.parse(readFileSync(join(out, f), 'utf8'));
    n = j.n;
    all.push(...j.rows);
  }
  const mean = (xs: number[]) => xs.reduce((p, q) => p + q, 0) / xs.length;
  console.log(
    `| method | A present | B present | both, one per half | s per pair (${n} canvases, ${STEPS} DDIM steps) |`,
  );
  console.log('|---|---|---|---|---|');
  for (const m of TABLE_METHODS) {
    const rs = all.filter((r) => r.method === m);
    if (!rs.length) continue;
    const f = (k: 'presentA' | 'presentB' | 'both') => mean(rs.map((r) => r[k])).toFixed(3);
    console.log(
      `| ${m} | ${f('presentA')} | ${f('presentB')} | ${f('both')} | ${mean(rs.map((r) => r.seconds)).toFixed(1)} |`,
    );
  }
  const single = JSON.parse(readFileSync(join(out, 'singles.json'), 'utf8'));
  for (const r of single.rows)
    console.log(
      `lora-${r.lora} alone: present ${r.present.toFixed(3)}, amplitude score ${r.frequencyScore.toFixed(4)}`,
    );
}

/**
 * Why composition fails, per pair {a, b}: each LoRA alone on the composed prompt [a, b] with the pair's seed (the
 * other token is one it never learned); where its digit lands (left, right, neither); how often the two LoRAs put
 * their digits in the same half from the same noise (a Composite average then asks one half for two digits).
 */
async function diagnose(out: string, n: number) {
  const { unet, peft } = await withLoras(out);
  const judge = readClassifier(out);
  const pairs = CONCEPTS.flatMap((a, i) => CONCEPTS.slice(i + 1).map((b) => [a, b]));
  for (const [a, b] of pairs) {
    const side = async (d: number) => {
      const x = await draw(unet, peft, [`lora-${d}`], 'merge', a, b, n, 2);
      return scoreCanvases(judge, x, a, b).classes.map(([l, r]) => (l === d ? 'L' : r === d ? 'R' : '-'));
    };
    const [sa, sb] = [await side(a), await side(b)];
    const shown = (s: string[]) => s.filter((v) => v !== '-').length / n;
    const both = sa.filter((v, i) => v !== '-' && sb[i] !== '-').length;
    const same = sa.filter((v, i) => v !== '-' && v === sb[i]).length;
    console.log(
      JSON.stringify({
        a,
        b,
        [`lora-${a} shows ${a}`]: shown(sa),
        [`lora-${b} shows ${b}`]: shown(sb),
        bothShown: both / n,
        sameHalfWhenBoth: both ? same / both : null,
        sidesA: sa.join(''),
        sidesB: sb.join(''),
      }),
    );
  }
}

/**
 * How well the base draws its own digits: every pair of base digits and every digit beside a blank half, N canvases
 * each; a half is right when the classifier reads the digit asked for (best of the two ways to seat the pair).
 */
async function baseCheck(out: string, n: number) {
  const unet = await openBase(out);
  const judge = readClassifier(out);
  const E = CANVAS_TOKENS.empty;
  const prompts = BASE_DIGITS.flatMap((a, i) => [...BASE_DIGITS.slice(i + 1), E].map((b) => [a, b]));
  let halves = 0;
  let both = 0;
  const t0 = performance.now();
  for (const [a, b] of prompts) {
    const x = await draw(unet, undefined, [], 'merge', a, b, n, 4);
    const s = scoreCanvases(judge, x, a, b);
    const right = s.classes.map(([l, r]) =>
      Math.max((l === a ? 1 : 0) + (r === b ? 1 : 0), (l === b ? 1 : 0) + (r === a ? 1 : 0)),
    );
    halves += right.reduce((p, q) => p + q, 0) / (2 * n);
    both += s.both;
    console.log(
      a,
      b === E ? 'empty' : b,
      'halves',
      (right.reduce((p, q) => p + q, 0) / (2 * n)).toFixed(3),
      'both',
      s.both.toFixed(3),
    );
  }
  const result = {
    prompts: prompts.length,
    n,
    halves: halves / prompts.length,
    both: both / prompts.length,
    seconds: (performance.now() - t0) / 1000,
  };
  writeFileSync(join(out, 'base-check.json'), `${JSON.stringify(result, null, 2)}\n`);
  console.log(JSON.stringify(result));
}

/**
 * One row of samples per table method for the first pair: the first 8 canvases the table drew (OUT/samples-<method>.f32,
 * the same seeds as the numbers), so the picture costs no extra sampling.
 */
function grid(out: string, png: string) {
  const rows: Float32Array[] = [];
  const names: string[] = [];
  const per = CANVAS.height * CANVAS.width;
  for (const m of TABLE_METHODS) {
    const file = join(out, `samples-${m}.f32`);
    if (!existsSync(file)) continue;
    const b = readFileSync(file);
    rows.push(new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + Math.min(b.byteLength, 8 * per * 4))));
    names.push(m);
  }
  writeFileSync(png, canvasGridPng(rows, { height: CANVAS.height, width: CANVAS.width, scale: 4 }));
  console.log('wrote', png, 'rows:', names.join(', '));
}

const [cmd, out, arg] = process.argv.slice(2);
if (cmd === 'base') await base(resolve(out));
else if (cmd === 'concept') await concept(resolve(out), Number(arg));
else if (cmd === 'classifier') await classifier(resolve(out));
else if (cmd === 'singles') await singles(resolve(out), Number(arg ?? 32));
else if (cmd === 'table') await table(resolve(out), Number(arg ?? 32));
else if (cmd === 'report') report(resolve(out));
else if (cmd === 'diagnose') await diagnose(resolve(out), Number(arg ?? 32));
else if (cmd === 'basecheck') await baseCheck(resolve(out), Number(arg ?? 16));
else if (cmd === 'grid') grid(resolve(out), resolve(arg));
else console.error('usage: diffusion-compose.ts base|concept|classifier|table|grid OUT ...');
