/**
 * The SAH U-Net paper's setting (arXiv:2508.01772) at small scale: pretrain a U-Net for binary segmentation on a
 * source domain, adapt it to a target domain from a few labelled images, and compare full fine-tuning, PEFT-style
 * conv LoRA and the six conv methods at matched trainable-parameter budgets: Dice on held-out target images,
 * trainable parameters, wall time. Results go to docs/vision.md (by hand, from this script's table).
 *
 * Data: scikit-learn's 8×8 digits (data/digits/digits.safetensors, interop/make_digits_data.py) at their size (the
 * shared 2-core machine allows no more); the mask is the clean digit's foreground (grey > 0.35 of the maximum). Source domain: digits 0–4, the digit
 * bright on dark plus noise. Target domain: digits 5–9, contrast inverted and dimmed, a left-to-right background
 * ramp, more noise — a source model that segments "bright" fails there.
 *
 *   node --import tsx scripts/segmentation-transfer.ts pretrain OUT           # source U-Net → OUT/source
 *   node --import tsx scripts/segmentation-transfer.ts adapt OUT METHOD [seed] # one adaptation → OUT/<method>-<seed>.json
 *     (METHOD: none, full, lora, lora_c, conv_lora, cp_lora, dora_c, conv_dora, cp_dora; NAME@R fixes the rank)
 *   node --import tsx scripts/segmentation-transfer.ts table OUT              # the markdown table of OUT/*.json
 *   node --import tsx scripts/segmentation-transfer.ts export-data OUT        # OUT/target-{train,test}.safetensors
 *     (images and masks [n, 1, 8, 8]: the data of a `task: segmentation` YAML for `lorakit train`, docs/vision.md)
 *
 * Not here: the segmentation task (src/train/segmentation.ts), the methods (src/peft/methods/).
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { SafetensorsFile, writeSafetensors } from '../src/io/index.ts';
import { Rng } from '../src/linalg/index.ts';
import {
  initUNetWeights,
  loadUNet,
  memoryUNet,
  parseUNet2DConfig,
  saveUNet,
  type UNet2DConfig,
} from '../src/models/index.ts';
import { PeftModel } from '../src/peft/index.ts';
import { type SegmentationSet, segmentationDice, segmentationTask, train } from '../src/train/index.ts';

const ROOT = resolve(import.meta.dirname, '..');
const SIZE = 8;

/** The segmentation U-Net: 8 → 4 resolutions, attention at 4×4 (down, up) and in the mid block. */
export const CONFIG: UNet2DConfig = parseUNet2DConfig(
  {
    sample_size: SIZE,
    in_channels: 1,
    out_channels: 1,
    block_out_channels: [16, 32],
    layers_per_block: 1,
    down_block_types: ['DownBlock2D', 'AttnDownBlock2D'],
    up_block_types: ['AttnUpBlock2D', 'UpBlock2D'],
    norm_num_groups: 8,
    attention_head_dim: 8,
  },
  'segmentation-transfer CONFIG',
);

/** The adapted modules: every resnet's 3×3 convolutions (what the SAH paper adapts: the U-Net's conv layers). */
const TARGETS = ['conv1', 'conv2'];
const FEW_SHOT = 24;
const [SOURCE_STEPS, ADAPT_STEPS] = [
  Number(process.env.SEG_SOURCE_STEPS ?? 250),
  Number(process.env.SEG_ADAPT_STEPS ?? 100),
];

/** The two domains' images of the digits `rows`: clean grey c in [0, 1] → the domain's input, and c > 0.35 → mask. */
function makeSet(images: Uint8Array, rows: number[], domain: 'source' | 'target', seed: number): SegmentationSet {
  const per = SIZE * SIZE;
  const set = {
    images: new Float32Array(rows.length * per),
    masks: new Float32Array(rows.length * per),
    n: rows.length,
    size: SIZE,
  };
  const rng = new Rng(seed);
  rows.forEach((row, k) => {
    const clean = Float32Array.from(images.subarray(row * 64, row * 64 + 64), (v) => v / 16); // [8, 8] in [0, 1]
    for (let p = 0; p < per; p++) {
      const c = clean[p];
      set.masks[k * per + p] = c > 0.35 ? 1 : 0;
      const ramp = (p % SIZE) / (SIZE - 1); // 0 at the left edge, 1 at the right
      set.images[k * per + p] =
        domain === 'source' ? c + 0.15 * rng.normal() : 0.3 + 0.4 * ramp - 0.5 * c + 0.2 * rng.normal();
    }
  });
  return set;
}

