// The lorakit side of interop/check_gguf_llamacpp.py (run with `node --import tsx`): on a GGUF base, writes a seeded
// random PEFT LoRA adapter (all seven Linear targets of every layer, so the q/k row order matters), exports it with
// lorakit's GGUF adapter export, exports the merged model as GGUF F16 and the base as F16 and Q8_0, and records lorakit's logits of the
// prompt (last position, with and without the adapter) and its greedy continuation with the adapter.
// Usage: node --import tsx interop/gguf_lorakit_side.ts <base.gguf> <work dir>  → <work dir>/lorakit.json
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Graph } from '../src/graph/index.ts';
import { HfTokenizer, writeSafetensors } from '../src/io/index.ts';
import { buildCausalLM, generate, loadModel } from '../src/models/index.ts';
import { PeftModel, adaptable, loadAdapter } from '../src/peft/index.ts';
import { exportAdapterGguf, exportMergedGguf } from '../src/peft/gguf-export.ts';
import { compile, shutdownRuntime } from '../src/runtime/index.ts';

const [base, work] = process.argv.slice(2) as [string, string];
const PROMPT = 'The three primary colors are red, yellow and';
const R = 8;

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const model = await loadModel(base);
const tok = await HfTokenizer.fromDir(model.dir);
const adapterDir = join(work, 'adapter');
await mkdir(adapterDir, { recursive: true });
const rand = mulberry32(7);
const tensors: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
const targets = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
for (const m of model.modules()) {
  if (m.kind !== 'linear' || !targets.some((t) => m.path.endsWith(`.${t}`))) continue;
  const a = Float32Array.from({ length: R * m.inFeatures }, () => (rand() * 2 - 1) / Math.sqrt(m.inFeatures));
  const b = Float32Array.from({ length: m.outFeatures * R }, () => (rand() * 2 - 1) * 0.08);
  tensors[`base_model.model.${m.path}.lora_A.weight`] = { dtype: 'F32', shape: [R, m.inFeatures], data: a };
  tensors[`base_model.model.${m.path}.lora_B.weight`] = { dtype: 'F32', shape: [m.outFeatures, R], data: b };
}
await writeSafetensors(join(adapterDir, 'adapter_model.safetensors'), tensors);
const config = {
  peft_type: 'LORA',
  task_type: 'CAUSAL_LM',
  r: R,
  lora_alpha: 16,
  target_modules: targets,
  bias: 'none',
  use_dora: false,
  use_rslora: false,
  lora_dropout: 0,
  base_model_name_or_path: base,
};
await writeFile(join(adapterDir, 'adapter_config.json'), JSON.stringify(config, null, 2));
const adapterGguf = join(work, 'adapter.gguf');
const t0 = performance.now();
await exportAdapterGguf(model, adapterDir, adapterGguf);
const exportMs = performance.now() - t0;

const ids = tok.encode(PROMPT, { addSpecialTokens: false });
const peft = new PeftModel(adaptable(model));
await loadAdapter(peft, adapterDir);

async function lastLogits(withAdapter: boolean): Promise<number[]> {
  const g = new Graph(`gguf-interop-${withAdapter}`);
  const x = g.input('input_ids', 'i64', [1, ids.length]);
  const ctx = withAdapter ? model.context(g, { hooks: peft.hooks() }) : model.context(g);
  g.output('logits', buildCausalLM(ctx, { inputIds: x }).logits);
  const out = await (await compile(g, { worker: false })).run({
    input_ids: { data: BigInt64Array.from(ids.map(BigInt)), shape: [1, ids.length] },
  });
  const V = model.config.vocab_size;
  return [...(out.logits.data as Float32Array).subarray((ids.length - 1) * V, ids.length * V)];
}
const withAdapter = await lastLogits(true);
const baseLogits = await lastLogits(false);
const gen = await generate(model, tok, {
  inputIds: ids,
  maxNewTokens: 16,
  temperature: 0,
  adapter: peft.generationAdapter(),
  eosTokenId: null,
});
await exportMergedGguf(model, peft, join(work, 'merged-f16.gguf'), { type: 'F16' });
await exportMergedGguf(model, undefined, join(work, 'base-q8_0.gguf'), { type: 'Q8_0' });
await exportMergedGguf(model, undefined, join(work, 'base-f16.gguf'), { type: 'F16' });
await writeFile(
  join(work, 'lorakit.json'),
  JSON.stringify({ prompt: PROMPT, ids, withAdapter, base: baseLogits, greedy: gen.rows[0]!.tokenIds, exportMs }),
);
await model.close();
await shutdownRuntime();
console.log(`lorakit side done: greedy ${JSON.stringify(gen.rows[0]!.tokenIds)}`);
