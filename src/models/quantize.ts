/**
 * A quantized frozen base (QLoRA-style): every Linear/Conv1D of the transformer blocks gets its weight quantized
 * once on the host (nn/quantize.ts), and every graph built from the returned model multiplies by it through
 * ORT's integer kernels. Embeddings, norms and the output head stay in float, as bitsandbytes keeps lm_head: the
 * head's product over the vocabulary is the most sensitive one, and tied to the embedding it is no Linear here.
 * Not here: the quantization formats (nn/quantize.ts), the graph ops (graph/ops/quant.ts).
 */
import { LorakitError } from '../errors.ts';
import { type ModuleInfo, type QuantMode, type QuantizedWeight, quantizedBytes, quantizeWeight } from '../nn/index.ts';
import { lorakitCacheDir } from '../io/cache-root.ts';
import type { LoadedModel } from './load.ts';
import { cachedSpecs, quantCacheSlot, readQuantCache, writeQuantCache } from './quant-cache.ts';
import { ggufSourceOf, nativeBlockWeights } from './gguf-blocks.ts';

/** A Linear or Conv1D entry of a module list: the kinds quantizeBase quantizes. */
export type LinearInfo = Extract<ModuleInfo, { kind: 'linear' | 'conv1d' }>;

/** What quantizeBase did: the weights by HF name, and the bytes before (float32) and after. */
export interface QuantizedBase {
  mode: Exclude<QuantMode, 'none'>;
  weights: Map<string, QuantizedWeight>;
  /** float32 bytes of the quantized weights. */
  floatBytes: number;
  /** Bytes of their quantized form (for q4 including the int8 copy its input gradient uses). */
  quantizedBytes: number;
  /** Set when the weights point into a cache file: its path, and whether it existed (hit) or was written now. */
  cache?: { path: string; hit: boolean };
}

/** Whether a module of the list is quantized: Linears and Conv1Ds except the output head and tied weights. */
export function quantizable(m: ModuleInfo, all: readonly ModuleInfo[]): boolean {
  if (m.kind !== 'linear' && m.kind !== 'conv1d') return false;
  if (/(^|\.)lm_head$/.test(m.path)) return false;
  return !all.some((o) => o !== m && o.kind === 'embedding' && o.weightName === m.weightName);
}

/** The modules quantizeBase quantizes: quantizable ones, each weight once (shared weights are quantized once). */
export function quantizedModules(modules: readonly ModuleInfo[]): LinearInfo[] {
  const seen = new Set<string>();
  return modules.filter((m): m is LinearInfo => {
    if (m.kind !== 'linear' && m.kind !== 'conv1d') return false;
    if (!quantizable(m, modules) || seen.has(m.weightName)) return false;
    seen.add(m.weightName);
    return true;
  });
}

/**
 * Quantizes the weights of the quantizable modules in `modules`, reading each (as float32, in its stored layout)
 * with `read`, except those `native` already holds (a GGUF's own blocks, gguf-blocks.ts), which are taken as they
 * are. Weights shared by several modules are quantized once.
 */
export async function quantizeBase(
  modules: readonly ModuleInfo[],
  read: (name: string) => Promise<Float32Array>,
  mode: Exclude<QuantMode, 'none'>,
  native: ReadonlyMap<string, QuantizedWeight> = new Map(),
): Promise<QuantizedBase> {
  const weights = new Map<string, QuantizedWeight>();
  for (const m of quantizedModules(modules)) {
    const { inFeatures: inF, outFeatures: out } = m;
    const given = native.get(m.weightName);
    if (given) {
      weights.set(m.weightName, given);
      continue;
    }
    const stored = await read(m.weightName);
    const w = m.kind === 'conv1d' ? transpose(stored, inF, out) : stored; // [out, in]
    weights.set(m.weightName, quantizeWeight(w, out, inF, mode));
  }
  return summary(mode, weights);
}

function summary(mode: Exclude<QuantMode, 'none'>, weights: Map<string, QuantizedWeight>): QuantizedBase {
  let floatBytes = 0;
  let qBytes = 0;
  for (const q of weights.values()) {
    floatBytes += 4 * q.out * q.in;
    qBytes += quantizedBytes(q);
  }
  return { mode, weights, floatBytes, quantizedBytes: qBytes };
}

