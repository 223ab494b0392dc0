/**
 * PEFT adapter folders: adapter_config.json + adapter_model.safetensors (+ README.md), readable by
 * `PeftModel.from_pretrained` and written by PEFT's `save_pretrained` (../shared/spec/peft-format.md §1).
 * Keys are `base_model.model.<module path>.<param>` with the adapter name removed, model-level tensors
 * `base_model.<name>` (tensors a method regenerates exactly, `saved: false`, are left out); modules_to_save are saved
 * whole under their plain key; trained biases of adapted layers under `<path>.base_layer.bias`. A method whose files
 * hold a layer otherwise (integer tensors, top-k codes, PEFT's redundant copies) gives its `fileLayout`.
 */
import { existsSync, join, mkdir, readFile } from '../io/host.ts';
import { LorakitError } from '../errors.ts';
import {
  canReadAs,
  SafetensorsFile,
  requireFolder,
  type TensorToWrite,
  writeSafetensors,
  writeFileAtomic,
} from '../io/index.ts';
import { weightShapeOf } from './binding.ts';
import type { FileData, FileDType, FileLayout } from './method.ts';
import type { Adapter, AddAdapterOptions, PeftModel } from './model.ts';
import { type Resolved, resolveConfig, savedConfig, savedType } from './registry.ts';

const PREFIX = 'base_model.model.';

/**
 * Where a saved tensor lives in an adapter: a layer tensor, a tensor of a layer's file layout (the method's
 * `fileLayout`), a model-level tensor, a base parameter trained in place (a bias), or a saved module's weight or
 * bias (PEFT drops `modules_to_save.<adapter>` from those keys).
 */
type Where =
  | { path: string; param: string }
  | { path: string; file: string; shape: number[]; dtype: FileDType }
  | { shared: string }
  | { weight: string }
  | { module: string; param: 'weight' | 'bias' };

/** The layouts of the layers whose method writes them its own way (`fileLayout`), by layer path. */
function layouts(a: Adapter): Map<string, FileLayout<any, any>> {
  const out = new Map<string, FileLayout<any, any>>();
  for (const [path, l] of a.layers) {
    const fl = a.method.fileLayout?.(l.info, l.settings, a.config, a.shared.specs);
    if (fl) out.set(path, fl);
  }
  return out;
}

/** Key → where, for every tensor the adapter saves (PEFT's key names, adapter name removed). */
function savedKeys(peft: PeftModel, a: Adapter, fls = layouts(a)): Map<string, Where> {
  const keys = new Map<string, Where>();
  for (const s of a.shared.specs) if (s.saved !== false) keys.set(`base_model.${s.name}`, { shared: s.name });
  for (const [path, l] of a.layers) {
    const fl = fls.get(path);
    if (fl) for (const t of fl.tensors) keys.set(`${PREFIX}${path}.${t.name}`, { path, file: t.name, ...t });
    else
      for (const s of l.specs) if (s.saved !== false) keys.set(`${PREFIX}${path}.${s.name}`, { path, param: s.name });
  }
  for (const w of a.weights.keys()) {
    const m = peft.base.modules.find((x) => x.kind !== 'embedding' && x.biasName === w && a.layers.has(x.path));
    keys.set(m ? `${PREFIX}${m.path}.base_layer.bias` : `${PREFIX}${w}`, { weight: w });
  }
  for (const [path, sm] of a.modules) {
    keys.set(`${PREFIX}${path}.weight`, { module: path, param: 'weight' });
    if (sm.bias) keys.set(`${PREFIX}${path}.bias`, { module: path, param: 'bias' });
  }
  return keys;
}

/** The shape a saved tensor has in the file. */
function shapeOf(a: Adapter, where: Where, layerShape: (path: string, param: string) => number[]): number[] {
  if ('shared' in where) return a.shared.specs.find((s) => s.name === where.shared)!.shape;
  if ('weight' in where) return [a.weights.get(where.weight)!.length];
  if ('module' in where) {
    const sm = a.modules.get(where.module)!;
    return where.param === 'weight' ? weightShapeOf(sm.module) : [sm.bias!.length];
  }
  if ('file' in where) return where.shape;
  return layerShape(where.path, where.param);
}

