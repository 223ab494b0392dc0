/**
 * What every LoRA-family config shares with PEFT's LoraConfig: which modules are targeted (a list of names or
 * suffixes, a full-match regex, or "all-linear"), excluded, limited to some layers, and how rank_pattern /
 * alpha_pattern override r and alpha per module (PEFT: key matches `(.*\\.)?(key)$`, first match wins).
 */
import { z } from 'zod';
import { LorakitError } from '../errors.ts';
import type { LayerInfo } from './method.ts';

/** The targeting fields of PEFT's configs, with PEFT's names and defaults. */
export const targetingSchema = z.object({
  target_modules: z
    .union([z.array(z.string()), z.string()])
    .nullable()
    .default(null),
  exclude_modules: z
    .union([z.array(z.string()), z.string()])
    .nullable()
    .default(null),
  layers_to_transform: z
    .union([z.number().int(), z.array(z.number().int())])
    .nullable()
    .default(null),
  layers_pattern: z
    .union([z.string(), z.array(z.string())])
    .nullable()
    .default(null),
  modules_to_save: z.array(z.string()).nullable().default(null),
});
export type Targeting = z.output<typeof targetingSchema>;

/** Fields every PEFT config carries that do not change what an adapter computes (accepted, kept, not used). */
export const peftCommonFields = {
  peft_type: z.string(),
  task_type: z.string().nullable().optional(),
  base_model_name_or_path: z.string().nullable().optional(),
  revision: z.string().nullable().optional(),
  inference_mode: z.boolean().optional(),
  auto_mapping: z.unknown().optional(),
  peft_version: z.string().nullable().optional(),
} satisfies z.ZodRawShape;

/** Throws LK_CONFIG_INVALID naming the file and each bad field. */
export function parseWith<T extends z.ZodType>(schema: T, json: unknown, source: string): z.output<T> {
  const r = schema.safeParse(json);
  if (r.success) return r.data;
  const lines = r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`);
  throw new LorakitError('LK_CONFIG_INVALID', `${source}: ${lines.join('; ')}`);
}

function matchesKey(path: string, key: string): boolean {
  return path === key || path.endsWith(`.${key}`);
}

/** Whether `spec` (list of names/suffixes, or a full-match regex) selects `path`. */
export function matchesSpec(path: string, spec: string[] | string): boolean {
  if (typeof spec === 'string') return new RegExp(`^(?:${spec})$`).test(path);
  return spec.some((k) => matchesKey(path, k));
}

/** Whether the config targets this layer (the output head is never selected by "all-linear"). */
export function isTargeted(t: Targeting, layer: LayerInfo, outputHead: string | null): boolean {
  const spec = t.target_modules;
  if (spec === null) return false;
  if (spec === 'all-linear') {
    if ((layer.kind !== 'linear' && layer.kind !== 'conv1d') || layer.path === outputHead) return false;
  } else if (!matchesSpec(layer.path, spec)) return false;
  if (t.exclude_modules !== null && matchesSpec(layer.path, t.exclude_modules)) return false;
  if (t.modules_to_save?.some((k) => matchesKey(layer.path, k))) return false;
  if (t.layers_to_transform !== null) {
    const wanted = Array.isArray(t.layers_to_transform) ? t.layers_to_transform : [t.layers_to_transform];
    if (layer.layerIndex === null || !wanted.includes(layer.layerIndex)) return false;
  }
  return true;
}

/** The value of the first pattern key matching the module path (PEFT's rank_pattern / alpha_pattern rule). */
export function patternValue(pattern: Record<string, number>, path: string): number | undefined {
  for (const [key, v] of Object.entries(pattern)) {
    if (new RegExp(`^(.*\\.)?(${key})$`).test(path)) return v;
  }
  return undefined;
}

/** The transformer-block index in a module path (`model.layers.3.mlp` → 3), using `layers_pattern` if given. */
export function layerIndexOf(path: string, layersPattern: string | string[] | null = null): number | null {
  const names =
    layersPattern === null
      ? ['layers', 'h', 'layer', 'blocks']
      : Array.isArray(layersPattern)
        ? layersPattern
        : [layersPattern];
  for (const n of names) {
    const m = new RegExp(`(?:^|\\.)${n}\\.(\\d+)(?:\\.|$)`).exec(path);
    if (m) return Number(m[1]);
  }
  return null;
}

/** An error listing the model's module names when a config targets none of them. */
export function noTargetsError(spec: unknown, modules: string[], source: string): LorakitError {
  const shown = modules.slice(0, 40).join(', ') + (modules.length > 40 ? `, ... (${modules.length} in all)` : '');
  return new LorakitError(
    'LK_CONFIG_INVALID',
    `${source}: target_modules ${JSON.stringify(spec)} matches no module of the model; its modules are: ${shown}`,
  );
}

/** An error for layers_to_transform selecting no layer the targeted modules sit in, listing the model's layers. */
export function noLayersError(
  wanted: number | number[],
  layers: readonly LayerInfo[],
  layersPattern: string | string[] | null,
  source: string,
): LorakitError {
  const indices = [...new Set(layers.map((l) => l.layerIndex).filter((i): i is number => i !== null))].sort(
    (a, b) => a - b,
  );
  const pattern = layersPattern !== null ? ` under layers_pattern ${JSON.stringify(layersPattern)}` : '';
  const contiguous = indices.length > 0 && indices[indices.length - 1] === indices.length - 1;
  const have =
    indices.length === 0
      ? `no module path has a layer index${pattern}`
      : `the model has ${indices.length} layer${indices.length === 1 ? '' : 's'}, ` +
        (contiguous ? `0 to ${indices.length - 1}` : indices.join(', '));
  return new LorakitError(
    'LK_CONFIG_INVALID',
    `${source}: layers_to_transform ${JSON.stringify(wanted)} selects no layer of the targeted modules: ${have}`,
    { field: 'layers_to_transform' },
  );
}

/**
 * PEFT's LoraConfig fields of a LoRA on every attention and MLP projection of a Llama-style causal LM, without
 * dropout or bias (what the demo and Trans-LoRA's discriminator and student train).
 */
export function projectionLoraConfig(rank: number, alpha: number): Record<string, unknown> {
  return {
    peft_type: 'LORA',
    r: rank,
    lora_alpha: alpha,
    lora_dropout: 0,
    bias: 'none',
    task_type: 'CAUSAL_LM',
    target_modules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
  };
}
