/**
 * Makes the lorakit → PEFT fixtures of the methods with model-level shared tensors (VB-LoRA, RandLoRA, Uni-LoRA):
 * adapters created by lorakit (PeftModel.addAdapter + a seeded perturbation of every trainable tensor) on the tiny
 * fixture bases, written with saveAdapter into test/fixtures/shared/lorakit/<case>/ with inputs.json (the base, the
 * input ids, and the PEFT version sets that have the method). interop/check_shared_adapters.py then loads each folder
 * with PEFT and records PEFT's logits; test/peft/methods/{vblora,randlora,unilora}.test.ts compare without Python.
 *
 *   node --import tsx scripts/make-shared-adapters.ts [case ...]
 *
 * Deterministic: the same lorakit writes byte-identical files (the method tests regenerate one case and compare).
 * Not here: the LoRA/VeRA cases (make-lorakit-adapters.ts), PEFT's side (interop/).
 */
import { mkdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { writeFileAtomic } from '../src/io/index.ts';
import { Rng, seedFrom } from '../src/linalg/index.ts';
import { loadModel } from '../src/models/index.ts';
import { adaptable, PeftModel, saveAdapter } from '../src/peft/index.ts';

export const ROOT = resolve(import.meta.dirname, '..');
export const OUT_REL = 'test/fixtures/shared/lorakit';

/** One fixture: the base fixture model, the config lorakit is given, the perturbation seed, the PEFT sets to check. */
export interface SharedCase {
  base: string;
  seed: number;
  description: string;
  config: Record<string, unknown>;
  /** The interop version sets whose PEFT has the method ("pinned" is PEFT 0.18.1, "current" 0.21.2). */
  sets: ('pinned' | 'current')[];
}

const LLAMA_ALL = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

export const CASES: Record<string, SharedCase> = {
  llama_vblora: {
    base: 'llama',
    seed: 601,
    description: 'VB-LoRA on q_proj, k_proj, o_proj, down_proj (in 64/128, out 32/64), bank 20 x 32, top-2',
    config: {
      peft_type: 'VBLORA',
      task_type: 'CAUSAL_LM',
      target_modules: ['q_proj', 'k_proj', 'o_proj', 'down_proj'],
      r: 4,
      num_vectors: 20,
      vector_length: 32,
      topk: 2,
    },
    sets: ['pinned', 'current'],
  },
  llama_vblora_topk: {
    base: 'llama',
    seed: 602,
    description: 'VB-LoRA on v_proj, gate_proj written with save_only_topk_weights (40 vectors: uint8 indices)',
    config: {
      peft_type: 'VBLORA',
      task_type: 'CAUSAL_LM',
      target_modules: ['v_proj', 'gate_proj'],
      r: 4,
      num_vectors: 40,
      vector_length: 16,
      topk: 2,
      save_only_topk_weights: true,
    },
    sets: ['pinned', 'current'],
  },
  gpt2_randlora: {
    base: 'gpt2',
    seed: 603,
    description: 'RandLoRA on GPT-2 Conv1D c_attn (64 → 192), projections written (with per-layer copies)',
    config: {
      peft_type: 'RANDLORA',
      task_type: 'CAUSAL_LM',
      target_modules: ['c_attn'],
      r: 16,
      randlora_alpha: 32,
      fan_in_fan_out: true,
    },
    sets: ['pinned', 'current'],
  },
  llama_randlora_noproj: {
    base: 'llama',
    seed: 604,
    description: 'RandLoRA on q_proj, k_proj, up_proj with save_projection=False: PEFT regenerates the bases',
    config: {
      peft_type: 'RANDLORA',
      task_type: 'CAUSAL_LM',
      target_modules: ['q_proj', 'k_proj', 'up_proj'],
      r: 8,
      randlora_alpha: 16,
      projection_prng_key: 4,
      save_projection: false,
    },
    sets: ['pinned', 'current'],
  },
  llama_unilora: {
    base: 'llama',
    seed: 605,
    description: 'Uni-LoRA on all 7 projections, theta_d 400: only theta written, PEFT rebuilds the index maps',
    config: { peft_type: 'UNILORA', task_type: 'CAUSAL_LM', target_modules: LLAMA_ALL, r: 4, theta_d_length: 400 },
    sets: ['current'],
  },
  gpt2_unilora_indices: {
    base: 'gpt2',
    seed: 606,
    description: 'Uni-LoRA on GPT-2 Conv1D c_proj, c_fc with save_indices (int64 maps, float32 norm factors)',
    config: {
      peft_type: 'UNILORA',
      task_type: 'CAUSAL_LM',
      target_modules: ['c_proj', 'c_fc'],
      r: 2,
      theta_d_length: 1000,
      proj_seed: 3,
      save_indices: true,
      fan_in_fan_out: true,
    },
    sets: ['current'],
  },
};

export const PERTURBATION =
  'vblora_vector_bank ~ N(0, 0.3), vblora_logits_* += N(0, 1); randlora_lambda ~ N(0, 0.1), randlora_gamma *= ' +
  '1 + N(0, 0.2); unilora_theta_d ~ N(0, 1); one lorakit Rng per tensor, seeded by seedFrom(case seed, tensor name)';

/** Moves every trainable tensor of adapter `name` off its init (see PERTURBATION). */
export function perturb(peft: PeftModel, name: string, seed: number): void {
  const a = peft.get(name);
  const move = (key: string, param: string, v: Float32Array) => {
    const rng = new Rng(seedFrom(seed, key));
    if (param === 'vblora_vector_bank') return v.map(() => 0.3 * rng.normal());
    if (param.startsWith('vblora_logits')) return v.map((x) => x + rng.normal());
    if (param === 'randlora_lambda') return v.map(() => 0.1 * rng.normal());
    if (param === 'randlora_gamma') return v.map((x) => x * (1 + 0.2 * rng.normal()));
    if (param === 'unilora_theta_d') return v.map(() => rng.normal());
    throw new Error(`perturb: no rule for ${key}`);
  };
  for (const s of a.shared.specs)
    if (s.trainable) a.shared.values[s.name] = move(s.name, s.name, a.shared.values[s.name]);
  for (const [path, l] of a.layers)
    for (const s of l.specs) if (s.trainable) l.values[s.name] = move(`${path}.${s.name}`, s.name, l.values[s.name]);
}

/** Writes case `name` into `dir`: the adapter folder (saveAdapter) and inputs.json. */
export async function makeCase(name: string, dir: string): Promise<void> {
  const c = CASES[name];
  if (!c) throw new Error(`unknown case "${name}"; cases: ${Object.keys(CASES).join(', ')}`);
  const baseRel = `test/fixtures/models/${c.base}`;
  const model = await loadModel(join(ROOT, baseRel));
  try {
    const peft = new PeftModel(adaptable(model));
    await peft.addAdapter('default', c.config, { seed: c.seed });
    perturb(peft, 'default', c.seed);
    await mkdir(dir, { recursive: true });
    await saveAdapter(peft, 'default', dir, { baseModel: baseRel });
    const e = JSON.parse(await readFile(join(ROOT, baseRel, 'expected.json'), 'utf8'));
    const inputs = {
      case: name,
      description: c.description,
      base_model: baseRel,
      seed: c.seed,
      perturbation: PERTURBATION,
      version_sets: c.sets,
      input_ids: e.input_ids,
    };
    const json = JSON.stringify(inputs, null, 2).replace(/\[[\s\d,]+\]/g, (m) =>
      m.replace(/\s+/g, '').replace(/,/g, ', '),
    );
    await writeFileAtomic(join(dir, 'inputs.json'), `${json}\n`);
  } finally {
    await model.close();
  }
}

async function main(names: string[]): Promise<void> {
  for (const name of names.length ? names : Object.keys(CASES)) {
    await makeCase(name, join(ROOT, OUT_REL, name));
    console.log(`lorakit ${name} ok`);
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await main(process.argv.slice(2));
