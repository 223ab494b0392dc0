/**
 * Merged-model export: the base model with its active adapters merged in, written as a Hugging Face folder that
 * transformers' `from_pretrained` (and lorakit's `loadModel`) read like any other checkpoint — what PEFT users get
 * from `merge_and_unload()` + `save_pretrained`. Weights go to one `model.safetensors`: every tensor of the base
 * file under its stored name, merged ones (and modules_to_save copies) as F32 from `peft.weightOverrides()`, the
 * rest copied byte for byte in their stored dtype, so tied weights stay tied (a tied head is not stored, as in the
 * base). config.json, generation and tokenizer files are copied. The folder appears whole or not at all.
 * exportResized writes a structurally pruned model the same way: tensors of new shapes, config.json sizes changed.
 * Not here: the merge itself (model.ts, methods/), reading adapters (format.ts).
 */
import { copyFile, mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { LorakitError } from '../errors.ts';
import { f32ToBf16, f32ToF16, openWeights, writeSafetensors, type TensorToWrite } from '../io/index.ts';
import { familyOf, type LoadedModel } from '../models/index.ts';
import type { PeftModel } from './model.ts';

/** Files of a model folder that travel with the weights (config, generation defaults, tokenizer, chat template). */
const FOLDER_FILES =
  /^(config\.json|generation_config\.json|tokenizer(_config)?\.json|tokenizer\.model|special_tokens_map\.json|added_tokens\.json|vocab\.(json|txt)|merges\.txt|spiece\.model|chat_template\.(jinja|json)|preprocessor_config\.json)$/;

export interface ExportMergedOptions {
  /** Replace `outDir` if it exists (default false: an existing non-empty folder is an error). */
  overwrite?: boolean;
}

export interface ExportMergedResult {
  dir: string;
  /** Adapters merged into the weights. */
  adapters: string[];
  /** Stored names of the tensors written from merged values (F32). */
  merged: string[];
  /** Number of tensors in model.safetensors. */
  tensors: number;
  /** Other files copied from the model folder. */
  files: string[];
}

/**
 * Merges the active adapters of `peft` (a PeftModel over `model`) and writes the merged model to `outDir`.
 * Built in a hidden sibling folder and renamed into place, so a failure leaves `outDir` as it was.
 */
export async function exportMerged(
  model: LoadedModel,
  peft: PeftModel,
  outDir: string,
  options: ExportMergedOptions = {},
): Promise<ExportMergedResult> {
  const out = resolve(outDir);
  if (out === resolve(model.dir))
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `exportMerged: the output folder ${outDir} is the model folder; choose another`,
      { option: 'out' },
    );
  if (peft.activeAdapters.length === 0)
    throw new LorakitError('LK_INVALID_ARGUMENT', 'exportMerged: the PeftModel has no active adapter to merge');
  const replacing = await checkOutDir(out, outDir, options.overwrite ?? false);
  await peft.merge();
  const r = await writeModelFolder(model, peft.weightOverrides(), out, replacing);
  return { ...r, adapters: [...peft.merged] };
}

/**
 * Writes `model` with some weights replaced (`overrides`, by HF name; f32) as a Hugging Face folder at `outDir`:
 * merged adapters, or the weights of a full fine-tuning run.
 */
export async function exportModel(
  model: LoadedModel,
  overrides: ReadonlyMap<string, Float32Array>,
  outDir: string,
  options: ExportMergedOptions = {},
): Promise<Omit<ExportMergedResult, 'adapters'>> {
  const out = resolve(outDir);
  if (out === resolve(model.dir))
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `exportModel: the output folder ${outDir} is the model folder; choose another`,
      { option: 'out' },
    );
  return writeModelFolder(model, overrides, out, await checkOutDir(out, outDir, options.overwrite ?? false));
}

/**
 * Writes `model` with some tensors replaced by values of other shapes (`tensors`, by HF name) and some config.json
 * fields changed (`config`): a structurally pruned model (peft/slice.ts). Everything else as exportModel.
 */
export async function exportResized(
  model: LoadedModel,
  tensors: ReadonlyMap<string, { shape: number[]; data: Float32Array; dtype?: 'F32' | 'F16' | 'BF16' }>,
  config: Record<string, unknown>,
  outDir: string,
  options: ExportMergedOptions & { files?: Record<string, string> } = {},
): Promise<Omit<ExportMergedResult, 'adapters'>> {
  const out = resolve(outDir);
  if (out === resolve(model.dir))
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `exportResized: the output folder ${outDir} is the model folder; choose another`,
      { option: 'out' },
    );
  const overrides = new Map([...tensors].map(([k, t]) => [k, t.data]));
  const shapes = new Map([...tensors].map(([k, t]) => [k, { shape: t.shape, dtype: t.dtype ?? 'F32' }]));
  const replacing = await checkOutDir(out, outDir, options.overwrite ?? false);
  return writeModelFolder(model, overrides, out, replacing, { shapes, config, files: options.files ?? {} });
}

