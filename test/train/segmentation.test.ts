// Segmentation on a diffusers-format U-Net (src/train/segmentation.ts): the loss against a float64 host formula; a
// fresh U-Net (torch's default init, checked against its bounds) saved as a diffusers folder reloads to the same
// outputs; a few steps of a conv-family adapter and of full training on a tiny U-Net lower the loss and raise Dice
// on the training images, and Dice is recomputed from the logits on the host.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { Graph } from '../../src/graph/index.ts';
import { Rng } from '../../src/linalg/index.ts';
import { initUNetWeights, loadUNet, memoryUNet, saveUNet, unetModules } from '../../src/models/index.ts';
import { PeftModel } from '../../src/peft/index.ts';
import { compile } from '../../src/runtime/index.ts';
import {
  bceWithLogits,
  type SegmentationSet,
  segmentationDice,
  segmentationLogits,
  segmentationTask,
  train,
} from '../../src/train/index.ts';
import { assertAllclose } from '../helpers.ts';
import { tinyUNetConfig } from '../unet-configs.ts';

// the smallest graph (no attention): test/models/unet.test.ts covers attention
const CONFIG = tinyUNetConfig({ block_out_channels: [4, 8], add_attention: false, norm_num_groups: 2 });

/** 16 images 4×4: a bright square at a random place on noise; the mask is the square. */
function squares(n = 16): SegmentationSet {
  const r = new Rng(3);
  const set = { images: new Float32Array(n * 16), masks: new Float32Array(n * 16), n, size: 4 };
  for (let k = 0; k < n; k++) {
    const [y, x] = [Math.floor(r.next() * 3), Math.floor(r.next() * 3)];
    for (let p = 0; p < 16; p++) {
      const [row, col] = [Math.floor(p / 4), p % 4];
      const on = row >= y && row <= y + 1 && col >= x && col <= x + 1 ? 1 : 0; // the 2×2 square at (y, x)
      set.masks[k * 16 + p] = on;
      set.images[k * 16 + p] = on + 0.2 * r.normal();
    }
  }
  return set;
}

test('bceWithLogits is the mean binary cross-entropy (float64 host formula)', async () => {
  const r = new Rng(1);
  const z = r.normalArray(24, 3);
  const y = Float32Array.from({ length: 24 }, () => (r.next() > 0.5 ? 1 : 0));
  const g = new Graph('bce');
  g.output('l', bceWithLogits(g.input('z', 'f32', [24]), g.input('y', 'f32', [24])));
  const got = (await (await compile(g, { worker: false })).run({ z, y })).l.data[0] as number;
  const want =
    [...z].reduce(
      (s, v, i) => s - (y[i] * Math.log(1 / (1 + Math.exp(-v))) + (1 - y[i]) * Math.log(1 - 1 / (1 + Math.exp(-v)))),
      0,
    ) / 24;
  assert.ok(Math.abs(got - want) < 1e-5, `${got} vs ${want}`);
});

test("a fresh U-Net has torch's default init, and saved as a diffusers folder reloads to the same outputs", async () => {
  const w = initUNetWeights(CONFIG, new Rng(2));
  for (const m of unetModules(CONFIG)) {
    if (m.kind !== 'conv2d') continue;
    const b = 1 / Math.sqrt(m.inChannels * m.kernel[0] * m.kernel[1]);
    const v = w.get(m.weightName)!;
    assert.ok(v.every((x) => Math.abs(x) <= b) && v.some((x) => Math.abs(x) > b / 2), `${m.path} within ±${b}`);
  }
  assert.ok(w.get('conv_norm_out.weight')!.every((x) => x === 1) && w.get('conv_norm_out.bias')!.every((x) => x === 0));
  const dir = mkdtempSync(join(tmpdir(), 'lk-unet-save-'));
  await saveUNet(dir, CONFIG, w);
  const loaded = await loadUNet(dir);
  const set = squares(4);
  const logits = async (unet: Parameters<typeof segmentationDice>[0]) => {
    const g = new Graph('seg');
    g.output('z', segmentationLogits(unet.context(g), g.input('x', 'f32', [4, 1, 4, 4])));
    return (await (await compile(g, { worker: false })).run({ x: set.images })).z.data as Float32Array;
  };
  assertAllclose(await logits(loaded), await logits(memoryUNet(CONFIG, w)), { atol: 0, rtol: 0 });
  await loaded.close();
  rmSync(dir, { recursive: true, force: true });
});

test('training a cp_lora adapter and every weight lowers the loss; Dice equals the host recomputation', async () => {
  const set = squares();
  const unet = memoryUNet(CONFIG, initUNetWeights(CONFIG, new Rng(4)));
  const dir = mkdtempSync(join(tmpdir(), 'lk-seg-'));
  const opts = { outputDir: dir, steps: 8, lr: 1e-2, seed: 1, progress: 'none' as const, plot: false };
  const full = await train(segmentationTask({ unet, train: set, batchSize: 8 }), opts);
  const losses = full.history.map((h) => h.loss);
  assert.ok(losses.at(-1)! < losses[0] * 0.8, `full training: loss ${losses[0]} → ${losses.at(-1)}`);
  const peft = new PeftModel(unet.base());
  await peft.addAdapter('default', { peft_type: 'CP_LORA', r: 3, lora_alpha: 6, target_modules: ['conv1', 'conv2'] });
  const before = await segmentationDice(unet, set, { peft, batchSize: 8 });
  const ad = await train(segmentationTask({ unet, train: set, batchSize: 8, peft }), {
    ...opts,
    outputDir: join(dir, 'a'),
  });
  assert.ok(ad.history.at(-1)!.loss < ad.history[0].loss, 'adapter training lowers the loss');
  peft.setValues('default', ad.params);
  const dice = await segmentationDice(unet, set, { peft, batchSize: 8 });
  // host Dice from the logits
  const g = new Graph('seg');
  const ctx = unet.context(g, { hooks: peft.hooks() });
  g.output('z', segmentationLogits(ctx, g.input('x', 'f32', [16, 1, 4, 4])));
  const z = (await (await compile(g, { worker: false })).run({ x: set.images })).z.data as Float32Array;
  let sum = 0;
  for (let k = 0; k < 16; k++) {
    let [i, p, m] = [0, 0, 0];
    for (let q = k * 16; q < k * 16 + 16; q++) {
      i += (z[q] > 0 ? 1 : 0) * set.masks[q];
      p += z[q] > 0 ? 1 : 0;
      m += set.masks[q];
    }
    sum += p + m ? (2 * i) / (p + m) : 1;
  }
  assert.ok(Math.abs(dice - sum / 16) < 1e-12, `Dice ${dice} vs host ${sum / 16}`);
  assert.ok(dice > before, `Dice ${before} → ${dice}`);
  rmSync(dir, { recursive: true, force: true });
});