/** The host values of a saved tensor that is not part of a file layout. */
function savedValue(
  a: Adapter,
  where: Exclude<Where, { file: string }>,
  layerValues: (path: string) => Record<string, Float32Array>,
): Float32Array {
  if ('shared' in where) return a.shared.values[where.shared];
  if ('weight' in where) return a.weights.get(where.weight)!;
  if ('module' in where) {
    const sm = a.modules.get(where.module)!;
    return where.param === 'weight' ? sm.weight : sm.bias!;
  }
  return layerValues(where.path)[where.param];
}

/** Options of saveAdapter. */
export interface SaveAdapterOptions {
  /** Written into adapter_config.json as base_model_name_or_path. */
  baseModel?: string | null;
  /**
   * For an adapter whose initialiser replaced frozen weights (PiSSA, OLoRA): save it as a plain LoRA of the
   * untouched base (PEFT's `path_initial_model_for_weight_conversion`), so it loads on the original model. A method
   * without such a conversion (LoLDU, whose loader rebuilds its residual from W0) is saved as trained.
   */
  convertToBase?: boolean;
}

/** Writes adapter `name` as a PEFT folder. Each file is written atomically. */
export async function saveAdapter(
  peft: PeftModel,
  name: string,
  dir: string,
  opts: SaveAdapterOptions = {},
): Promise<void> {
  const a = peft.get(name);
  await mkdir(dir, { recursive: true });
  let config: Record<string, unknown> = {
    ...savedConfig(a.resolved),
    peft_type: savedType(a.resolved.base),
    inference_mode: true,
  };
  let layerValues = (path: string) => a.layers.get(path)!.values;
  let layerShape = (path: string, param: string) => a.layers.get(path)!.specs.find((s) => s.name === param)!.shape;
  const convert = a.method.convertToBase;
  // only methods with a conversion convert (LoLDU has none and is saved as trained; see docs/decisions.md)
  const converting = opts.convertToBase === true && a.bases.size > 0 && convert !== undefined;
  let keeps = (_where: Where) => true;
  if (converting) {
    const ls = [...a.layers.values()].map((l) => ({
      layer: l.info,
      settings: l.settings,
      config: a.config,
      p: l.values,
      shared: a.shared.values,
      initial: l.initial!,
    }));
    const converted = convert!(a.config, ls);
    // training settings of the adapter (IntTune's frozen factors, DyLoRA's sampling) say nothing about the plain LoRA
    const plain = savedConfig({ base: a.resolved.base, config: converted.config as Resolved['config'] });
    const resolved = resolveConfig(plain, `adapter "${name}" converted config`);
    config = { ...savedConfig(resolved), peft_type: savedType(resolved.base), inference_mode: true };
    // tensors the conversion leaves alone keep their values: DoRA's magnitude stays exact, since
    // W_res + s·B·A = W0 + s·B'·A' row for row (PEFT's subtract_mutated_init keeps only lora_A/lora_B and drops it)
    layerValues = (path) => ({ ...a.layers.get(path)!.values, ...converted.layers.get(path)! });
    const convertedSpec = (path: string, param: string) => {
      const l = a.layers.get(path)!;
      return resolved.method
        .params(l.info, resolved.method.settings?.(resolved.config, l.info), resolved.config)
        .find((s) => s.name === param);
    };
    layerShape = (path, param) => convertedSpec(path, param)!.shape;
    // tensors the plain LoRA does not have (SLoRA's N, folded into B by the conversion) are left out
    keeps = (where) =>
      !('path' in where) || !('param' in where) || convertedSpec(where.path, where.param) !== undefined;
  }
  const tensors: Record<string, TensorToWrite> = {};
  const fls = converting ? new Map<string, FileLayout<any, any>>() : layouts(a); // a converted LoRA has none
  const encoded = new Map<string, Record<string, FileData>>();
  for (const [key, where] of savedKeys(peft, a, fls)) {
    if ('file' in where) {
      if (!encoded.has(where.path)) {
        const l = a.layers.get(where.path)!;
        const v = { layer: l.info, settings: l.settings, config: a.config, p: l.values, shared: a.shared.values };
        encoded.set(where.path, fls.get(where.path)!.encode(v));
      }
      tensors[key] = { dtype: where.dtype, shape: where.shape, data: encoded.get(where.path)![where.file] };
      continue;
    }
    if (!keeps(where)) continue;
    const [shape, data] = [shapeOf(a, where, layerShape), savedValue(a, where, layerValues)];
    tensors[key] = { dtype: 'F32', shape, data };
  }
  await writeSafetensors(join(dir, 'adapter_model.safetensors'), tensors, { format: 'pt' });
  if ((opts.baseModel ?? null) !== null) config.base_model_name_or_path = opts.baseModel;
  if (Array.isArray(config.target_modules)) config.target_modules = [...(config.target_modules as string[])];
  const sorted = Object.fromEntries(
    Object.keys(config)
      .sort()
      .map((k) => [k, config[k]]),
  );
  await writeFileAtomic(join(dir, 'adapter_config.json'), `${JSON.stringify(sorted, null, 2)}\n`);
  const card = `---\nlibrary_name: peft\n---\n# ${name}\n\nA ${a.method.name} adapter written by lorakit (PEFT format: load it with \`PeftModel.from_pretrained\`).\n`;
  await writeFileAtomic(join(dir, 'README.md'), card);
}

