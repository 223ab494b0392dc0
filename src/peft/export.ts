/**
 * Merged-model export: the base model with its active adapters merged in, written as a Hugging Face folder that
 * transformers' `from_pretrained` (and lorakit's `loadModel`) read like any other checkpoint — what PEFT users get
 * from `merge_and_unload()` + `save_pretrained`. Weights go to one `model.safetensors`: every tensor of the base
 * file under its stored name, merged ones (and modules_to_save copies) as F32 from `peft.weightOverrides()`, the
 * rest copied byte for byte in their stored dtype, so tied weights stay tied (a tied head is not stored, as in the
 * base). config.json, generation and tokenizer files are copied, and a marker listing what lorakit wrote. The folder
 * appears whole or not at all; it may not hold an input, and overwrite replaces only a folder lorakit exported.
 * exportResized writes a structurally pruned model the same way: tensors of new shapes, config.json sizes changed.
 * Not here: the merge itself (model.ts, methods/), reading adapters (format.ts).
 */
import {
  basename,
  copyFile,
  dirname,
  join,
  mkdir,
  processId,
  randomHex,
  readFile,
  readdir,
  rename,
  resolve,
  rm,
  stat,
  writeFile,
} from '../io/host.ts';
import { LorakitError } from '../errors.ts';
import {
  checkOutputFolder,
  f32ToBf16,
  f32ToF16,
  fsError,
  isSystemError,
  isWithin,
  openWeights,
  realPathOf,
  withFsErrors,
  writeSafetensors,
  type TensorToWrite,
} from '../io/index.ts';
import { familyOf, type LoadedModel } from '../models/index.ts';
import type { PeftModel } from './model.ts';

/** Files of a model folder that travel with the weights (config, generation defaults, tokenizer, chat template). */
const FOLDER_FILES =
  /^(config\.json|generation_config\.json|tokenizer(_config)?\.json|tokenizer\.model|special_tokens_map\.json|added_tokens\.json|vocab\.(json|txt)|merges\.txt|spiece\.model|chat_template\.(jinja|json)|preprocessor_config\.json)$/;

export interface ExportMergedOptions {
  /** Replace `outDir` if it exists and lorakit exported it (default false: a non-empty folder is an error). */
  overwrite?: boolean;
  /** Other folders the export reads (an adapter's): `outDir` may not be or hold one; the model folder always counts. */
  inputs?: readonly string[];
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
 * The file lorakit writes into every folder it exports, listing the files it wrote. `overwrite` replaces only a
 * folder holding it and nothing else, so no option can make an export delete a folder lorakit did not write.
 */
export const EXPORT_MARKER = '.lorakit-export.json';

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
  if (peft.activeAdapters.length === 0)
    throw new LorakitError('LK_INVALID_ARGUMENT', 'exportMerged: the PeftModel has no active adapter to merge');
  const replacing = await checkExportTarget(outDir, [model.dir, ...(options.inputs ?? [])], options.overwrite);
  await peft.merge();
  const r = await writeModelFolder(model, peft.weightOverrides(), resolve(outDir), replacing);
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
  const replacing = await checkExportTarget(outDir, [model.dir, ...(options.inputs ?? [])], options.overwrite);
  return writeModelFolder(model, overrides, resolve(outDir), replacing);
}

/**
 * Checks, before any work, that an export may go to `outDir`: it is not and does not contain any of `inputs` (through
 * symbolic links too), its parent can be written, and an existing folder is empty, or was exported by lorakit and
 * `overwrite` is set. Returns whether an existing folder will be replaced. Errors carry `option: 'out'`.
 */
