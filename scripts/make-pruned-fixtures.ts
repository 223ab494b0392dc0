/**
 * Makes the structured-pruning interop fixtures: tiny fixture models (test/fixtures/models) sliced by lorakit
 * (writeSliced) into test/fixtures/pruned/<case>/model/ (git-ignored), with the input ids the logits are compared on
 * (inputs.json). interop/check_pruned.py loads each folder with transformers and records its logits and the folder's
 * checksums; test/peft/slice.test.ts regenerates the folders, checks the checksums and compares the logits.
 *
 *   node --import tsx scripts/make-pruned-fixtures.ts [case ...]
 */
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { writeFileAtomic } from '../src/io/index.ts';
import { Rng } from '../src/linalg/index.ts';
import { loadModel } from '../src/models/index.ts';
import { type PrunePlan, pruneSizes, writeSliced } from '../src/peft/index.ts';

export const ROOT = resolve(import.meta.dirname, '..');
export const OUT_REL = 'test/fixtures/pruned';

/** One fixture: the base model and the plan's kept heads and channel counts per layer (channels drawn seeded). */
export interface PrunedCase {
  base: string;
  description: string;
  heads: number[][];
  channels: number[];
  seed: number;
}

export const CASES: Record<string, PrunedCase> = {
  llama_uniform: {
    base: 'llama',
    description: 'one of 2 KV-head groups and 48 of 128 channels kept in every layer (f32, untied head)',
    heads: [[1], [0]],
    channels: [48, 48],
    seed: 1,
  },
  qwen2_padded: {
    base: 'qwen2',
    description:
      'layer 0 keeps 1 group and 40 channels, layer 1 both groups and 90 channels: layer 0 is padded with zeroed ' +
      'groups (bf16 weights, q/k/v biases)',
    heads: [[0], [0, 1]],
    channels: [40, 90],
    seed: 2,
  },
};

/** The plan of a case: its heads, and `channels[i]` channels of layer i drawn without replacement. */
export function planOf(c: PrunedCase, intermediate: number, sizes: PrunePlan['original']): PrunePlan {
  const rng = new Rng(c.seed);
  return {
    original: sizes,
    layers: c.heads.map((heads, i) => {
      const order = Array.from({ length: intermediate }, (_, k) => [rng.next(), k]).sort((a, b) => a[0] - b[0]);
      return {
        heads,
        channels: order
          .slice(0, c.channels[i])
          .map(([, k]) => k)
          .sort((a, b) => a - b),
      };
    }),
  };
}

/** Writes one case's sliced folder under `outRoot/<case>/model` (default: the fixtures) and its inputs.json. */
export async function makeCase(name: string, outRoot = join(ROOT, OUT_REL)): Promise<string> {
  const c = CASES[name];
  const base = `test/fixtures/models/${c.base}`;
  const model = await loadModel(join(ROOT, base));
  const dir = join(outRoot, name, 'model');
  try {
    const sizes = pruneSizes(model);
    await writeSliced(model, planOf(c, sizes.intermediate_size, sizes), dir, { overwrite: true });
  } finally {
    await model.close();
  }
  const expected = JSON.parse(await readFile(join(ROOT, base, 'expected.json'), 'utf8'));
  const inputs = { base_model: base, description: c.description, input_ids: expected.input_ids };
  await writeFileAtomic(join(outRoot, name, 'inputs.json'), `${JSON.stringify(inputs, null, 2)}\n`);
  return dir;
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const names = process.argv.slice(2);
  for (const n of names.length ? names : Object.keys(CASES)) console.log(await makeCase(n));
}