/** Source train/test, target few-shot train and held-out test. */
async function data() {
  const f = await SafetensorsFile.open(join(ROOT, 'data/digits/digits.safetensors'));
  const [images, labels] = [await f.readAs('images', 'u8'), await f.readAs('labels', 'u8')];
  await f.close();
  const idx = (keep: (d: number) => boolean) => [...labels.keys()].filter((i) => keep(labels[i]));
  const src = idx((d) => d <= 4);
  const tgt = idx((d) => d >= 5);
  const shuffled = (a: number[], seed: number) => {
    const r = new Rng(seed);
    const b = [...a];
    for (let i = b.length - 1; i > 0; i--) {
      const j = Math.floor(r.next() * (i + 1));
      [b[i], b[j]] = [b[j], b[i]];
    }
    return b;
  };
  const [s, t] = [shuffled(src, 1), shuffled(tgt, 2)];
  return {
    sourceTrain: makeSet(images, s.slice(200), 'source', 11),
    sourceTest: makeSet(images, s.slice(0, 200), 'source', 12),
    targetTrain: makeSet(images, t.slice(400, 400 + FEW_SHOT), 'target', 13),
    targetTest: makeSet(images, t.slice(0, 400), 'target', 14),
  };
}

const quiet = (dir: string) => ({ outputDir: dir, progress: 'none' as const, checkpointEvery: 1e9, plot: false });

async function pretrain(out: string) {
  const d = await data();
  const unet = memoryUNet(CONFIG, initUNetWeights(CONFIG, new Rng(5)));
  const tmp = mkdtempSync(join(tmpdir(), 'lk-seg-'));
  const t0 = performance.now();
  const r = await train(segmentationTask({ unet, train: d.sourceTrain, batchSize: 16 }), {
    ...quiet(tmp),
    steps: SOURCE_STEPS,
    lr: 3e-3,
    schedule: 'cosine',
    seed: 1,
  });
  const secs = (performance.now() - t0) / 1000;
  rmSync(tmp, { recursive: true, force: true });
  await saveUNet(join(out, 'source'), CONFIG, r.params);
  const trained = memoryUNet(CONFIG, new Map(r.params));
  const result = {
    steps: SOURCE_STEPS,
    seconds: secs,
    sourceDice: await segmentationDice(trained, d.sourceTest),
    targetDice: await segmentationDice(trained, d.targetTest),
  };
  writeFileSync(join(out, 'source.json'), `${JSON.stringify(result, null, 2)}\n`);
  console.log(JSON.stringify(result));
}

/** Adapter config per method name; `r` is filled by the budget match. */
const METHODS: Record<string, (r: number) => Record<string, unknown>> = {
  lora: (r) => ({ peft_type: 'LORA', r, lora_alpha: 2 * r, target_modules: TARGETS }),
  lora_c: (r) => ({ peft_type: 'LORA_C', r, lora_alpha: 2 * r, target_modules: TARGETS }),
  conv_lora: (r) => ({ peft_type: 'CONV_LORA', r, lora_alpha: 2 * r, target_modules: TARGETS }),
  cp_lora: (r) => ({ peft_type: 'CP_LORA', r, lora_alpha: 2 * r, target_modules: TARGETS }),
  dora_c: (r) => ({ peft_type: 'DORA_C', r, lora_alpha: 2 * r, target_modules: TARGETS }),
  conv_dora: (r) => ({ peft_type: 'CONV_DORA', r, lora_alpha: 2 * r, target_modules: TARGETS }),
  cp_dora: (r) => ({ peft_type: 'CP_DORA', r, lora_alpha: 2 * r, target_modules: TARGETS }),
};
/** The budget: PEFT-style conv LoRA of rank 4 on the targets. */
const BUDGET = { method: 'lora', r: 4 };

async function trainableCount(peft: PeftModel, name: string) {
  return [...peft.trainableValues(name).values()].reduce((n, v) => n + v.length, 0);
}

/** The rank (1..64) whose trainable count is closest to the budget's, for one method. */
async function matchedRank(base: ReturnType<typeof memoryUNet>['base'], method: string, budget: number) {
  let best = { r: 1, count: 0, gap: Infinity };
  for (let r = 1; r <= 64; r++) {
    const peft = new PeftModel(base());
    await peft.addAdapter('x', METHODS[method](r), { seed: 0 });
    const count = await trainableCount(peft, 'x');
    if (Math.abs(count - budget) < best.gap) best = { r, count, gap: Math.abs(count - budget) };
    if (count > budget) break;
  }
  return best;
}

