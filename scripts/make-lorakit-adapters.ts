/**
 * Makes the lorakit → PEFT fixtures: adapters created by lorakit (PeftModel.addAdapter + a seeded perturbation)
 * on the tiny fixture bases and written with saveAdapter into test/fixtures/lorakit/<case>/, together with the
 * input ids the logits are compared on (inputs.json). interop/check_lorakit_adapters.py then loads each folder with
 * PEFT and writes peft_logits.safetensors; test/peft/roundtrip.test.ts checks both directions without Python.
 *
 *   node --import tsx scripts/make-lorakit-adapters.ts [case ...]
 *
 * Deterministic: the same lorakit gives byte-identical files (the round-trip test regenerates and compares them).
 * Not here: PEFT's side (interop/), the comparisons (test/peft/roundtrip.test.ts).
 */
import { mkdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { writeFileAtomic } from '../src/io/index.ts';
import { Rng, seedFrom } from '../src/linalg/index.ts';
import { loadModel } from '../src/models/index.ts';
import { PeftModel, adaptable, saveAdapter } from '../src/peft/index.ts';

export const ROOT = resolve(import.meta.dirname, '..');
export const OUT_REL = 'test/fixtures/lorakit';

/** One fixture: the base fixture model, the adapter config lorakit is given, and the perturbation seed. */
export interface LorakitCase {
  base: string;
  seed: number;
  description: string;
  config: Record<string, unknown>;
  /** A warning PEFT rightly gives when loading this case (checked by interop/check_lorakit_adapters.py). */
  expectedPeftWarning?: string;
  /** lorakit refuses to merge it (a copy of one of two tied modules); PEFT merges it into a new module. */
  mergeRefused?: boolean;
  /** Saved with `convertToBase` (a PiSSA/OLoRA adapter written as the rank-2r LoRA of the untouched base). */
  convertToBase?: boolean;
  /** How `perturb` moved this case's tensors, when PERTURBATION does not say it (inputs.json). */
  perturbation?: string;
  /**
   * The version sets (interop/README.md) whose PEFT has the method, when not both: BD-LoRA exists from PEFT 0.19 on,
   * Bone only before it (inputs.json says so, and check_lorakit_adapters.py skips it under the others).
   */
  peftSets?: readonly ('pinned' | 'current')[];
  /** Why the other set's PEFT cannot check this case (the roundtrip test's skip note), with `peftSets`. */
  peftLacks?: string;
}

const MISS_PERTURBATION =
  'miss_block / bone_block (0 at init) += N(0, 0.05); one lorakit Rng per tensor, seeded by seedFrom(case seed, tensor key)';

const LLAMA_ALL = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

export const CASES: Record<string, LorakitCase> = {
  llama_patterns_rslora: {
    base: 'llama',
    seed: 301,
    description: 'LoRA on all 7 projections with rank_pattern, alpha_pattern and rsLoRA scaling (alpha/sqrt(r))',
    config: {
      peft_type: 'LORA',
      task_type: 'CAUSAL_LM',
      target_modules: LLAMA_ALL,
      r: 8,
      lora_alpha: 16,
      use_rslora: true,
      rank_pattern: { q_proj: 4, 'layers.1.mlp.down_proj': 2 },
      alpha_pattern: { v_proj: 32, 'layers\\.0\\..*up_proj': 4 },
    },
  },
  llama_dora: {
    base: 'llama',
    seed: 302,
    description: 'DoRA on q_proj, v_proj, o_proj, down_proj; magnitudes perturbed away from their init',
    config: {
      peft_type: 'LORA',
      task_type: 'CAUSAL_LM',
      target_modules: ['q_proj', 'v_proj', 'o_proj', 'down_proj'],
      r: 4,
      lora_alpha: 8,
      use_dora: true,
    },
  },
  llama_embed: {
    base: 'llama',
    seed: 303,
    description: 'LoRA on the token embedding (lora_embedding_A/B) plus v_proj',
    config: {
      peft_type: 'LORA',
      task_type: 'CAUSAL_LM',
      target_modules: ['embed_tokens', 'v_proj'],
      r: 4,
      lora_alpha: 8,
    },
  },
  gpt2_conv1d: {
    base: 'gpt2',
    seed: 304,
    description: 'LoRA on GPT-2 Conv1D layers c_attn, c_proj (attention and MLP), c_fc with fan_in_fan_out',
    config: {
      peft_type: 'LORA',
      task_type: 'CAUSAL_LM',
      target_modules: ['c_attn', 'c_proj', 'c_fc'],
      r: 4,
      lora_alpha: 8,
      fan_in_fan_out: true,
    },
  },
  smollm_all_linear: {
    base: 'smollm',
    seed: 305,
    description: 'LoRA on "all-linear" of a tied-embedding model (lm_head excluded as the output head)',
    config: { peft_type: 'LORA', task_type: 'CAUSAL_LM', target_modules: 'all-linear', r: 4, lora_alpha: 8 },
  },
  smollm_save_head: {
    base: 'smollm',
    seed: 307,
    description:
      'a trained copy of the LM head of a tied-embedding model (modules_to_save: [lm_head]), saved as lm_head.weight',
    config: {
      peft_type: 'LORA',
      task_type: 'CAUSAL_LM',
      target_modules: ['q_proj'],
      r: 4,
      modules_to_save: ['lm_head'],
    },
    expectedPeftWarning: 'a tied layer is part of the adapter, but `ensure_weight_tying` is not set to True',
    mergeRefused: true,
  },
  smollm_tied_save: {
    base: 'smollm',
    seed: 308,
    description:
      'one trained copy shared by the tied embedding and LM head (ensure_weight_tying), saved under both names',
    config: {
      peft_type: 'LORA',
      task_type: 'CAUSAL_LM',
      target_modules: ['q_proj'],
      r: 4,
      modules_to_save: ['embed_tokens'],
      ensure_weight_tying: true,
    },
  },
  gpt2_bias_all: {
    base: 'gpt2',
    seed: 309,
    description: 'bias "all": every parameter named bias trains, LayerNorm biases included',
    config: {
      peft_type: 'LORA',
      task_type: 'CAUSAL_LM',
      target_modules: ['c_attn'],
      r: 4,
      fan_in_fan_out: true,
      bias: 'all',
    },
  },
  llama_pissa_converted: {
    base: 'llama',
    seed: 310,
    description: 'PiSSA on q_proj, v_proj, up_proj saved with convertToBase: a rank-8 LoRA of the untouched base',
    config: {
      peft_type: 'LORA',
      task_type: 'CAUSAL_LM',
      target_modules: ['q_proj', 'v_proj', 'up_proj'],
      r: 4,
      lora_alpha: 8,
      init_lora_weights: 'pissa',
    },
    convertToBase: true,
  },
  llama_pissa_dora_converted: {
    base: 'llama',
    seed: 311,
    description:
      'DoRA with a PiSSA init saved with convertToBase: rank-8 lora_A/B of the untouched base, magnitudes kept',
    config: {
      peft_type: 'LORA',
      task_type: 'CAUSAL_LM',
      target_modules: ['q_proj', 'v_proj'],
      r: 4,
      lora_alpha: 8,
      init_lora_weights: 'pissa',
      use_dora: true,
    },
    convertToBase: true,
  },
  gpt2_olora_converted: {
    base: 'gpt2',
    seed: 312,
    description: 'OLoRA on GPT-2 Conv1D c_attn and c_fc (the [out, in] matrix factored) saved with convertToBase',
    config: {
      peft_type: 'LORA',
      task_type: 'CAUSAL_LM',
      target_modules: ['c_attn', 'c_fc'],
      r: 4,
      lora_alpha: 8,
      fan_in_fan_out: true,
      init_lora_weights: 'olora',
    },
    convertToBase: true,
  },
  bert_seqcls: {
    base: 'bert',
    seed: 306,
    description: 'SEQ_CLS LoRA on BERT query, key, value with a trained copy of the classifier (modules_to_save)',
    config: {
      peft_type: 'LORA',
      task_type: 'SEQ_CLS',
      target_modules: ['query', 'key', 'value'],
      r: 4,
      lora_alpha: 8,
      modules_to_save: ['classifier'],
    },
  },
  llama_vera: {
    base: 'llama',
    seed: 307,
    description: 'VeRA on all 7 projections: shared vera_A [16, 128] and vera_B [128, 16] sliced per layer',
    config: {
      peft_type: 'VERA',
      task_type: 'CAUSAL_LM',
      target_modules: LLAMA_ALL,
      r: 16,
      projection_prng_key: 11,
      d_initial: 0.2,
    },
  },
  llama_bdlora: {
    base: 'llama',
    seed: 313,
    description:
      'BD-LoRA (PEFT >= 0.19 use_bdlora): block-diagonal B on q_proj, k_proj, block-diagonal A on o_proj, 2 blocks; ' +
      'up_proj plain (match_strict false)',
    config: {
      peft_type: 'LORA',
      task_type: 'CAUSAL_LM',
      target_modules: ['q_proj', 'k_proj', 'o_proj', 'up_proj'],
      r: 6,
      lora_alpha: 12,
      use_bdlora: {
        target_modules_bd_a: ['o_proj'],
        target_modules_bd_b: ['q_proj', 'k_proj'],
        nblocks: 2,
        match_strict: false,
      },
    },
    peftSets: ['current'],
    peftLacks: 'BD-LoRA arrived in PEFT 0.19',
  },
  llama_ffa: {
    base: 'llama',
    seed: 314,
    description:
      'FFA-LoRA on q_proj, v_proj, up_proj: A frozen from ffa_lora.seed (a training setting, left out of the ' +
      'config), ' +
      'B trained: a plain LoRA folder',
    config: {
      peft_type: 'LORA',
      task_type: 'CAUSAL_LM',
      target_modules: ['q_proj', 'v_proj', 'up_proj'],
      r: 4,
      lora_alpha: 8,
      ffa_lora: { seed: 5 },
    },
  },
  gpt2_vera: {
    base: 'gpt2',
    seed: 308,
    description: 'VeRA on GPT-2 Conv1D layers c_attn, c_proj (attention and MLP), c_fc with fan_in_fan_out',
    config: {
      peft_type: 'VERA',
      task_type: 'CAUSAL_LM',
      target_modules: ['c_attn', 'c_proj', 'c_fc'],
      r: 8,
      fan_in_fan_out: true,
    },
  },
  llama_miss: {
    base: 'llama',
    seed: 313,
    description: 'MiSS balance, r 12 (a partial last shard on in 64 and 128), on q_proj, v_proj, down_proj',
    config: { peft_type: 'MISS', task_type: 'CAUSAL_LM', target_modules: ['q_proj', 'v_proj', 'down_proj'], r: 12 },
    perturbation: MISS_PERTURBATION,
  },
  llama_miss_bat: {
    base: 'llama',
    seed: 314,
    description: 'MiSS "bat" (W + W·T + T blockwise, nonlinear in W), r 16, on q_proj, k_proj, up_proj, down_proj',
    config: {
      peft_type: 'MISS',
      task_type: 'CAUSAL_LM',
      target_modules: ['q_proj', 'k_proj', 'up_proj', 'down_proj'],
      r: 16,
      init_weights: 'bat',
    },
    perturbation: MISS_PERTURBATION,
  },
  llama_miss_mini: {
    base: 'llama',
    seed: 315,
    description: 'MiSS "mini", r 8, mini_r 16 (the [8, 16] block tiled along out), on v_proj and up_proj',
    config: {
      peft_type: 'MISS',
      task_type: 'CAUSAL_LM',
      target_modules: ['v_proj', 'up_proj'],
      r: 8,
      mini_r: 16,
      init_weights: 'mini',
    },
    perturbation: MISS_PERTURBATION,
  },
  llama_bone: {
    base: 'llama',
    seed: 317,
    description: 'Bone balance (PEFT ≤ 0.18 only), r 12 (partial last shards), on k_proj and up_proj',
    config: { peft_type: 'BONE', task_type: 'CAUSAL_LM', target_modules: ['k_proj', 'up_proj'], r: 12 },
    perturbation: MISS_PERTURBATION,
    expectedPeftWarning: 'Bone will be removed in v0.19.0 of PEFT',
    peftSets: ['pinned'],
    peftLacks: 'BONE was removed in PEFT 0.19 (MiSS replaces it)',
  },
  llama_bone_bat: {
    base: 'llama',
    seed: 316,
    description: 'Bone "bat" (PEFT ≤ 0.18 only), r 16, on q_proj and o_proj',
    config: {
      peft_type: 'BONE',
      task_type: 'CAUSAL_LM',
      target_modules: ['q_proj', 'o_proj'],
      r: 16,
      init_weights: 'bat',
    },
    perturbation: MISS_PERTURBATION,
    expectedPeftWarning: 'Bone will be removed in v0.19.0 of PEFT',
    peftSets: ['pinned'],
    peftLacks: 'BONE was removed in PEFT 0.19 (MiSS replaces it)',
  },
};

export const PERTURBATION =
  'lora_A, lora_embedding_A ~ N(0, 0.1); lora_B, lora_embedding_B ~ N(0, 0.05); ' +
  'DoRA magnitudes *= 1 + N(0, 0.1); VeRA vera_lambda_b ~ N(0, 0.5), vera_lambda_d += N(0, 0.5); ' +
  'modules_to_save copies += N(0, 0.05); one lorakit Rng per tensor, seeded by ' +
  'seedFrom(case seed, tensor key)';

/** Moves every trainable value of adapter `name` away from its init (see PERTURBATION). */
export function perturb(peft: PeftModel, name: string, seed: number): void {
  const values = new Map<string, Float32Array>();
  for (const [key, v] of peft.trainableValues(name)) {
    const rng = new Rng(seedFrom(seed, key));
    const out = new Float32Array(v.length);
    const param = key.split('#')[0];
    if (/\.lora_(embedding_)?A(\.weight)?$/.test(param)) for (let i = 0; i < v.length; i++) out[i] = 0.1 * rng.normal();
    else if (/\.lora_(embedding_)?B(\.weight)?$/.test(param))
      for (let i = 0; i < v.length; i++) out[i] = 0.05 * rng.normal();
    else if (param.endsWith('.lora_magnitude_vector'))
      for (let i = 0; i < v.length; i++) out[i] = v[i] * (1 + 0.1 * rng.normal());
    else if (param.endsWith('.vera_lambda_b')) for (let i = 0; i < v.length; i++) out[i] = 0.5 * rng.normal();
    else if (param.endsWith('.vera_lambda_d')) for (let i = 0; i < v.length; i++) out[i] = v[i] + 0.5 * rng.normal();
    else for (let i = 0; i < v.length; i++) out[i] = v[i] + 0.05 * rng.normal(); // modules_to_save
    values.set(key, out);
  }
  peft.setValues(name, values);
}

/** The inputs the logits are compared on: the base fixture's (BERT: with token types and its padded mask). */
async function inputsOf(c: LorakitCase): Promise<Record<string, unknown>> {
  const e = JSON.parse(await readFile(join(ROOT, 'test/fixtures/models', c.base, 'expected.json'), 'utf8'));
  const inputs: Record<string, unknown> = { input_ids: e.input_ids };
  if (c.base === 'bert') Object.assign(inputs, { token_type_ids: e.token_type_ids, attention_mask: e.attention_mask });
  return inputs;
}

/** JSON with 2-space indents and each array of numbers on one line. */
function compactJson(v: unknown): string {
  return `${JSON.stringify(v, null, 2).replace(/\[[\s\d.,-]+\]/g, (m) => m.replace(/\s+/g, '').replace(/,/g, ', '))}\n`;
}

/** Writes case `name` into `dir`: adapter_config.json, adapter_model.safetensors, README.md (saveAdapter) and
 * inputs.json. */
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
    await saveAdapter(peft, 'default', dir, { baseModel: baseRel, convertToBase: c.convertToBase });
    const inputs = {
      case: name,
      description: c.description,
      base_model: baseRel,
      seed: c.seed,
      perturbation: c.perturbation ?? PERTURBATION,
      ...(c.expectedPeftWarning ? { expected_peft_warning: c.expectedPeftWarning } : {}),
      ...(c.peftSets ? { peft_sets: c.peftSets } : {}),
      ...(await inputsOf(c)),
    };
    await writeFileAtomic(join(dir, 'inputs.json'), compactJson(inputs));
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
