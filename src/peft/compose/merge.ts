/**
 * Merging LoRA adapters into one, as PEFT's `add_weighted_adapter` does (every combination type, the same result to
 * float32 rounding, DARE's masks drawn from torch's generator in PEFT's order), plus LoRA-LEGO (lego.ts). The result
 * is an ordinary LoRA folder with r = lora_alpha = its rank, so its scaling is 1 and the sources' scalings are in
 * its weights. Two deliberate differences from PEFT, both where PEFT is wrong:
 *  - the result never has use_rslora: PEFT copies it from the first source, so PEFT scales the merged adapter by
 *    α/√r = √r instead of 1 (peft#3449); lorakit's merged adapter computes exactly what it merged;
 *  - the ΔW family weights each ΔWᵢ by wᵢ (PEFT ≥ 0.19); PEFT 0.18.1 used wᵢsᵢ, applying sᵢ twice (peft#3111).
 * Not here: the per-module rules (combine.ts), reading/writing folders (lora-folder.ts), the CLI (cli/merge-adapters).
 */
import { readdir, realpath } from '../../io/host.ts';
import { LorakitError } from '../../errors.ts';
import { checkOutputFolder, isWithin } from '../../io/index.ts';
import {
  bernoulliSource,
  type CombinationType,
  COMBINATION_TYPES,
  combineModule,
  isSvdType,
  type ModuleSource,
} from './combine.ts';
import { lego, type LegoOptions } from './lego.ts';
import { type LoraAdapter, type LoraToWrite, readLora, writeLora } from './lora-folder.ts';
import type { SignMethod } from './task-arithmetic.ts';

/** A merge: PEFT's combination types, or 'lego' (LoRA-LEGO, lego.ts). */
export type MergeType = CombinationType | 'lego';

/** All merge types, PEFT's first. */
export const MERGE_TYPES: readonly MergeType[] = [...COMBINATION_TYPES, 'lego'];

/** Options of mergeLoras (PEFT's argument names in camelCase). */
export interface MergeOptions {
  combination: MergeType;
  /** One weight per adapter (negative subtracts). */
  weights: readonly number[];
  /** Kept fraction for ties, dare_*, magnitude_prune*. */
  density?: number;
  /** Rank of the SVD types (default: the largest source rank) and of lego (default: the largest source rank). */
  rank?: number;
  svdClamp?: number;
  majoritySignMethod?: SignMethod;
  /**
   * DARE: the seed of torch's global generator right before PEFT's call (`torch.manual_seed(seed)`). The masks equal
   * PEFT's when `moduleOrder` is the model's module order and the first adapter has init_lora_weights true or false
   * (PEFT draws the merged adapter's initialisation first; that is skipped here). Default 0.
   */
  seed?: number;
  /** Module paths in the base model's order (PEFT's merge loop); default: paths sorted with numbers as numbers. */
  moduleOrder?: readonly string[];
  /** LoRA-LEGO settings (combination 'lego'). */
  lego?: Omit<LegoOptions, 'rank'>;
}

/** What a merge produced: the LoRA to write and its rank. */
export interface MergeResult extends LoraToWrite {
  rank: number;
  /** The type actually used: PEFT falls back to 'linear' for a single adapter, and so does lorakit. */
  combination: MergeType;
}

const bad = (msg: string) => new LorakitError('LK_INVALID_ARGUMENT', `merge: ${msg}`);

/** Paths sorted with digit runs compared as numbers (layers.2 before layers.10). */
const natural = (p: string, q: string) => p.localeCompare(q, 'en', { numeric: true });

/** The rank PEFT gives a source (r, or the largest of r and its rank_pattern). */
function sourceRank(a: LoraAdapter): number {
  return Math.max(...[...a.modules.values()].map((m) => m.r));
}

/** PEFT's target_modules of the merged adapter: the union of lists, or the alternation of regexes. */
function unionTargets(adapters: readonly LoraAdapter[]): unknown {
  const ts = adapters.map((a) => a.config.target_modules);
  if (ts.every((t) => typeof t === 'string')) return ts.map((t) => `(${t})`).join('|');
  if (ts.every((t) => Array.isArray(t))) return [...new Set(ts.flat() as string[])].sort();
  throw bad('the adapters mix target_modules lists and regex strings; PEFT refuses that combination too');
}

