/**
 * GGUF export for llama.cpp: a PEFT LoRA adapter as a llama.cpp LoRA adapter file (`--lora`), and a model with its
 * adapters merged as a GGUF model in F16 or Q8_0. Facts of llama.cpp's format (its convert_lora_to_gguf.py and
 * llama-adapter.cpp): general.type "adapter", adapter.type "lora", adapter.lora.alpha (f32); per adapted weight
 * `<gguf weight>.lora_a` holding PEFT's lora_A [r, in] and `.lora_b` holding lora_B [out, r]; llama.cpp scales by
 * alpha / r, where r is lora_a's row count; and for the llama architecture the q/k rotary row order of the base
 * (gguf-model.ts) applies to lora_b's rows (the output rows), lora_a is untouched.
 * Not here: reading GGUF (io/gguf*.ts), the merge itself (peft/model.ts).
 */
import { join, readFile } from '../io/host.ts';
import { LorakitError } from '../errors.ts';
import {
  type GgufKv,
  GgufFile,
  type GgufTensorToWrite,
  SafetensorsFile,
  ggmlTypeByName,
  ggufTensorName,
  permuteRotaryRows,
  quantizeQ8_0,
  writeGguf,
} from '../io/index.ts';
import { f32ToF16 } from '../io/half.ts';
import type { LoadedModel } from '../models/index.ts';
import { readAdapterConfig } from './format.ts';
import type { PeftModel } from './model.ts';

/** What an adapter export wrote. */
export interface GgufAdapterResult {
  path: string;
  /** Adapted base weights (GGUF names). */
  modules: string[];
  /** adapter.lora.alpha written. */
  alpha: number;
}

/** The llama.cpp architecture of a lorakit model (Llama, Mistral and SmolLM are all "llama" there). */
function ggufArch(model: LoadedModel): 'llama' | 'qwen2' {
  const t = model.config.model_type;
  if (t === 'llama' || t === 'mistral') return 'llama';
  if (t === 'qwen2') return 'qwen2';
  throw new LorakitError(
    'LK_UNSUPPORTED',
    `GGUF export: model_type "${t}" has no llama.cpp architecture lorakit writes; supported: llama, mistral, qwen2`,
  );
}

/** HF rows → GGUF rows of weight `hfName` [rows, cols] (q/k of the llama architecture), else the values as they are. */
function toGgufRows(model: LoadedModel, hfName: string, values: Float32Array, cols: number): Float32Array {
  if (ggufArch(model) !== 'llama') return values;
  const c = model.config as { num_attention_heads: number; num_key_value_heads: number };
  if (/\.q_proj\.weight$/.test(hfName)) return permuteRotaryRows(values, c.num_attention_heads, cols, false);
  if (/\.k_proj\.weight$/.test(hfName)) return permuteRotaryRows(values, c.num_key_value_heads, cols, false);
  return values;
}

const kv = (type: GgufKv['type'], value: GgufKv['value'], itemType?: GgufKv['itemType']): GgufKv =>
  itemType ? { type, value, itemType } : { type, value };

/**
 * Writes the LoRA adapter folder `adapterDir` (PEFT format) for base `model` as a llama.cpp adapter GGUF at `out`.
 * Plain LoRA on Linear modules only (no DoRA, biases, modules_to_save or alpha_pattern: llama.cpp has one alpha and
 * no such parts); rsLoRA and rank_pattern are folded exactly (alpha set so alpha / r is PEFT's scale, or B scaled).
 */
