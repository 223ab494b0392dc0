// diffusers' UNet2DModel against diffusers 0.35.2 (test/fixtures/unet, interop/make_unet_fixtures.py): a tiny random
// U-Net (two resolutions, attention down/up blocks, mid-block self-attention, GroupNorm affines perturbed) gives
// diffusers' output to 1e-4; a PEFT LoRA made on the diffusers model (attention projections and resnet convs) loads
// through loadAdapter and gives PEFT's unmerged and merged outputs; lorakit-written LoRA/DoRA folders are stable (PEFT
// loads them with lorakit's output: interop/check_lorakit_unet.py); the config checks refuse what is not built; a
// tiny UNet2DConditionModel (Transformer2DModel cross-attention blocks, GEGLU) equals diffusers to 1e-4 as well.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LorakitError } from '../../src/errors.ts';
import { Graph } from '../../src/graph/index.ts';
import { SafetensorsFile } from '../../src/io/index.ts';
import { loadUNet, loadUNetCondition, parseUNet2DConfig, unet2d, unet2dCondition } from '../../src/models/index.ts';
import { loadAdapter, PeftModel } from '../../src/peft/index.ts';
import { compile } from '../../src/runtime/index.ts';
import { CASES as UNET_CASES, makeUNetCase } from '../../scripts/make-lorakit-unet-adapters.ts';
import { assertAllclose } from '../helpers.ts';
import { TINY_UNET } from '../unet-configs.ts';

const ROOT = join(import.meta.dirname, '../..');
const DIR = join(ROOT, 'test/fixtures/unet');

async function tensors(path: string): Promise<Record<string, Float32Array>> {
  const f = await SafetensorsFile.open(path);
  try {
    const out: Record<string, Float32Array> = {};
    for (const n of f.names()) out[n] = await f.readAs(n, 'f32');
    return out;
  } finally {
    await f.close();
  }
}

const model = await loadUNet(join(DIR, 'model'));
after(() => model.close());
const expected = await tensors(join(DIR, 'expected.safetensors'));

/** The U-Net's output on the fixture's inputs, with a PeftModel's adapters (merged weights as overrides). */
async function output(peft: PeftModel | null): Promise<Float32Array> {
  const g = new Graph('unet');
  const sample = g.input('sample', 'f32', [2, 2, 8, 8]);
  const timestep = g.input('timestep', 'f32', [2]);
  const ctx = model.context(g, { hooks: peft?.hooks(), overrides: peft?.weightOverrides() });
  g.output('y', unet2d(ctx, sample, timestep));
  const s = await compile(g, { worker: false });
  return (await s.run({ sample: expected.sample, timestep: expected.timestep })).y.data as Float32Array;
}

test('UNet2DModel equals diffusers on the fixture to 1e-4', async () => {
  assertAllclose(await output(null), expected.output, { atol: 1e-4, rtol: 1e-4, what: 'UNet2DModel output' });
});

test('a PEFT LoRA on the diffusers U-Net (attention and resnet convs) loads and gives PEFT outputs, merged too', async () => {
  const want = await tensors(join(DIR, 'lora/expected.safetensors'));
  const peft = new PeftModel(model.base());
  const { unused } = await loadAdapter(peft, join(DIR, 'lora'), 'default');
  assert.deepEqual(unused, []);
  const targeted = [...peft.get('default').layers.keys()];
  assert.equal(
    targeted.filter((p) => p.endsWith('conv1')).length,
    8,
    'every resnet conv1 is adapted (2 down, 2 mid, 4 up)',
  );
  assert.ok(targeted.includes('mid_block.attentions.0.to_out.0'));
  const base = await output(null);
  const adapted = await output(peft);
  assert.ok(
    adapted.some((v, i) => Math.abs(v - base[i]) > 1e-2),
    'the adapter changes the output',
  );
  assertAllclose(adapted, want.output, { atol: 1e-4, rtol: 1e-4, what: 'unmerged' });
  await peft.merge();
  assertAllclose(await output(peft), want.merged_output, { atol: 1e-4, rtol: 1e-4, what: 'merged' });
});

const TWO = TINY_UNET; // two levels of resnet blocks

test('the config parser refuses what lorakit does not build, naming the field', () => {
  const refuses = (json: Record<string, unknown>, field: string) =>
    assert.throws(
      () => parseUNet2DConfig({ ...TWO, ...json }, 'config.json'),
      (e: unknown) => e instanceof LorakitError && e.code === 'LK_CONFIG_INVALID' && e.message.includes(field),
    );
  refuses({ down_block_types: ['DownBlock2D', 'SkipDownBlock2D'] }, 'down_block_types');
  assert.doesNotThrow(() => parseUNet2DConfig(TWO, 'config.json'));
  refuses({ time_embedding_type: 'fourier' }, 'time_embedding_type');
  refuses({ norm_num_groups: 3 }, 'norm_num_groups');
  refuses({ down_block_types: ['DownBlock2D'] }, 'block_out_channels');
  refuses({ class_embed_type: 'timestep' }, 'class_embed_type');
});

test('lorakit-written U-Net adapters (checked in PEFT by interop/check_lorakit_unet.py) are what lorakit writes now', async () => {
  for (const name of Object.keys(UNET_CASES)) {
    const dir = await mkdtemp(join(tmpdir(), 'lk-unet-'));
    await makeUNetCase(name, dir);
    const [fresh, committed] = [dir, join(ROOT, 'test/fixtures/lorakit-unet', name)];
    for (const file of ['adapter_model.safetensors', 'expected.safetensors']) {
      const [a, b] = [await tensors(join(fresh, file)), await tensors(join(committed, file))];
      assert.deepEqual(Object.keys(a).sort(), Object.keys(b).sort(), `${name}/${file} keys`);
      for (const k of Object.keys(a)) {
        const what = `${name}/${file}: ${k}`;
        // the adapter and the inputs are made on the host, bit for bit; the output is ORT's forward, whose last bits
        // depend on the CPU's kernels (AVX2 and AVX-512 machines differ by ~1e-6)
        if (file === 'expected.safetensors' && k === 'output')
          assertAllclose(a[k] as Float32Array, b[k] as Float32Array, { atol: 1e-5, rtol: 1e-5, what });
        else assert.deepEqual(a[k], b[k], what);
      }
    }
    assert.deepEqual(
      JSON.parse(await readFile(join(fresh, 'adapter_config.json'), 'utf8')),
      JSON.parse(await readFile(join(committed, 'adapter_config.json'), 'utf8')),
    );
    await rm(dir, { recursive: true, force: true });
  }
});

test('UNet2DConditionModel (cross-attention to encoder states) equals diffusers on the fixture to 1e-4', async () => {
  const cond = await loadUNetCondition(join(DIR, 'cond'));
  try {
    const want = await tensors(join(DIR, 'cond/expected.safetensors'));
    const g = new Graph('unet-cond');
    const sample = g.input('sample', 'f32', [2, 2, 8, 8]);
    const timestep = g.input('timestep', 'f32', [2]);
    const states = g.input('states', 'f32', [2, 5, 12]);
    g.output('y', unet2dCondition(cond.context(g), sample, timestep, states));
    const s = await compile(g, { worker: false });
    const y = (await s.run({ sample: want.sample, timestep: want.timestep, states: want.states })).y.data;
    assertAllclose(y as Float32Array, want.output, { atol: 1e-4, rtol: 1e-4, what: 'UNet2DConditionModel output' });
    assert.ok(
      cond.modules().some((m) => m.path.endsWith('attn2.to_k') && m.kind === 'linear'),
      'cross-attention k',
    );
  } finally {
    await cond.close();
  }
});
