/**
 * Makes the LoRA-Squeeze interop fixtures: PEFT-made adapters (test/fixtures/peft/<source>) squeezed by lorakit
 * (squeezeAdapter) into test/fixtures/squeeze/<case>/, with the input ids the logits are compared on (inputs.json).
 * interop/check_squeeze.py then loads the source and the squeezed folder with PEFT, checks that the squeezed ΔW of
 * every module is torch's truncated SVD of the source's ΔW, and records PEFT's logits; test/peft/squeeze-interop.test.ts
 * checks them without Python and that regenerating gives the committed bytes.
 *
 *   node --import tsx scripts/make-squeeze-fixtures.ts [case ...]
 */
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { writeFileAtomic } from '../src/io/index.ts';
import { loadModel } from '../src/models/index.ts';
import { PeftModel, adaptable, loadAdapter, squeezeAdapter } from '../src/peft/index.ts';

export const ROOT = resolve(import.meta.dirname, '..');
export const OUT_REL = 'test/fixtures/squeeze';

/** One fixture: the PEFT fixture adapter squeezed and the squeeze options. */
export interface SqueezeCase {
  source: string;
  description: string;
  rank: number;
  energy?: number;
  alpha?: number;
}

export const CASES: Record<string, SqueezeCase> = {
  llama_patterns_r2: {
    source: 'llama_lora_patterns',
    description: 'LoRA with rank_pattern and alpha_pattern (ranks 8, 4, 2) squeezed through its factors to rank 2',
    rank: 2,
  },
  llama_patterns_energy: {
    source: 'llama_lora_patterns',
    description: 'the same LoRA squeezed by energy 0.6 (at most rank 6): per-layer ranks in rank_pattern',
    rank: 6,
    energy: 0.6,
  },
  llama_dora_r2: {
    source: 'llama_dora',
    description: 'a DoRA adapter squeezed through a dense SVD of its merged ΔW to a plain rank-2 LoRA (alpha 4)',
    rank: 2,
    alpha: 4,
  },
  gpt2_conv1d_r3: {
    source: 'gpt2_lora',
    description: 'GPT-2 Conv1D layers (weights stored [in, out], fan_in_fan_out) squeezed through the factors to 3',
    rank: 3,
  },
};

/** Writes one case folder under `outRoot` (default: the committed fixtures). */
export async function makeCase(name: string, outRoot = join(ROOT, OUT_REL)): Promise<string> {
  const c = CASES[name];
  const src = join(ROOT, 'test/fixtures/peft', c.source);
  const expected = JSON.parse(await readFile(join(src, 'expected.json'), 'utf8'));
  const base = expected.base_model as string;
  const model = await loadModel(join(ROOT, base));
  const dir = join(outRoot, name);
  try {
    const peft = new PeftModel(adaptable(model));
    await loadAdapter(peft, src);
    await squeezeAdapter(peft, 'default', dir, { rank: c.rank, energy: c.energy, alpha: c.alpha, baseModel: base });
  } finally {
    await model.close();
  }
  const inputs = { base_model: base, source: `test/fixtures/peft/${c.source}`, description: c.description };
  await writeFileAtomic(
    join(dir, 'inputs.json'),
    `${JSON.stringify({ ...inputs, input_ids: expected.input_ids }, null, 2)}\n`,
  );
  return dir;
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const names = process.argv.slice(2);
  for (const n of names.length ? names : Object.keys(CASES)) console.log(await makeCase(n));
}
