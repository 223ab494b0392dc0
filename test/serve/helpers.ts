// Shared by the serve and server tests: the tiny llama fixture, adapters of several methods and ranks made on it and
// saved as PEFT folders, and generate() with one adapter as the independent reference.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HfTokenizer } from '../../src/io/index.ts';
import { generate, loadModel, type LoadedModel } from '../../src/models/index.ts';
import { PeftModel, adaptable, loadAdapter, saveAdapter } from '../../src/peft/index.ts';

export const FIXTURE = 'test/fixtures/models/llama';

/** The fixture model and tokenizer. */
export async function fixture(dir = FIXTURE): Promise<{ model: LoadedModel; tokenizer: HfTokenizer }> {
  return { model: await loadModel(dir), tokenizer: await HfTokenizer.fromDir(dir) };
}

/** Adapter configs of several methods and ranks, strong enough to change greedy tokens. */
export const ADAPTERS: Record<string, Record<string, unknown>> = {
  r2: { peft_type: 'LORA', r: 2, lora_alpha: 32, target_modules: ['q_proj', 'v_proj'], init_lora_weights: false },
  r4: { peft_type: 'LORA', r: 4, lora_alpha: 64, target_modules: 'all-linear', init_lora_weights: false },
  r8rs: {
    peft_type: 'LORA',
    r: 8,
    lora_alpha: 40,
    use_rslora: true,
    target_modules: ['o_proj', 'down_proj', 'up_proj'],
    init_lora_weights: false,
  },
};

/** Makes random adapters on `model` (B scaled up so they matter) and saves them under a new temporary folder. */
export async function makeAdapters(
  model: LoadedModel,
  configs: Record<string, Record<string, unknown>> = ADAPTERS,
  root = mkdtempSync(join(tmpdir(), 'lorakit-serve-')),
): Promise<string> {
  let seed = 1;
  for (const [name, config] of Object.entries(configs)) {
    const peft = new PeftModel(adaptable(model));
    const a = await peft.addAdapter(name, config, { seed: seed++ });
    for (const l of a.layers.values())
      for (const [k, v] of Object.entries(l.values)) if (k.includes('B')) v.forEach((x, i) => (v[i] = x * 8));
    await saveAdapter(peft, name, join(root, name));
  }
  return root;
}

/** generate() with one adapter folder (or none), greedy, eos ignored: the reference a served row must equal. */
export async function reference(
  model: LoadedModel,
  tokenizer: HfTokenizer,
  adapterDir: string | null,
  inputIds: number[],
  maxNewTokens: number,
): Promise<number[]> {
  let adapter: ReturnType<PeftModel['generationAdapter']> | undefined;
  if (adapterDir) {
    const peft = new PeftModel(adaptable(model));
    await loadAdapter(peft, adapterDir);
    adapter = peft.generationAdapter();
  }
  const r = await generate(model, tokenizer, { inputIds, maxNewTokens, adapter, eosTokenId: null });
  return r.rows[0].tokenIds;
}