export async function checkExportTarget(
  outDir: string,
  inputs: readonly string[],
  overwrite = false,
): Promise<boolean> {
  const bad = (message: string) => new LorakitError('LK_INVALID_ARGUMENT', message, { option: 'out', path: outDir });
  const out = await realPathOf(outDir);
  for (const input of inputs) {
    const real = await realPathOf(input);
    if (real === out) throw bad(`the output folder ${outDir} is the input folder ${input}; choose another`);
    if (isWithin(real, out))
      throw bad(
        `the output folder ${outDir} contains the input folder ${input}; writing there could replace it, so ` +
          `choose a folder outside it`,
      );
  }
  await checkOutputFolder(dirname(resolve(outDir)), 'the folder of the output', { option: 'out' });
  let entries: string[];
  try {
    if (!(await stat(outDir)).isDirectory()) throw bad(`the output folder ${outDir} exists and is not a folder`);
    entries = await readdir(outDir);
  } catch (e) {
    if (isSystemError(e) && e.code === 'ENOENT') return false;
    throw isSystemError(e) ? fsError(e, 'access', outDir, 'out') : e;
  }
  if (entries.length === 0) return true;
  if (!overwrite)
    throw bad(
      `the output folder ${outDir} exists and is not empty; remove it, or pass overwrite (--force) if lorakit ` +
        `exported it`,
    );
  const written = await markerFiles(outDir);
  if (written === null)
    throw bad(
      `the output folder ${outDir} was not exported by lorakit (it has no ${EXPORT_MARKER}), so overwrite ` +
        `(--force) does not replace it; remove it yourself or choose another folder`,
    );
  const foreign = entries.filter((f) => f !== EXPORT_MARKER && !written.includes(f)).sort();
  if (foreign.length)
    throw bad(
      `the output folder ${outDir} holds files lorakit did not write there (${foreign.slice(0, 5).join(', ')}` +
        `${foreign.length > 5 ? ', ...' : ''}), so overwrite (--force) does not replace it; move them away or ` +
        `choose another folder`,
    );
  return true;
}

/** The files an earlier export wrote into `dir`, from its marker; null when `dir` has no valid marker. */
async function markerFiles(dir: string): Promise<string[] | null> {
  try {
    const m = JSON.parse(await readFile(join(dir, EXPORT_MARKER), 'utf8')) as { format?: unknown; files?: unknown };
    const ok = m.format === 'lorakit.export' && Array.isArray(m.files) && m.files.every((f) => typeof f === 'string');
    return ok ? (m.files as string[]) : null;
  } catch {
    return null;
  }
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
  const replacing = await checkExportTarget(outDir, [model.dir, ...(options.inputs ?? [])], options.overwrite);
  const overrides = new Map([...tensors].map(([k, t]) => [k, t.data]));
  const shapes = new Map([...tensors].map(([k, t]) => [k, { shape: t.shape, dtype: t.dtype ?? 'F32' }]));
  return writeModelFolder(model, overrides, resolve(outDir), replacing, { shapes, config, files: options.files ?? {} });
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
  const hidden = (what: string) => join(dirname(out), `.${basename(out)}.${processId()}.${randomHex(6)}.${what}`);
  const tmp = hidden('tmp');
  await withFsErrors('write', out, () => mkdir(tmp, { recursive: true }), 'out');
  try {
    const { merged, tensors } = await writeWeights(model, overrides, join(tmp, 'model.safetensors'), resized?.shapes);
    const files = (await readdir(model.dir)).filter((f) => FOLDER_FILES.test(f)).sort();
    await withFsErrors(
      'write',
      out,
      async () => {
        for (const f of files) await copyFile(join(model.dir, f), join(tmp, f));
        if (resized) {
          const config = JSON.parse(await readFile(join(model.dir, 'config.json'), 'utf8'));
          await writeFile(join(tmp, 'config.json'), `${JSON.stringify({ ...config, ...resized.config }, null, 2)}\n`);
          for (const [f, text] of Object.entries(resized.files)) await writeFile(join(tmp, f), text);
        }
        const written = ['model.safetensors', ...new Set([...files, ...Object.keys(resized?.files ?? {})])];
        const marker = { format: 'lorakit.export', version: 1, files: written };
        await writeFile(join(tmp, EXPORT_MARKER), `${JSON.stringify(marker, null, 2)}\n`);
        // the old folder is moved aside first, so `out` is never a mix of old and new files
        const old = replacing ? hidden('old') : null;
        if (old) await rename(out, old);
        await rename(tmp, out);
        if (old) await rm(old, { recursive: true, force: true });
      },
      'out',
    );
    return { dir: out, merged, tensors, files };
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
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
