// `lorakit train --config seg.yaml` with `task: segmentation`, through the CLI entry: a tiny diffusers UNet2DModel
// folder adapted on real digits (scikit-learn's, data/digits) with LoRA-C writes an adapter folder whose reloaded
// adapter gives the Dice the run printed; full fine-tuning writes a U-Net folder; --print-config resolves paths and
// defaults; a bad key is refused naming it; --help describes the segmentation keys.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { parse as parseYaml } from 'yaml';
import { SafetensorsFile, writeSafetensors } from '../../src/io/index.ts';
import { Rng } from '../../src/linalg/index.ts';
import { initUNetWeights, loadUNet, saveUNet } from '../../src/models/index.ts';
import { PeftModel, loadAdapter } from '../../src/peft/index.ts';
import { segmentationDice, readSegmentationSet } from '../../src/train/index.ts';
import { tinyUNetConfig } from '../unet-configs.ts';

const root = new URL('../../', import.meta.url).pathname;
const cli = (...args: string[]) =>
  spawnSync(process.execPath, [join(root, 'bin/lorakit.mjs'), 'train', ...args], { encoding: 'utf8' });

/** A random 1→1-channel U-Net folder and train/eval sets of digits (mask: grey > 0.35 of the maximum). */
async function setup() {
  const dir = mkdtempSync(join(tmpdir(), 'lk-seg-cli-'));
  const config = tinyUNetConfig({
    sample_size: 8,
    down_block_types: ['DownBlock2D', 'AttnDownBlock2D'],
    up_block_types: ['AttnUpBlock2D', 'UpBlock2D'],
    attention_head_dim: 4,
  });
  await saveUNet(join(dir, 'base'), config, initUNetWeights(config, new Rng(3)));
  const f = await SafetensorsFile.open(join(root, 'data/digits/digits.safetensors'));
  const images = await f.readAs('images', 'u8');
  await f.close();
  const write = async (name: string, from: number, n: number) => {
    const x = Float32Array.from(images.subarray(from * 64, (from + n) * 64), (v) => v / 16);
    const y = x.map((v) => (v > 0.35 ? 1 : 0));
    const shape = [n, 1, 8, 8];
    await writeSafetensors(join(dir, name), {
      images: { dtype: 'F32', shape, data: x },
      masks: { dtype: 'F32', shape, data: y },
    });
  };
  await write('train.safetensors', 0, 16);
  await write('eval.safetensors', 100, 20);
  return dir;
}

const yaml = (method: string, out: string) => `task: segmentation
base_model: base
output_dir: ${out}
data: {train: train.safetensors, eval: eval.safetensors}
adapter: {method: ${method}, r: 2}
training: {steps: 3, batch_size: 8, learning_rate: 0.01}
`;

test('a LoRA-C segmentation run writes an adapter whose reloaded Dice is the printed one', async () => {
  const dir = await setup();
  writeFileSync(join(dir, 'seg.yaml'), yaml('lora_c', 'run'));
  const r = cli('--config', join(dir, 'seg.yaml'));
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /adapter: +.*run\/final/);
  assert.match(r.stdout, /method: +lora_c r=2, \d+ trainable parameters/);
  const dice = Number(/dice: +([\d.]+)/.exec(r.stdout)![1]);
  assert.ok(dice >= 0 && dice <= 1, `dice ${dice}`);
  const cfg = JSON.parse(readFileSync(join(dir, 'run/final/adapter_config.json'), 'utf8'));
  assert.equal(cfg.peft_type, 'LORA_C');
  assert.deepEqual([cfg.r, cfg.lora_alpha], [2, 4], 'lora_alpha defaults to 2r');
  const result = JSON.parse(readFileSync(join(dir, 'run/result.json'), 'utf8'));
  assert.equal(result.steps, 3);
  // the adapter as saved, loaded again, gives the Dice the run reported
  const unet = await loadUNet(join(dir, 'base'));
  try {
    const peft = new PeftModel(unet.base());
    await loadAdapter(peft, join(dir, 'run/final'), 'default');
    const again = await segmentationDice(unet, await readSegmentationSet(join(dir, 'eval.safetensors')), { peft });
    assert.ok(Math.abs(again - result.dice) < 1e-9, `reloaded Dice ${again} vs run ${result.dice}`);
    assert.equal(dice.toFixed(4), result.dice.toFixed(4));
  } finally {
    await unet.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('full fine-tuning writes a U-Net folder; --print-config fills defaults; bad keys refused by name', async () => {
  const dir = await setup();
  writeFileSync(join(dir, 'seg.yaml'), yaml('full', 'full'));
  const printed = cli('--config', join(dir, 'seg.yaml'), '--print-config', '--set', 'training.seed=4');
  assert.equal(printed.status, 0, printed.stderr);
  const p = parseYaml(printed.stdout);
  assert.deepEqual([p.base_model, p.training.seed, p.training.schedule], [join(dir, 'base'), 4, 'cosine']);
  assert.deepEqual(p.adapter.target_modules, ['conv1', 'conv2']);
  const r = cli('--config', join(dir, 'seg.yaml'));
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /unet: +.*full\/final/);
  const trained = await loadUNet(join(dir, 'full/final'));
  assert.equal(trained.paramCount, Number(/, (\d+) trainable/.exec(r.stdout)![1]), 'every weight was trained');
  await trained.close();
  writeFileSync(join(dir, 'bad.yaml'), `${yaml('lora', 'x')}colour: blue\n`);
  const bad = cli('--config', join(dir, 'bad.yaml'));
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /colour/);
  const help = cli('--help');
  assert.match(help.stdout, /task: segmentation/);
  assert.match(help.stdout, /adapter\.method/);
  rmSync(dir, { recursive: true, force: true });
});