/** Options of quantizeModel. */
export interface QuantizeOptions {
  /**
   * Folder of the quantized-weight cache (quant-cache.ts); default `quantized/` under the lorakit cache root; false
   * quantizes in memory on every call (the graphs then carry the codes inline).
   */
  cacheDir?: string | false;
  /** Called with a one-line note when a cache file is unusable and rebuilt, or cannot be written; default
   * console.warn. */
  onNote?: (message: string) => void;
  /**
   * false: requantize the float32 weights even when the folder came from a GGUF whose blocks the mode could take as
   * they are (Q4_0/Q4_1 for q4, Q8_0 for int8; default: take them).
   */
  gguf?: false;
}

/**
 * The quantized base of `model`: from its cache file when one is valid, else quantized here and written there
 * (then read back, so the weights point into the file either way). An unusable file is rebuilt with a note; a
 * cache that cannot be written leaves the weights in memory, with a note.
 */
export async function cachedQuantizeBase(
  model: LoadedModel,
  mode: Exclude<QuantMode, 'none'>,
  opts: QuantizeOptions = {},
): Promise<QuantizedBase> {
  const modules = model.modules();
  // a folder converted from a GGUF: its Q4_0/Q4_1 (q4) or Q8_0 (int8) tensors are used as the file holds them
  const gguf = opts.gguf === false ? null : await ggufSourceOf(model.dir);
  const quantize = async () => {
    const c = model.config as { model_type: string; num_attention_heads?: number; num_key_value_heads?: number };
    const heads = c.model_type === 'llama' ? { q: c.num_attention_heads ?? 0, kv: c.num_key_value_heads ?? 0 } : null;
    const native = gguf ? (await nativeBlockWeights(gguf, quantizedModules(modules), mode, heads)).weights : undefined;
    return quantizeBase(modules, (n) => model.read(n), mode, native);
  };
  if (opts.cacheDir === false) return quantize();
  const note = opts.onNote ?? ((m: string) => console.warn(`lorakit: ${m}`));
  const specs = cachedSpecs(quantizedModules(modules));
  const cacheDir = opts.cacheDir ?? lorakitCacheDir('quantized');
  const slot = await quantCacheSlot(cacheDir, model.dir, mode, specs, gguf ? `gguf ${gguf}` : '');
  if (!slot) return quantize();
  const found = await readQuantCache(slot, mode, specs);
  if (found && 'weights' in found) return { ...summary(mode, found.weights), cache: { path: slot.path, hit: true } };
  if (found) note(`the quantized-weight cache ${slot.path} is unusable (${found.problem}); rebuilding it`);
  const base = await quantize();
  try {
    await writeQuantCache(slot, mode, base.weights);
  } catch (e) {
    note(`could not write the quantized-weight cache ${slot.path} (${(e as Error).message}); weights stay in memory`);
    return base;
  }
  const back = await readQuantCache(slot, mode, specs);
  if (!back || !('weights' in back)) return base; // removed or replaced by another process meanwhile: use ours
  return { ...summary(mode, back.weights), cache: { path: slot.path, hit: false } };
}

/**
 * The model with its frozen Linears quantized in `mode`: its contexts (and so every graph: train step, eval,
 * generation) multiply by the quantized weights. 'none' returns the model itself. The weights come from the
 * quantized-weight cache when it holds them (see QuantizeOptions).
 */
export async function quantizeModel(
  model: LoadedModel,
  mode: QuantMode,
  opts: QuantizeOptions = {},
): Promise<LoadedModel> {
  if (mode === 'none') return model;
  if (mode !== 'int8' && mode !== 'q4')
    throw new LorakitError('LK_INVALID_ARGUMENT', `quantize: mode must be none, int8 or q4, got ${String(mode)}`);
  const base = await cachedQuantizeBase(model, mode, opts);
  return {
    ...model,
    context: (graph, opts = {}) => model.context(graph, { quantized: base.weights, ...opts }),
    quantizedBase: base,
  };
}

function transpose(w: Float32Array, rows: number, cols: number): Float32Array {
  const t = new Float32Array(w.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[c * rows + r] = w[r * cols + c];
  return t;
}