async function writeModelFolder(
  model: LoadedModel,
  overrides: ReadonlyMap<string, Float32Array>,
  out: string,
  replacing: boolean,
  resized: {
    shapes: ReadonlyMap<string, Resized>;
    config: Record<string, unknown>;
    files: Record<string, string>;
  } | null = null,
): Promise<Omit<ExportMergedResult, 'adapters'>> {
  const hidden = (what: string) =>
    join(dirname(out), `.${basename(out)}.${process.pid}.${randomBytes(6).toString('hex')}.${what}`);
  const tmp = hidden('tmp');
  await mkdir(tmp, { recursive: true });
  try {
    const { merged, tensors } = await writeWeights(model, overrides, join(tmp, 'model.safetensors'), resized?.shapes);
    const files = (await readdir(model.dir)).filter((f) => FOLDER_FILES.test(f)).sort();
    for (const f of files) await copyFile(join(model.dir, f), join(tmp, f));
    if (resized) {
      const config = JSON.parse(await readFile(join(model.dir, 'config.json'), 'utf8'));
      await writeFile(join(tmp, 'config.json'), `${JSON.stringify({ ...config, ...resized.config }, null, 2)}\n`);
      for (const [f, text] of Object.entries(resized.files)) await writeFile(join(tmp, f), text);
    }
    // the old folder is moved aside first, so `out` is never a mix of old and new files
    const old = replacing ? hidden('old') : null;
    if (old) await rename(out, old);
    await rename(tmp, out);
    if (old) await rm(old, { recursive: true, force: true });
    return { dir: out, merged, tensors, files };
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
}

/** Whether `out` must be replaced; throws if it exists and may not be (an empty folder is simply reused). */
async function checkOutDir(out: string, shown: string, overwrite: boolean): Promise<boolean> {
  let isDir: boolean;
  try {
    isDir = (await stat(out)).isDirectory();
  } catch {
    return false;
  }
  if (!isDir)
    throw new LorakitError('LK_INVALID_ARGUMENT', `exportMerged: ${shown} exists and is not a folder`, {
      option: 'out',
    });
  if ((await readdir(out)).length === 0) return true;
  if (!overwrite)
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `exportMerged: the output folder ${shown} exists and is not empty; remove it or pass overwrite (--force)`,
      { option: 'out' },
    );
  return true;
}

/** A tensor written in a new shape, and the dtype it is stored in (its values are f32 on the host). */
interface Resized {
  shape: number[];
  dtype: 'F32' | 'F16' | 'BF16';
}

/** model.safetensors: base tensors under their stored names, merged values (by HF name) as F32, resized ones in
 * their new shapes and dtypes. */
async function writeWeights(
  model: LoadedModel,
  overrides: ReadonlyMap<string, Float32Array>,
  path: string,
  resized: ReadonlyMap<string, Resized> = new Map(),
): Promise<{ merged: string[]; tensors: number }> {
  const family = familyOf(model.config);
  const shapes = new Map(model.parameters().map((p) => [p.name, p.shape]));
  const reader = await openWeights(model.dir);
  try {
    const tensors: Record<string, TensorToWrite> = {};
    const fromOverride = new Map<string, string>(); // stored name → HF name
    for (const [name, value] of overrides) {
      const stored = family.fileNames(name).find((n) => reader.has(n)) ?? name; // an absent optional head: its HF name
      const re = resized.get(name);
      const shape = re?.shape ?? (reader.has(stored) ? reader.info(stored).shape : shapes.get(name));
      if (!shape || shape.reduce((a, b) => a * b, 1) !== value.length) {
        throw new Error(`internal: merged weight ${name} has ${value.length} values, its shape is [${shape}]`);
      }
      fromOverride.set(stored, name);
      const dtype = re?.dtype ?? 'F32';
      const data = dtype === 'BF16' ? f32ToBf16(value) : dtype === 'F16' ? f32ToF16(value) : value;
      tensors[stored] = { dtype, shape, data };
    }
    for (const name of reader.names()) {
      if (fromOverride.has(name)) continue;
      const info = reader.info(name);
      tensors[name] = { dtype: info.dtype, shape: info.shape, data: await reader.read(name) };
    }
    await writeSafetensors(path, tensors, { ...reader.metadata, format: 'pt' });
    return { merged: [...fromOverride.keys()].sort(), tensors: Object.keys(tensors).length };
  } finally {
    await reader.close();
  }
}
