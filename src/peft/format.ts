/**
 * PEFT adapter folders: adapter_config.json + adapter_model.safetensors (+ README.md), readable by
 * `PeftModel.from_pretrained` and written by PEFT's `save_pretrained` (../shared/spec/peft-format.md §1).
 * Keys are `base_model.model.<module path>.<param>` with the adapter name removed; modules_to_save are saved whole
 * under their plain key; trained biases of adapted layers under `<path>.base_layer.bias`.
 */
import { readFile, mkdir } from 'node:fs/promises';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { LorakitError } from '../errors.ts';
import { SafetensorsFile, writeSafetensors, writeFileAtomic } from '../io/index.ts';
import { conv2dWeightShape } from '../nn/index.ts';
import type { PeftModel, Adapter } from './model.ts';

const PREFIX = 'base_model.model.';

/** Key → [adapter layer path or weight name, param name or null] for every tensor the adapter saves. */
function savedKeys(peft: PeftModel, a: Adapter): Map<string, { path: string; param: string } | { weight: string }> {
  const keys = new Map<string, { path: string; param: string } | { weight: string }>();
  for (const [path, l] of a.layers)
    for (const s of l.specs) keys.set(`${PREFIX}${path}.${s.name}`, { path, param: s.name });
  for (const w of a.weights.keys()) {
    const m = peft.base.modules.find((x) => x.kind !== 'embedding' && x.biasName === w && a.layers.has(x.path));
    keys.set(m ? `${PREFIX}${m.path}.base_layer.bias` : `${PREFIX}${w}`, { weight: w });
  }
  return keys;
}

/** Writes adapter `name` as a PEFT folder. Each file is written atomically. */
export async function saveAdapter(
  peft: PeftModel,
  name: string,
  dir: string,
  { baseModel = null as string | null } = {},
): Promise<void> {
  const a = peft.get(name);
  await mkdir(dir, { recursive: true });
  const tensors: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
  for (const [key, where] of savedKeys(peft, a)) {
    if ('weight' in where) {
      const v = a.weights.get(where.weight)!;
      const m = peft.base.modules.find(
        (x) => x.weightName === where.weight || (x.kind !== 'embedding' && x.biasName === where.weight),
      );
      const shape = !m
        ? [v.length]
        : m.weightName === where.weight
          ? m.kind === 'embedding'
            ? [m.numEmbeddings, m.dim]
            : m.kind === 'conv2d'
              ? conv2dWeightShape(m)
              : m.kind === 'conv1d'
                ? [m.inFeatures, m.outFeatures]
                : [m.outFeatures, m.inFeatures]
          : [v.length];
      tensors[key] = { dtype: 'F32', shape, data: v };
    } else {
      const l = a.layers.get(where.path)!;
      const spec = l.specs.find((s) => s.name === where.param)!;
      tensors[key] = { dtype: 'F32', shape: spec.shape, data: l.values[where.param] };
    }
  }
  await writeSafetensors(join(dir, 'adapter_model.safetensors'), tensors, { format: 'pt' });
  const config: Record<string, unknown> = { ...a.config, peft_type: a.method.peftType, inference_mode: true };
  if (baseModel !== null) config.base_model_name_or_path = baseModel;
  if (Array.isArray(config.target_modules)) config.target_modules = [...(config.target_modules as string[])];
  const sorted = Object.fromEntries(
    Object.keys(config)
      .sort()
      .map((k) => [k, config[k]]),
  );
  await writeFileAtomic(join(dir, 'adapter_config.json'), `${JSON.stringify(sorted, null, 2)}\n`);
  const card =
    `---\nlibrary_name: peft\n---\n# ${name}\n\nA ${a.method.name} adapter written by lorakit (PEFT ` +
    `format: load it with \`PeftModel.from_pretrained\`).\n`;
  await writeFileAtomic(join(dir, 'README.md'), card);
}

/** Reads adapter_config.json of a PEFT folder, with errors naming the file. */
export async function readAdapterConfig(dir: string): Promise<Record<string, unknown>> {
  if (!existsSync(dir) || !statSync(dir).isDirectory())
    throw new LorakitError('LK_FILE_NOT_FOUND', `adapter folder ${dir} does not exist`);
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
 */
export async function loadAdapter(peft: PeftModel, dir: string, name = 'default'): Promise<{ unused: string[] }> {
  const config = await readAdapterConfig(dir);
  const file = join(dir, 'adapter_model.safetensors');
  if (!existsSync(file))
    throw new LorakitError(
      'LK_FILE_NOT_FOUND',
      `${file} is missing (lorakit reads safetensors adapters, not adapter_model.bin)`,
    );
  const a = await peft.addAdapter(name, config, { source: join(dir, 'adapter_config.json') });
  const st = await SafetensorsFile.open(file);
  try {
    const keys = savedKeys(peft, a);
    for (const [key, where] of keys) {
      if (!st.has(key)) {
        peft.deleteAdapter(name);
        throw new LorakitError(
          'LK_FILE_INVALID',
          `${file}: tensor ${key} is missing; the config implies it (${keys.size} tensors expected)`,
        );
      }
      const info = st.info(key);
      const want =
        'weight' in where
          ? [a.weights.get(where.weight)!.length]
          : a.layers.get(where.path)!.specs.find((s) => s.name === where.param)!.shape;
      const got = info.shape;
      const n = got.reduce((x, y) => x * y, 1),
        nw = want.reduce((x, y) => x * y, 1);
      if ('weight' in where ? n !== nw : got.length !== want.length || got.some((d, i) => d !== want[i])) {
        peft.deleteAdapter(name);
        throw new LorakitError(
          'LK_SHAPE_MISMATCH',
          `${file}: tensor ${key} has shape [${got}], but the base model needs [${want}]; was the adapter trained ` +
            `on another base?`,
        );
      }
      const v = await st.readAs(key, 'f32');
      if ('weight' in where) a.weights.set(where.weight, v);
      else a.layers.get(where.path)!.values[where.param] = v;
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
        peft.deleteAdapter(name);
        throw new LorakitError(
          'LK_UNSUPPORTED',
          `${file}: ${k} differs from the base model's ${path} weight (a resized or retrained embedding); lorakit ` +
            `cannot apply such an adapter to this base yet`,
        );
      }
    }
    return { unused };
  } finally {
    await st.close();
  }
}
