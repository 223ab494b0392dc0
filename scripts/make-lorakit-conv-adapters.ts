/**
 * Makes the lorakit → PEFT conv fixtures: LoRA and DoRA adapters created by lorakit on the conv net of
 * test/fixtures/conv (PeftModel.addAdapter + a seeded perturbation) and written with saveAdapter into
 * test/fixtures/lorakit-conv/<case>/, with case.json (what the case is). interop/check_lorakit_conv.py then loads
 * each folder with PEFT on the same torch net and records PEFT's output; test/peft/methods/conv-lora.test.ts compares.
 *
 *   node --import tsx scripts/make-lorakit-conv-adapters.ts [case ...]
 *
 * Deterministic: the same lorakit gives byte-identical files (the test regenerates and compares them).
 * Not here: PEFT's side (interop/), the comparisons (the test), the HF-model cases (make-lorakit-adapters.ts).
 */
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { writeFileAtomic } from '../src/io/index.ts';
import { Rng, seedFrom } from '../src/linalg/index.ts';
import { PeftModel, paramKey, saveAdapter } from '../src/peft/index.ts';
import { convNetBase, openConvNet } from '../test/nn/convnet.ts';

export const ROOT = resolve(import.meta.dirname, '..');
export const NET_REL = 'test/fixtures/conv';
export const OUT_REL = 'test/fixtures/lorakit-conv';

/** One fixture: the adapter config lorakit is given, the perturbation seed, and whether lorakit can merge it. */
export interface ConvCase {
  seed: number;
  description: string;
  config: Record<string, unknown>;
  /** lorakit merges it (PEFT too); otherwise the reason lorakit refuses. */
  merge: true | string;
}

export const CASES: Record<string, ConvCase> = {
  lora: {
    seed: 401,
    description: 'LoRA on the 3x3 conv 0 (r 4) and the 1x1 conv 6 (r 2 by rank_pattern)',
    config: { peft_type: 'LORA', target_modules: ['0', '6'], r: 4, lora_alpha: 8, rank_pattern: { '6': 2 } },
    merge: true,
  },
  lora_groups: {
    seed: 402,
    description: 'LoRA on conv 2 (groups 2, stride 2, no bias) with rsLoRA scaling: lora_B is a grouped 1x1 conv',
    config: { peft_type: 'LORA', target_modules: ['2'], r: 4, lora_alpha: 8, use_rslora: true },
    merge: 'groups 2 (PEFT raises NotImplementedError too)',
  },
  lora_dilated: {
    seed: 403,
    description: 'LoRA on conv 4 (2x2, stride 2, dilation 2): lora_A has no dilation, as in PEFT',
    config: { peft_type: 'LORA', target_modules: ['4'], r: 4, lora_alpha: 8 },
    merge: 'dilation [2,2] (PEFT merges, into another function)',
  },
  dora: {
    seed: 404,
    description: 'DoRA on conv 0 and conv 6; magnitudes [1, out, 1, 1] perturbed away from their init',
    config: { peft_type: 'LORA', target_modules: ['0', '6'], r: 4, lora_alpha: 8, use_dora: true },
    merge: true,
  },
};

export const PERTURBATION =
  'lora_A ~ N(0, 0.2); lora_B ~ N(0, 0.1); DoRA magnitudes *= 1 + N(0, 0.1); one lorakit Rng per tensor, seeded ' +
  'by seedFrom(case seed, tensor key)';

/** Moves every trainable value of adapter `name` away from its init (see PERTURBATION), by role. */
function perturb(peft: PeftModel, name: string, seed: number): void {
  const values = new Map<string, Float32Array>();
  for (const [path, l] of peft.get(name).layers) {
    for (const spec of l.specs) {
      const key = paramKey(name, path, spec.name);
      const rng = new Rng(seedFrom(seed, key));
      const v = l.values[spec.name];
      const out = new Float32Array(v.length);
      for (let i = 0; i < v.length; i++) {
        if (spec.role === 'a') out[i] = 0.2 * rng.normal();
        else if (spec.role === 'b') out[i] = 0.1 * rng.normal();
        else out[i] = v[i] * (1 + 0.1 * rng.normal()); // magnitude
      }
      values.set(key, out);
    }
  }
  peft.setValues(name, values);
}

/** Writes case `name` into `dir`: what saveAdapter writes, and case.json. */
export async function makeCase(name: string, dir: string): Promise<void> {
  const c = CASES[name];
  if (!c) throw new Error(`unknown case "${name}"; cases: ${Object.keys(CASES).join(', ')}`);
  const { config, file } = await openConvNet(join(ROOT, NET_REL));
  try {
    const peft = new PeftModel(convNetBase(config, file));
    await peft.addAdapter('default', c.config, { seed: c.seed });
    perturb(peft, 'default', c.seed);
    await mkdir(dir, { recursive: true });
    await saveAdapter(peft, 'default', dir, { baseModel: NET_REL });
    const info = { case: name, description: c.description, seed: c.seed, perturbation: PERTURBATION, merge: c.merge };
    await writeFileAtomic(join(dir, 'case.json'), `${JSON.stringify(info, null, 2)}\n`);
  } finally {
    await file.close();
  }
}

async function main(names: string[]): Promise<void> {
  for (const name of names.length ? names : Object.keys(CASES)) {
    await makeCase(name, join(ROOT, OUT_REL, name));
    console.log(`lorakit ${name} ok`);
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await main(process.argv.slice(2));