/** Merges adapters read by readLora. */
export function mergeLoras(adapters: readonly LoraAdapter[], o: MergeOptions): MergeResult {
  if (adapters.length === 0) throw bad('no adapters given');
  if (o.weights.length !== adapters.length)
    throw bad(`${adapters.length} adapters but ${o.weights.length} weights; give one weight per adapter`);
  if (!MERGE_TYPES.includes(o.combination))
    throw bad(`unknown combination ${JSON.stringify(o.combination)}; expected one of ${MERGE_TYPES.join(', ')}`);
  const type: MergeType = adapters.length === 1 && o.combination !== 'lego' ? 'linear' : o.combination;
  const ranks = adapters.map(sourceRank);
  let rank: number;
  if (type === 'lego' || isSvdType(type as CombinationType)) rank = o.rank ?? Math.max(...ranks);
  else if (type === 'cat') rank = ranks.reduce((s, r) => s + r, 0);
  else {
    if (new Set([...adapters.flatMap((a) => [...a.modules.values()].map((m) => m.r))]).size !== 1)
      throw bad(`${type} needs every adapter and module at one rank, got ranks ${ranks.join(', ')}; use cat or svd`);
    rank = ranks[0];
  }
  if (!Number.isInteger(rank) || rank < 1) throw bad(`rank must be a positive integer, got ${rank}`);
  const needsDensity = type !== 'lego' && !['linear', 'cat', 'svd'].includes(type);
  if (needsDensity && (o.density === undefined || !(o.density >= 0 && o.density <= 1)))
    throw bad(`${type} needs a density in [0, 1] (the kept fraction), got ${o.density}`);

  const paths = [...new Set(adapters.flatMap((a) => [...a.modules.keys()]))];
  const order = o.moduleOrder ?? [];
  const pos = new Map(order.map((p, i) => [p, i]));
  paths.sort((p, q) => (pos.get(p) ?? order.length) - (pos.get(q) ?? order.length) || natural(p, q));

  const modules: MergeResult['modules'] = new Map();
  const shapeOf = (path: string) => adapters.map((a) => a.modules.get(path)).find((m) => m !== undefined)!;
  for (const path of paths) {
    const ms = adapters.flatMap((a) => a.modules.get(path) ?? []);
    if (ms.some((m) => m.out !== ms[0].out || m.in !== ms[0].in || m.embedding !== ms[0].embedding))
      throw bad(`module ${path} has different shapes in different adapters: ${ms.map((m) => `[${m.out}, ${m.in}]`)}`);
  }
  if (type === 'lego') {
    for (const path of paths) {
      const m = shapeOf(path);
      const srcs = sourcesAt(adapters, o.weights, path);
      const { a, b } = lego(srcs, m.out, m.in, { ...o.lego, rank });
      modules.set(path, { a, b, r: rank, out: m.out, in: m.in, embedding: m.embedding });
    }
  } else {
    // PEFT initialises the merged adapter (one uniform draw per element of A, twice with init_lora_weights true, and
    // of B) before its merge loop draws DARE's masks from the same global generator
    const init = adapters[0].config.init_lora_weights ?? true;
    const skip = paths.reduce((s, p) => {
      const m = shapeOf(p);
      return s + (m.embedding ? 0 : (init === true ? 2 : 1) * rank * m.in + m.out * rank);
    }, 0);
    const keep = bernoulliSource(o.seed ?? 0, skip);
    for (const path of paths) {
      const m = shapeOf(path);
      const srcs = sourcesAt(adapters, o.weights, path);
      const shape = { out: m.out, in: m.in, transposed: m.transposed };
      const c = combineModule(type, srcs, shape, {
        rank,
        density: o.density,
        signMethod: o.majoritySignMethod,
        svdClamp: o.svdClamp,
        keep,
      });
      modules.set(path, { ...c, r: rank, out: m.out, in: m.in, embedding: m.embedding });
    }
  }
  const config: Record<string, unknown> = {
    ...adapters[0].config,
    r: rank,
    lora_alpha: rank,
    use_rslora: false,
    rank_pattern: {},
    alpha_pattern: {},
    target_modules: unionTargets(adapters),
    inference_mode: true,
  };
  return { config, modules, rank, combination: type };
}

/** The sources present at one module, with their weights (PEFT skips adapters that do not have the module). */
function sourcesAt(adapters: readonly LoraAdapter[], weights: readonly number[], path: string): ModuleSource[] {
  const out: ModuleSource[] = [];
  adapters.forEach((a, i) => {
    const m = a.modules.get(path);
    if (m) out.push({ a: m.a, b: m.b, r: m.r, scaling: m.scaling, weight: weights[i] });
  });
  return out;
}

/** Options of mergeAdapterFolders: MergeOptions with the folders instead of the weights. */
export interface MergeFoldersOptions extends Omit<MergeOptions, 'weights'> {
  adapters: readonly { dir: string; weight: number }[];
  out: string;
  /** Replace the files of an existing adapter folder at `out`. */
  overwrite?: boolean;
}

/** Reads the adapter folders, merges them and writes `out`; returns the merge. */
export async function mergeAdapterFolders(o: MergeFoldersOptions): Promise<MergeResult> {
  await checkOutputFolder(o.out, 'output folder', { option: 'out' });
  const outReal = await realpath(o.out).catch(() => null);
  if (outReal !== null) {
    for (const { dir } of o.adapters) {
      const inReal = await realpath(dir).catch(() => dir);
      if (isWithin(inReal, outReal) || isWithin(outReal, inReal))
        throw bad(`--out ${o.out} is or holds the input adapter ${dir}; choose another folder`);
    }
    const held = await readdir(outReal);
    if (held.length > 0 && !(o.overwrite === true && held.includes('adapter_config.json')))
      throw bad(
        `--out ${o.out} is not empty; choose a new folder${held.includes('adapter_config.json') ? ' (or --force to replace the adapter there)' : ''}`,
      );
  }
  const adapters = [];
  for (const { dir } of o.adapters) adapters.push(await readLora(dir));
  const merged = mergeLoras(adapters, { ...o, weights: o.adapters.map((a) => a.weight) });
  const what = o.adapters.map((a) => `${a.dir} (weight ${a.weight})`).join(', ');
  await writeLora(
    o.out,
    merged,
    `Written by lorakit merge-adapters: ${merged.combination} of ${what}, rank ${merged.rank}.`,
  );
  return merged;
}