async function adapt(out: string, method: string, seed: number) {
  const d = await data();
  const model = await loadUNet(join(out, 'source'));
  const weights = new Map<string, Float32Array>();
  for (const p of model.parameters()) weights.set(p.name, await model.read(p.name));
  await model.close();
  const unet = memoryUNet(CONFIG, weights);
  const tmp = mkdtempSync(join(tmpdir(), 'lk-seg-'));
  const opts = { ...quiet(tmp), steps: ADAPT_STEPS, seed, schedule: 'cosine' as const };
  let result: Record<string, unknown>;
  const t0 = performance.now();
  if (method === 'none') {
    result = { trainable: 0, dice: await segmentationDice(unet, d.targetTest) };
  } else if (method === 'full') {
    const r = await train(segmentationTask({ unet, train: d.targetTrain, batchSize: 8, dataSeed: seed }), {
      ...opts,
      lr: 1e-3,
    });
    const secs = (performance.now() - t0) / 1000;
    const trainable = [...r.params.values()].reduce((n, v) => n + v.length, 0);
    result = { trainable, seconds: secs, dice: await segmentationDice(unet, d.targetTest, { weights: r.params }) };
  } else {
    const budget = await (async () => {
      const p = new PeftModel(unet.base());
      await p.addAdapter('x', METHODS[BUDGET.method](BUDGET.r), { seed: 0 });
      return trainableCount(p, 'x');
    })();
    // METHOD@R fixes the rank instead of matching the budget (cp_lora@4: the paper's "fewer parameters" point)
    const [name, fixed] = method.split('@');
    const { r } = fixed
      ? { r: Number(fixed) }
      : name === BUDGET.method
        ? { r: BUDGET.r }
        : await matchedRank(unet.base, name, budget);
    const peft = new PeftModel(unet.base());
    await peft.addAdapter('default', METHODS[name](r), { seed });
    const t1 = performance.now();
    const res = await train(segmentationTask({ unet, train: d.targetTrain, batchSize: 8, peft, dataSeed: seed }), {
      ...opts,
      lr: 5e-3,
    });
    const secs = (performance.now() - t1) / 1000;
    peft.setValues('default', res.params);
    result = {
      r,
      trainable: await trainableCount(peft, 'default'),
      seconds: secs,
      dice: await segmentationDice(unet, d.targetTest, { peft }),
    };
  }
  rmSync(tmp, { recursive: true, force: true });
  const row = { method, seed, steps: method === 'none' ? 0 : ADAPT_STEPS, ...result };
  writeFileSync(join(out, `${method}-${seed}.json`), `${JSON.stringify(row, null, 2)}\n`);
  console.log(JSON.stringify(row));
}

function table(out: string) {
  const rows = readdirSync(out)
    .filter((f) => f.endsWith('.json') && f !== 'source.json')
    .map((f) => JSON.parse(readFileSync(join(out, f), 'utf8')));
  const by = new Map<string, typeof rows>();
  for (const r of rows) by.set(r.method, [...(by.get(r.method) ?? []), r]);
  const known = ['none', 'full', 'lora', ...Object.keys(METHODS).filter((m) => m !== 'lora')];
  const order = [...known, ...[...by.keys()].filter((m) => !known.includes(m)).sort()];
  console.log('| method | rank | trainable | target Dice (mean ± sd over seeds) | seeds | train s (mean) |');
  console.log('|---|---|---|---|---|---|');
  for (const m of order) {
    const rs = by.get(m);
    if (!rs) continue;
    const dice = rs.map((r) => r.dice as number);
    const mean = dice.reduce((a, b) => a + b, 0) / dice.length;
    const sd = Math.sqrt(dice.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(dice.length - 1, 1));
    const secs = rs.map((r) => r.seconds ?? 0).reduce((a, b) => a + b, 0) / rs.length;
    console.log(
      `| ${m} | ${rs[0].r ?? '–'} | ${rs[0].trainable} | ${mean.toFixed(3)} ± ${sd.toFixed(3)} | ${rs.length} | ${secs.toFixed(1)} |`,
    );
  }
}

/** The target domain's few-shot training set and held-out test set as safetensors (images, masks). */
async function exportData(out: string) {
  const d = await data();
  for (const [name, set] of [
    ['target-train', d.targetTrain],
    ['target-test', d.targetTest],
  ] as const) {
    const shape = [set.n, 1, set.size, set.size];
    await writeSafetensors(join(out, `${name}.safetensors`), {
      images: { dtype: 'F32', shape, data: set.images },
      masks: { dtype: 'F32', shape, data: set.masks },
    });
  }
  console.log(`wrote ${join(out, 'target-train.safetensors')} and ${join(out, 'target-test.safetensors')}`);
}

const [cmd, out, method, seed] = process.argv.slice(2);
if (cmd === 'pretrain') await pretrain(resolve(out));
else if (cmd === 'adapt') await adapt(resolve(out), method, Number(seed ?? 1));
else if (cmd === 'table') table(resolve(out));
else if (cmd === 'export-data') await exportData(resolve(out));
else console.error('usage: segmentation-transfer.ts pretrain|adapt|table|export-data OUT [METHOD [SEED]]');
