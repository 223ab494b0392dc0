/**
 * A plain LoRA PEFT folder as composition sees it, without a base model: per module path its A [r, in], B [out, r]
 * (float64), rank and scaling, from adapter_config.json and adapter_model.safetensors; and the writer of a merged
 * one. Keys follow PEFT's file format: `base_model.model.<path>.lora_A.weight` / `.lora_B.weight` for linear layers,
 * `base_model.model.<path>.lora_embedding_A` / `_B` for embeddings (A [r, vocab], B [dim, r]). Anything else in the
 * file (DoRA magnitudes, LoRA biases, modules_to_save, trainable tokens) is refused: no combination type has a rule
 * for it (PEFT's add_weighted_adapter drops DoRA's magnitudes silently, peft#3761).
 * Not here: loading an adapter onto a model (format.ts), the merge rules (combine.ts, lego.ts).
 */
import { existsSync, join, mkdir } from '../../io/host.ts';
import { LorakitError } from '../../errors.ts';
import { SafetensorsFile, writeFileAtomic, writeSafetensors } from '../../io/index.ts';
import { patternValue } from '../config.ts';
import { readAdapterConfig } from '../format.ts';

/** One LoRA module: ΔW = scaling·B·A, held [out, in] (`transposed`: PEFT's ΔW of it is [in, out]). */
export interface LoraModule {
  a: Float64Array;
  b: Float64Array;
  r: number;
  out: number;
  in: number;
  scaling: number;
  embedding: boolean;
  transposed: boolean;
}

/** A plain LoRA adapter read from a folder: its config as written and its modules by path. */
export interface LoraAdapter {
  dir: string;
  config: Record<string, unknown>;
  modules: Map<string, LoraModule>;
}

const PREFIX = 'base_model.model.';
// file key suffix -> which factor, and whether the module is an embedding
const SUFFIXES = [
  { suffix: '.lora_A.weight', factor: 'a', embedding: false },
  { suffix: '.lora_B.weight', factor: 'b', embedding: false },
  { suffix: '.lora_embedding_A', factor: 'a', embedding: true },
  { suffix: '.lora_embedding_B', factor: 'b', embedding: true },
] as const;

const unsupported = (where: string, msg: string) => new LorakitError('LK_UNSUPPORTED', `${where}: ${msg}`);

/** The config fields a merge refuses when set: they change what the adapter computes beyond s·B·A. */
function checkPlain(config: Record<string, unknown>, where: string): void {
  if (config.peft_type !== 'LORA')
    throw unsupported(where, `peft_type is ${JSON.stringify(config.peft_type)}; only LoRA adapters ("LORA") merge`);
  for (const field of ['use_dora', 'lora_bias', 'use_qalora'] as const) {
    if (config[field] === true)
      throw unsupported(where, `${field} is true; merging keeps only s·B·A, so this adapter would change meaning`);
  }
  const tp = config.target_parameters;
  if (Array.isArray(tp) && tp.length > 0) throw unsupported(where, 'target_parameters adapters do not merge (as PEFT)');
}