/** Reads adapter_config.json of a PEFT folder, with errors naming the file. */
export async function readAdapterConfig(dir: string): Promise<Record<string, unknown>> {
  await requireFolder(dir, 'adapter folder');
  const path = join(dir, 'adapter_config.json');
  if (!existsSync(path))
    throw new LorakitError(
      'LK_FILE_NOT_FOUND',
      `${path} is missing: an adapter folder holds adapter_config.json and adapter_model.safetensors`,
    );
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, 'utf8'));
  } catch (e) {
    throw new LorakitError('LK_FILE_INVALID', `${path}: not valid JSON (${(e as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json))
    throw new LorakitError('LK_FILE_INVALID', `${path}: expected a JSON object`);
  if (typeof (json as Record<string, unknown>).peft_type !== 'string')
    throw new LorakitError(
      'LK_CONFIG_INVALID',
      `${path}: field peft_type is missing (expected a string such as "LORA")`,
    );
  return json as Record<string, unknown>;
}

/**
 * Loads a PEFT adapter folder into `peft` as adapter `name`. Every tensor the config implies must be in the file
 * with the right shape; f16/bf16 files are read as f32. Returns the file keys that were not used (PEFT warns too).
 * `opts` reach the adapter's initialiser, which runs before the file's values replace its tensors: a folder saved
 * as trained by an initialisation that replaced the frozen weight from calibration gradients (LoRA-GA) rebuilds that
 * weight only with the run's `calibrate` and `seed`.
 */
export async function loadAdapter(
  peft: PeftModel,
  dir: string,
  name = 'default',
  opts: Pick<AddAdapterOptions, 'seed' | 'calibrate'> & { configOverrides?: Record<string, unknown> } = {},
): Promise<{ unused: string[] }> {
  const { configOverrides, ...add } = opts;
  const config = { ...(await readAdapterConfig(dir)), ...configOverrides };
  const file = join(dir, 'adapter_model.safetensors');
  if (!existsSync(file)) {
    throw new LorakitError(
      'LK_FILE_NOT_FOUND',
      `${file} is missing (lorakit reads safetensors adapters, not adapter_model.bin)`,
    );
  }
  const a = await peft.addAdapter(name, config, { ...add, source: join(dir, 'adapter_config.json'), loading: true });
  try {
    return await readTensors(peft, a, file);
  } catch (e) {
    peft.deleteAdapter(name); // a failed load leaves no adapter behind
    throw e;
  }
}

/** Throws LK_FILE_INVALID naming the tensor when `v` holds a NaN or an infinity. */
function checkFinite(v: ArrayLike<number>, key: string, file: string): void {
  for (let i = 0; i < v.length; i++) {
    if (Number.isFinite(v[i])) continue;
    throw new LorakitError(
      'LK_FILE_INVALID',
      `${file}: tensor ${key} holds a non-finite value (${v[i]} at index ${i}); the adapter is broken`,
      { tensor: key },
    );
  }
}

/** A tensor of a file layout in float64: a float tensor as stored, an integer tensor exactly (it must be one). */
async function readLayoutTensor(st: SafetensorsFile, key: string, dtype: FileDType, file: string) {
  const stored = st.info(key).dtype;
  if (dtype === 'F32') {
    const v = await st.readAs(key, 'f64');
    checkFinite(v, key, file);
    return v;
  }
  if (!canReadAs(stored, 'i64')) {
    throw new LorakitError(
      'LK_FILE_INVALID',
      `${file}: tensor ${key} is ${stored}; expected an integer tensor (PEFT writes ${dtype})`,
      { tensor: key },
    );
  }
  const ints = await st.readAs(key, 'i64');
  return Float64Array.from(ints, (x) => {
    if (x > BigInt(Number.MAX_SAFE_INTEGER) || x < -BigInt(Number.MAX_SAFE_INTEGER))
      throw new LorakitError('LK_FILE_INVALID', `${file}: tensor ${key} holds ${x}, beyond exact integers`);
    return Number(x);
  });
}

/** Reads every tensor the adapter's config implies from `file` into `a`; returns the keys it did not use. */
async function readTensors(peft: PeftModel, a: Adapter, file: string): Promise<{ unused: string[] }> {
  const st = await SafetensorsFile.open(file);
  try {
    const fls = layouts(a);
    const keys = savedKeys(peft, a, fls);
    const layerShape = (path: string, param: string) => a.layers.get(path)!.specs.find((s) => s.name === param)!.shape;
    const fileTensors = new Map<string, Record<string, Float64Array>>();
    for (const [key, where] of keys) {
      if (!st.has(key)) {
        // PEFT itself saves no bias for bias "lora_only" (it looks for `<path>.bias`, the bias is at
        // `<path>.base_layer.bias`) and loads such folders with the base biases: so does lorakit
        if ('weight' in where) continue;
        throw new LorakitError(
          'LK_FILE_INVALID',
          `${file}: tensor ${key} is missing; the config implies it (${keys.size} tensors expected)`,
        );
      }
      const got = st.info(key).shape;
      const want = shapeOf(a, where, layerShape);
      const numel = (d: readonly number[]) => d.reduce((x, y) => x * y, 1);
      const fits =
        'weight' in where
          ? numel(got) === numel(want)
          : got.length === want.length && got.every((d, i) => d === want[i]);
      if (!fits) {
        throw new LorakitError(
          'LK_SHAPE_MISMATCH',
          `${file}: tensor ${key} has shape [${got}], but the base model needs [${want}]; was the adapter trained on another base?`,
        );
      }
      if ('file' in where) {
        const layerFile = fileTensors.get(where.path) ?? {};
        layerFile[where.file] = await readLayoutTensor(st, key, where.dtype, file);
        fileTensors.set(where.path, layerFile);
        continue;
      }
      const v = await st.readAs(key, 'f32');
      checkFinite(v, key, file);
      if ('weight' in where) a.weights.set(where.weight, v);
      else if ('shared' in where) a.shared.values[where.shared] = v;
      else if ('module' in where) {
        const sm = a.modules.get(where.module)!;
        if (sm.owner !== where.module) continue; // a tied module's copy is its owner's (PEFT saves both, equal)
        if (where.param === 'weight') sm.weight = v;
        else sm.bias = v;
      } else a.layers.get(where.path)!.values[where.param] = v;
    }
    for (const [path, layerFile] of fileTensors)
      Object.assign(a.layers.get(path)!.values, fls.get(path)!.decode(layerFile));
    for (const sm of a.modules.values()) {
      // tied partners see the owner's freshly read arrays
      if (sm.owner !== sm.module.path)
        Object.assign(sm, { weight: a.modules.get(sm.owner)!.weight, bias: a.modules.get(sm.owner)!.bias });
    }
    // PEFT saves a targeted embedding's whole base weight too (`<path>.base_layer.weight`); it must equal ours.
    const unused: string[] = [];
    for (const k of st.names()) {
      if (keys.has(k)) continue;
      const path =
        k.startsWith(PREFIX) && k.endsWith('.base_layer.weight')
          ? k.slice(PREFIX.length, -'.base_layer.weight'.length)
          : null;
      const layer = path ? a.layers.get(path) : undefined;
      if (!layer) {
        unused.push(k);
        continue;
      }
      const saved = await st.readAs(k, 'f32');
      const base = await layer.info.readWeight();
      if (saved.length !== base.length || saved.some((v, i) => v !== base[i])) {
        throw new LorakitError(
          'LK_UNSUPPORTED',
          `${file}: ${k} differs from the base model's ${path} weight (a resized or retrained embedding); lorakit ` +
            'cannot apply such an adapter to this base yet',
        );
      }
    }
    return { unused };
  } finally {
    await st.close();
  }
}
