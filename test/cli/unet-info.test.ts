// `lorakit info DIR` on diffusers U-Net folders, through the CLI entry: the class, blocks with channels and grid,
// the parameter count (equal to loadUNet's), the attention layers (self and cross) and the targetable modules, also
// as JSON; and --help names U-Net folders.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { loadUNetCondition } from '../../src/models/index.ts';

const lorakit = (...args: string[]) => spawnSync(process.execPath, ['bin/lorakit.mjs', ...args], { encoding: 'utf8' });

test('info describes the UNet2DConditionModel fixture: blocks, parameters, attention layers, modules', async () => {
  const r = lorakit('info', 'test/fixtures/unet/cond');
  assert.equal(r.status, 0, r.stderr);
  const out = r.stdout;
  const unet = await loadUNetCondition('test/fixtures/unet/cond');
  const count = unet.paramCount;
  await unet.close();
  assert.match(out, /class +UNet2DConditionModel \(diffusers\)/);
  assert.match(out, new RegExp(`parameters +${count.toLocaleString('en-US')}; F32 \\(208 tensors\\)`));
  assert.match(out, /channels +in 2, out 2, blocks \[8, 16\], 1 layer per block/);
  assert.match(out, /\n {2}down_blocks\.0 +CrossAttnDownBlock2D, 8 channels, grid 1\/1\n/);
  assert.match(out, /\n {2}mid_block +UNetMidBlock2DCrossAttn, 16 channels, grid 1\/2\n/);
  assert.match(out, /attention layers \(8\):/);
  assert.match(
    out,
    /mid_block\.attentions\.0\.transformer_blocks\.0\.attn2 +cross, 2 heads, grid 1\/2, states of width 12/,
  );
  assert.match(
    out,
    /\n {2}up_blocks\.1\.attentions\.\{0\.\.1\}\.transformer_blocks\.0\.attn2\.to_k +linear \[12 -> 8\] x2\n/,
  );
  assert.match(out, /\n {2}down_blocks\.0\.downsamplers\.0\.conv +conv2d \[8 -> 8, 3x3, stride 2\]\n/);
});

test('info --json on a UNet2DModel: self-attention only, module count equals the model listing', () => {
  const r = lorakit('info', '--json', 'test/fixtures/unet/model');
  assert.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.className, 'UNet2DModel');
  assert.ok(j.attention.length > 0 && j.attention.every((a: { kind: string }) => a.kind === 'self'));
  assert.deepEqual(
    j.blocks.map((b: { type: string }) => b.type),
    ['DownBlock2D', 'AttnDownBlock2D', 'UNetMidBlock2D', 'AttnUpBlock2D', 'UpBlock2D'],
  );
  assert.ok(j.modules.some((m: { pattern: string }) => m.pattern === 'mid_block.resnets.{0..1}.conv1'));
  assert.match(lorakit('info', '--help').stdout, /diffusers U-Net folder/);
});