export async function exportAdapterGguf(
  model: LoadedModel,
  adapterDir: string,
  out: string,
): Promise<GgufAdapterResult> {
  const arch = ggufArch(model);
  const config = await readAdapterConfig(adapterDir);
  const where = join(adapterDir, 'adapter_config.json');
  const refuse = (what: string) =>
    new LorakitError('LK_UNSUPPORTED', `${where}: ${what}; llama.cpp's LoRA adapters hold plain LoRA only`, {
      file: where,
    });
  if (config.peft_type !== 'LORA') throw refuse(`peft_type is ${JSON.stringify(config.peft_type)}, not "LORA"`);
  if (config.use_dora === true) throw refuse('use_dora is true');
  if (config.bias !== undefined && config.bias !== 'none') throw refuse(`bias is ${JSON.stringify(config.bias)}`);
  if (config.lora_bias === true) throw refuse('lora_bias is true');
  if (Array.isArray(config.modules_to_save) && config.modules_to_save.length) throw refuse('modules_to_save is set');
  const alphaPattern = config.alpha_pattern as Record<string, unknown> | undefined;
  if (alphaPattern && Object.keys(alphaPattern).length) throw refuse('alpha_pattern is set');
  const r = Number(config.r ?? 8);
  const loraAlpha = Number(config.lora_alpha ?? 8);
  const rslora = config.use_rslora === true;
  // llama.cpp scales by alpha / r_m; PEFT by lora_alpha / r_m (or / sqrt(r_m) with rsLoRA)
  const alpha = rslora ? loraAlpha * Math.sqrt(r) : loraAlpha;
  const st = await SafetensorsFile.open(join(adapterDir, 'adapter_model.safetensors'));
  const tensors: GgufTensorToWrite[] = [];
  const modules: string[] = [];
  try {
    const f32 = ggmlTypeByName('F32');
    for (const key of st.names()) {
      const m = /^base_model\.model\.(.+)\.lora_A(?:\.default)?\.weight$/.exec(key);
      if (!m) {
        if (!/\.lora_B(?:\.default)?\.weight$/.test(key))
          throw refuse(`tensor ${key} of adapter_model.safetensors is not a lora_A/lora_B weight`);
        continue;
      }
      const path = m[1]!;
      const bKey = key.replace('.lora_A', '.lora_B');
      const hfWeight = `${path}.weight`;
      const gg = ggufTensorName(hfWeight);
      if (gg === undefined || gg === 'token_embd.weight')
        throw refuse(`the adapted module ${path} is not a Linear layer of a llama.cpp model`);
      const [ra, inF] = st.info(key).shape as [number, number];
      const [outF, rb] = st.info(bKey).shape as [number, number];
      if (ra !== rb) throw refuse(`${key} has rank ${ra} but ${bKey} has ${rb}`);
      const a = await st.readAs(key, 'f32'); // [r, in]
      let b = await st.readAs(bKey, 'f32'); // [out, r]
      const peftScale = rslora ? loraAlpha / Math.sqrt(ra) : loraAlpha / ra;
      const fold = peftScale / (alpha / ra); // 1 unless rsLoRA with rank_pattern
      if (fold !== 1) b = b.map((x) => x * fold);
      b = toGgufRows(model, hfWeight, b, rb);
      const base = gg.replace(/\.weight$/, '.weight');
      tensors.push({ name: `${base}.lora_a`, type: f32, dims: [inF, ra], data: bytes(a) });
      tensors.push({ name: `${base}.lora_b`, type: f32, dims: [rb, outF], data: bytes(b) });
      modules.push(gg);
    }
  } finally {
    await st.close();
  }
  if (modules.length === 0) throw refuse('adapter_model.safetensors holds no lora_A weights');
  const metadata = new Map<string, GgufKv>([
    ['general.architecture', kv('string', arch)],
    ['general.type', kv('string', 'adapter')],
    ['general.name', kv('string', `lorakit LoRA adapter (${adapterDir})`)],
    ['adapter.type', kv('string', 'lora')],
    ['adapter.lora.alpha', kv('f32', alpha)],
  ]);
  await writeGguf(out, metadata, tensors);
  return { path: out, modules, alpha };
}

/** A typed array's bytes (little-endian hosts). */
function bytes(a: Float32Array | Uint16Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Options of `exportMergedGguf`. */
export interface MergedGgufOptions {
  /** Element type of the 2-D weights: F16 (default) or Q8_0; norms stay F32 as llama.cpp keeps them. */
  type?: 'F16' | 'Q8_0';
}

/**
 * Writes `model` with the active adapters of `peft` merged (or `model` alone when `peft` is undefined) as a GGUF
 * model file. The base must be a GGUF (its tokenizer and general metadata are carried over): lorakit builds the
 * `<arch>.*` keys from the config; an HF folder base has no GGUF tokenizer metadata to carry and is refused.
 */
export async function exportMergedGguf(
  model: LoadedModel,
  peft: PeftModel | undefined,
  out: string,
  options: MergedGgufOptions = {},
): Promise<{ path: string; tensors: number }> {
  const arch = ggufArch(model);
  let source: string;
  try {
    source = JSON.parse(await readFile(join(model.dir, 'gguf-source.json'), 'utf8')).gguf;
  } catch {
    throw new LorakitError(
      'LK_UNSUPPORTED',
      `GGUF export of a merged model needs a GGUF base (its tokenizer metadata is carried over); ${model.dir} is ` +
        'a Hugging Face folder',
    );
  }
  const src = await GgufFile.open(source);
  const metadata = new Map<string, GgufKv>();
  try {
    for (const [k, v] of src.header.metadata)
      if (k.startsWith('general.') || k.startsWith('tokenizer.') || k.startsWith(`${arch}.`)) metadata.set(k, v);
  } finally {
    await src.close();
  }
  metadata.set('general.file_type', kv('u32', options.type === 'Q8_0' ? 7 : 1)); // llama.cpp's MOSTLY_Q8_0 / MOSTLY_F16
  metadata.delete('general.alignment');
  if (peft) await peft.merge();
  const overrides = peft ? peft.weightOverrides() : new Map<string, Float32Array>();
  const quant = options.type === 'Q8_0' ? ggmlTypeByName('Q8_0') : ggmlTypeByName('F16');
  const tensors: GgufTensorToWrite[] = [];
  for (const p of model.parameters()) {
    const gg = ggufTensorName(p.name);
    if (gg === undefined) throw new Error(`internal: ${p.name} has no GGUF name`);
    let v = overrides.get(p.name) ?? (await model.read(p.name));
    const dims = [...p.shape].reverse();
    if (p.shape.length === 2) v = toGgufRows(model, p.name, v, p.shape[1]!);
    if (p.shape.length === 1 || (quant.name === 'Q8_0' && dims[0]! % 32 !== 0)) {
      tensors.push({ name: gg, type: ggmlTypeByName('F32'), dims, data: bytes(v) });
    } else if (quant.name === 'Q8_0') {
      tensors.push({ name: gg, type: quant, dims, data: quantizeQ8_0(v) });
    } else {
      tensors.push({ name: gg, type: quant, dims, data: bytes(f32ToF16(v)) });
    }
  }
  await writeGguf(out, metadata, tensors);
  return { path: out, tensors: tensors.length };
}