/** Reads a plain LoRA folder. */
export async function readLora(dir: string): Promise<LoraAdapter> {
  const config = await readAdapterConfig(dir);
  const cfgPath = join(dir, 'adapter_config.json');
  checkPlain(config, cfgPath);
  const file = join(dir, 'adapter_model.safetensors');
  if (!existsSync(file))
    throw new LorakitError('LK_FILE_NOT_FOUND', `${file} is missing (lorakit merges safetensors adapters only)`);
  const r0 = Number(config.r ?? 8);
  const alpha0 = Number(config.lora_alpha ?? 8);
  const rankPattern = (config.rank_pattern ?? {}) as Record<string, number>;
  const alphaPattern = (config.alpha_pattern ?? {}) as Record<string, number>;
  const rslora = config.use_rslora === true;
  const fanInFanOut = config.fan_in_fan_out === true;
  const f = await SafetensorsFile.open(file);
  const parts = new Map<
    string,
    { a?: Float64Array; b?: Float64Array; aShape?: number[]; bShape?: number[]; emb: boolean }
  >();
  try {
    for (const key of f.names()) {
      const hit = SUFFIXES.find((s) => key.startsWith(PREFIX) && key.endsWith(s.suffix));
      if (!hit)
        throw unsupported(
          file,
          `tensor ${key} is not a LoRA factor (lora_A / lora_B / lora_embedding_A / _B); DoRA magnitudes, LoRA ` +
            'biases, modules_to_save and trainable tokens have no merge rule',
        );
      const path = key.slice(PREFIX.length, key.length - hit.suffix.length);
      const shape = [...f.info(key).shape];
      if (shape.length !== 2)
        throw unsupported(file, `${key} has shape [${shape}]; only 2-D (linear, embedding) merge`);
      const p = parts.get(path) ?? { emb: hit.embedding };
      p[hit.factor] = Float64Array.from(await f.readAs(key, 'f32'));
      p[hit.factor === 'a' ? 'aShape' : 'bShape'] = shape;
      parts.set(path, p);
    }
  } finally {
    await f.close();
  }
  const modules = new Map<string, LoraModule>();
  for (const [path, p] of parts) {
    if (!p.a || !p.b) throw new LorakitError('LK_FILE_INVALID', `${file}: module ${path} has only one of A and B`);
    const [r, inF] = p.aShape!;
    const [out, rb] = p.bShape!;
    const want = patternValue(rankPattern, path) ?? r0;
    if (rb !== r || r !== want)
      throw new LorakitError(
        'LK_FILE_INVALID',
        `${file}: module ${path} has A [${p.aShape}] and B [${p.bShape}]; expected rank ${want} from ${cfgPath}`,
      );
    const alpha = patternValue(alphaPattern, path) ?? alpha0;
    const scaling = rslora ? alpha / Math.sqrt(r) : alpha / r;
    modules.set(path, { a: p.a, b: p.b, r, out, in: inF, scaling, embedding: p.emb, transposed: p.emb || fanInFanOut });
  }
  if (modules.size === 0) throw new LorakitError('LK_FILE_INVALID', `${file} holds no LoRA tensors`);
  return { dir, config, modules };
}

/** A merged LoRA to write: its config and per module A [r, in], B [out, r] (scaling 1 when r = lora_alpha). */
export interface LoraToWrite {
  config: Record<string, unknown>;
  modules: Map<string, { a: Float64Array; b: Float64Array; r: number; out: number; in: number; embedding: boolean }>;
}

/** Writes a LoRA PEFT folder (adapter_config.json with sorted keys, adapter_model.safetensors in F32, README.md). */
export async function writeLora(dir: string, lora: LoraToWrite, note: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  const tensors: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
  for (const [path, m] of [...lora.modules].sort(([p], [q]) => (p < q ? -1 : 1))) {
    const [sa, sb] = m.embedding ? ['.lora_embedding_A', '.lora_embedding_B'] : ['.lora_A.weight', '.lora_B.weight'];
    tensors[PREFIX + path + sa] = { dtype: 'F32', shape: [m.r, m.in], data: Float32Array.from(m.a) };
    tensors[PREFIX + path + sb] = { dtype: 'F32', shape: [m.out, m.r], data: Float32Array.from(m.b) };
  }
  await writeSafetensors(join(dir, 'adapter_model.safetensors'), tensors, { format: 'pt' });
  const c = lora.config;
  const sorted = Object.fromEntries(
    Object.keys(c)
      .sort()
      .map((k) => [k, c[k]]),
  );
  await writeFileAtomic(join(dir, 'adapter_config.json'), `${JSON.stringify(sorted, null, 2)}\n`);
  const card = `---\nlibrary_name: peft\n---\n# merged adapter\n\n${note}\n`;
  await writeFileAtomic(join(dir, 'README.md'), card);
}
