/**
 * Makes the lorakit → PEFT U-Net fixtures: a LoRA and a DoRA created by lorakit on the diffusers U-Net of
 * test/fixtures/unet (PeftModel.addAdapter + a seeded perturbation), written with saveAdapter into
 * test/fixtures/lorakit-unet/<case>/ together with lorakit's output on the fixture's inputs (expected.safetensors).
 * interop/check_lorakit_unet.py loads each folder with PEFT on the diffusers model and compares; test/models/unet.test.ts
 * regenerates the folders and compares them with the committed ones.
 *
 *   node --import tsx scripts/make-lorakit-unet-adapters.ts
 *
 * Not here: PEFT's side (interop/), the PEFT → lorakit direction (interop/make_unet_fixtures.py).
 */
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Graph } from '../src/graph/index.ts';
import { SafetensorsFile, writeSafetensors } from '../src/io/index.ts';
import { Rng, seedFrom } from '../src/linalg/index.ts';
import { loadUNet, unet2d } from '../src/models/index.ts';
import { PeftModel, paramKey, saveAdapter } from '../src/peft/index.ts';
import { compile } from '../src/runtime/index.ts';

export const ROOT = resolve(import.meta.dirname, '..');
export const UNET_REL = 'test/fixtures/unet';
export const OUT_REL = 'test/fixtures/lorakit-unet';

const TARGETS = ['to_q', 'to_k', 'to_v', 'to_out.0', 'conv1', 'conv2', 'conv_shortcut'];

/** The cases: an adapter config and the perturbation seed. */
export const CASES: Record<string, { seed: number; config: Record<string, unknown> }> = {
  lora: { seed: 501, config: { peft_type: 'LORA', target_modules: TARGETS, r: 2, lora_alpha: 4 } },
  dora: {
    seed: 502,
    config: { peft_type: 'LORA', target_modules: ['to_q', 'to_v', 'conv1'], r: 2, lora_alpha: 4, use_dora: true },
  },
};

/** The fixture's inputs and the U-Net output with `peft`'s adapters. */
export async function unetOutput(dir: string, peft: PeftModel | null): Promise<Float32Array> {
  const model = await loadUNet(join(dir, 'model'));
  const f = await SafetensorsFile.open(join(dir, 'expected.safetensors'));
  try {
    const g = new Graph('unet');
    const sample = g.input('sample', 'f32', [2, 2, 8, 8]);
    const timestep = g.input('timestep', 'f32', [2]);
    const ctx = model.context(g, { hooks: peft?.hooks(), overrides: peft?.weightOverrides() });
    g.output('y', unet2d(ctx, sample, timestep));
    const s = await compile(g, { worker: false });
    const feeds = { sample: await f.readAs('sample', 'f32'), timestep: await f.readAs('timestep', 'f32') };
    return (await s.run(feeds)).y.data as Float32Array;
  } finally {
    await f.close();
    await model.close();
  }
}

/** Writes case `name` into `dir`: the adapter folder and expected.safetensors (lorakit's unmerged output). */
export async function makeUNetCase(name: string, dir: string): Promise<void> {
  const c = CASES[name];
  const model = await loadUNet(join(ROOT, UNET_REL, 'model'));
  try {
    const peft = new PeftModel(model.base());
    await peft.addAdapter('default', c.config, { seed: c.seed });
    const values = new Map<string, Float32Array>();
    for (const [path, l] of peft.get('default').layers)
      for (const spec of l.specs) {
        const key = paramKey('default', path, spec.name);
        const rng = new Rng(seedFrom(c.seed, key));
        const v = l.values[spec.name];
        // A and B ~ N(0, 0.2²), magnitudes ×(1 + N(0, 0.1²))
        values.set(
          key,
          Float32Array.from(v, (x) => (spec.role === 'magnitude' ? x * (1 + 0.1 * rng.normal()) : 0.2 * rng.normal())),
        );
      }
    peft.setValues('default', values);
    await mkdir(dir, { recursive: true });
    await saveAdapter(peft, 'default', dir, { baseModel: `${UNET_REL}/model` });
    const output = await unetOutput(join(ROOT, UNET_REL), peft);
    await writeSafetensors(join(dir, 'expected.safetensors'), {
      output: { dtype: 'F32', shape: [2, 1, 8, 8], data: output },
    });
  } finally {
    await model.close();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  for (const name of Object.keys(CASES)) {
    await makeUNetCase(name, join(ROOT, OUT_REL, name));
    console.log(`lorakit-unet ${name} ok`);
  }
}
