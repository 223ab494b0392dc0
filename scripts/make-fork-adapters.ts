/**
 * Makes the lorakit → official-code fixtures for the methods whose official code is a PEFT fork rather than PEFT:
 * SLoRA and NLoRA (TracyGuo2001/NLoRA) and PaCA (WooSunghyeon/paca). Adapters created by lorakit on the tiny llama,
 * perturbed with one seeded lorakit Rng per tensor (every trainable value += N(0, 0.05); PaCA's P too), written with
 * saveAdapter into test/fixtures/forks/<case>/ with inputs.json. interop/make_fork_fixtures.py then loads each folder
 * with its fork and writes fork_logits.safetensors; the method tests compare without Python.
 *
 *   node --import tsx scripts/make-fork-adapters.ts [case ...]
 *
 * Deterministic: the same lorakit gives byte-identical files (the method tests regenerate and compare them).
 */
import { mkdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { writeFileAtomic } from '../src/io/index.ts';
import { Rng, seedFrom } from '../src/linalg/index.ts';
import { loadModel } from '../src/models/index.ts';
import { adaptable, PeftModel, saveAdapter } from '../src/peft/index.ts';

export const ROOT = resolve(import.meta.dirname, '..');
export const FORKS_REL = 'test/fixtures/forks';

/** One lorakit-written case: the fork that reads it, the adapter config, the perturbation seed. */
export interface ForkCase {
  fork: 'nlora' | 'paca';
  seed: number;
  description: string;
  config: Record<string, unknown>;
}

export const FORK_CASES: Record<string, ForkCase> = {
  lorakit_slora: {
    fork: 'nlora',
    seed: 701,
    description: 'SLoRA (init_lora_weights s_lora) on q_proj, v_proj, up_proj, r 4, alpha 8: lora_A, lora_N, lora_B',
    config: {
      task_type: 'CAUSAL_LM',
      target_modules: ['q_proj', 'v_proj', 'up_proj'],
      r: 4,
      lora_alpha: 8,
      init_lora_weights: 's_lora',
    },
  },
  lorakit_nlora: {
    fork: 'nlora',
    seed: 702,
    description: 'NLoRA (n_lora, the official raw core, nothing subtracted) on q_proj, o_proj, down_proj, r 4, alpha 4',
    config: {
      task_type: 'CAUSAL_LM',
      target_modules: ['q_proj', 'o_proj', 'down_proj'],
      r: 4,
      lora_alpha: 4,
      init_lora_weights: 'n_lora',
    },
  },
  lorakit_paca: {
    fork: 'paca',
    seed: 703,
    description: 'PaCA on q_proj, v_proj, up_proj, r 4, paca_alpha 8 (s = 2): paca_w [out, 4], paca_indices [4] int64',
    config: {
      peft_type: 'PACA',
      task_type: 'CAUSAL_LM',
      target_modules: ['q_proj', 'v_proj', 'up_proj'],
      r: 4,
      paca_alpha: 8,
    },
  },
};

const BASE_REL = 'test/fixtures/models/llama';

/** Writes case `name` into `dir`: the adapter folder (saveAdapter) and inputs.json. */
export async function makeForkCase(name: string, dir: string): Promise<void> {
  const c = FORK_CASES[name];
  if (!c) throw new Error(`unknown case "${name}"; cases: ${Object.keys(FORK_CASES).join(', ')}`);
  const model = await loadModel(join(ROOT, BASE_REL));
  try {
    const peft = new PeftModel(adaptable(model));
    await peft.addAdapter('default', c.config, { seed: c.seed });
    const values = new Map<string, Float32Array>();
    for (const [key, v] of peft.trainableValues('default')) {
      const rng = new Rng(seedFrom(c.seed, key));
      values.set(
        key,
        v.map((x) => x + 0.05 * rng.normal()),
      );
    }
    peft.setValues('default', values);
    await mkdir(dir, { recursive: true });
    await saveAdapter(peft, 'default', dir, { baseModel: BASE_REL });
    const expected = JSON.parse(await readFile(join(ROOT, BASE_REL, 'expected.json'), 'utf8'));
    const inputs = {
      case: name,
      fork: c.fork,
      description: c.description,
      base_model: BASE_REL,
      seed: c.seed,
      perturbation: 'every trainable value += N(0, 0.05); one lorakit Rng per tensor, seedFrom(case seed, tensor key)',
      input_ids: expected.input_ids,
    };
    await writeFileAtomic(join(dir, 'inputs.json'), `${JSON.stringify(inputs, null, 2)}\n`);
  } finally {
    await model.close();
  }
}

async function main(names: string[]): Promise<void> {
  for (const name of names.length ? names : Object.keys(FORK_CASES)) {
    await makeForkCase(name, join(ROOT, FORKS_REL, name));
    console.log(`lorakit ${name} ok`);
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await main(process.argv.slice(2));
