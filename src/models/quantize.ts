/**
 * A quantized frozen base (QLoRA-style): every Linear/Conv1D of the transformer blocks gets its weight quantized
 * once on the host (nn/quantize.ts), and every graph built from the returned model multiplies by it through
 * ORT's integer kernels. Embeddings and norms stay in float; so does the output head by default, as bitsandbytes
 * keeps lm_head (its product over the vocabulary is the most sensitive one). With `head: true` the head is
 * quantized too (tied to the embedding, it gets its own quantized copy; the embedding's lookup stays float): its
 * forward and its input gradient, the step's largest products after the blocks', then run through the same
 * kernels. A quantized head must be frozen: a graph that would train or replace it is refused.
 * Not here: the quantization formats (nn/quantize.ts), the graph ops (graph/ops/quant.ts).
 */
import { LorakitError } from '../errors.ts';
import { transpose } from '../linalg/index.ts';
import {
  type ModuleInfo,
  type Int8Codes,
  type QuantInputs,
  type QuantKernels,
  type VocabGrad,
  type QuantMode,
  type QuantizedWeight,
  kernelsFor,
  quantizedBytes,
  quantizeWeight,
} from '../nn/index.ts';
import { cpuFeatures } from '../io/host.ts';
import { lorakitCacheDir } from '../io/cache-root.ts';
import type { LoadedModel } from './load.ts';
import {
  cacheLayout,
  cachedSpecs,
  layoutSuffix,
  quantCacheSlot,
  readQuantCache,
  writeQuantCache,
} from './quant-cache.ts';
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
  /** The output head's module path and weight name when it is quantized too (`head: true`), else null. */
  head: { path: string; weightName: string } | null;
}

/** Which modules a base quantizes beyond the blocks' Linears. */
export interface QuantizeScope {
  /** Quantize the output head too (default false). */
  head?: boolean;
}

const isHead = (m: ModuleInfo) => /(^|\.)lm_head$/.test(m.path);

/**
 * Whether a module of the list is quantized: Linears and Conv1Ds except tied weights and the output head, which is
 * quantized (tied or not) only with `scope.head`.
 */
export function quantizable(m: ModuleInfo, all: readonly ModuleInfo[], scope: QuantizeScope = {}): boolean {
  if (m.kind !== 'linear' && m.kind !== 'conv1d') return false;
  if (isHead(m)) return scope.head === true;
  return !all.some((o) => o !== m && o.kind === 'embedding' && o.weightName === m.weightName);
}

/** The modules quantizeBase quantizes: quantizable ones, each weight once (shared weights are quantized once). */
export function quantizedModules(modules: readonly ModuleInfo[], scope: QuantizeScope = {}): LinearInfo[] {
  const seen = new Set<string>();
  return modules.filter((m): m is LinearInfo => {
    if (m.kind !== 'linear' && m.kind !== 'conv1d') return false;
    if (!quantizable(m, modules, scope) || seen.has(m.weightName)) return false;
    seen.add(m.weightName);
    return true;
  });
}

/** The output head of a module list that `scope` quantizes, or null. */
function quantizedHead(modules: readonly ModuleInfo[], scope: QuantizeScope): QuantizedBase['head'] {
  if (!scope.head) return null;
  const h = modules.find(isHead);
  if (!h || (h.kind !== 'linear' && h.kind !== 'conv1d'))
    throw new LorakitError('LK_UNSUPPORTED', 'quantize head: the model has no output head (lm_head) to quantize');
  return { path: h.path, weightName: h.weightName };
}

/**
 * Refuses a graph that would train or replace a quantized output head: its weight among `trainable` (full
 * fine-tuning, a trained tied embedding) or `overrides` (merged weights), or its module among `saved` (an adapter's
 * modules_to_save copy, which would silently compute in float instead). The quantized head is frozen by design: its
 * weight gets no gradient, and the codes would not follow an update.
 */
export function refuseTrainedHead(
  base: QuantizedBase | undefined,
  o: { trainable?: Iterable<string>; overrides?: ReadonlyMap<string, unknown>; saved?: Iterable<string> },
): void {
  const head = base?.head;
  if (!head) return;
  const why = [...(o.trainable ?? [])].includes(head.weightName)
    ? `its weight '${head.weightName}' is trained here`
    : o.overrides?.has(head.weightName)
      ? `its weight '${head.weightName}' is replaced here (merged or in-memory weights)`
      : [...(o.saved ?? [])].includes(head.path)
        ? `the adapter trains a copy of '${head.path}' (modules_to_save)`
        : null;
  if (why)
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `quantize head: the output head is quantized, so it must stay frozen, but ${why}; quantize the head only ` +
        'for adapters that leave it frozen (or turn quantize_head off)',
      { option: 'quantize_head' },
    );
}

/**
 * Quantizes the weights of the quantizable modules in `modules`, reading each (as float32, in its stored layout)
 * with `read`, except those `native` already holds (a GGUF's own blocks, gguf-blocks.ts), which are taken as they
 * are. Weights shared by several modules are quantized once. `channels`: int8 per output channel instead of 8-bit
 * blocks (quantizeWeight).
 */
export async function quantizeBase(
  modules: readonly ModuleInfo[],
  read: (name: string) => Promise<Float32Array>,
  mode: Exclude<QuantMode, 'none'>,
  native: ReadonlyMap<string, QuantizedWeight> = new Map(),
  scope: QuantizeScope = {},
  channels = false,
): Promise<QuantizedBase> {
  const weights = new Map<string, QuantizedWeight>();
  const head = quantizedHead(modules, scope);
  const all = quantizedModules(modules, scope);
  const todo = all.filter((m) => !native.has(m.weightName));
  // the next weight is read (a file read on libuv's threads) while this one is quantized (JavaScript, this thread)
  const start = (k: number) => {
    const p = k < todo.length ? read(todo[k].weightName) : null;
    p?.catch(() => {}); // a failed read throws where it is awaited, not as an unhandled rejection meanwhile
    return p;
  };
  let k = 0;
  let next = start(0);
  for (const m of all) {
    const given = native.get(m.weightName);
    if (given) {
      weights.set(m.weightName, given);
      continue;
    }
    const stored = await next!;
    next = start(++k);
    const { inFeatures: inF, outFeatures: out } = m;
    const w = m.kind === 'conv1d' ? transpose(stored, inF, out) : stored; // [out, in]
    weights.set(m.weightName, quantizeWeight(w, out, inF, mode, channels));
  }
  return summary(mode, weights, head);
}

function summary(
  mode: Exclude<QuantMode, 'none'>,
  weights: Map<string, QuantizedWeight>,
  head: QuantizedBase['head'],
): QuantizedBase {
  let floatBytes = 0;
  let qBytes = 0;
  for (const q of weights.values()) {
    floatBytes += 4 * q.out * q.in;
    qBytes += quantizedBytes(q);
  }
  return { mode, weights, floatBytes, quantizedBytes: qBytes, head };
}

/** Options of quantizeModel. */
export interface QuantizeOptions extends QuantizeScope {
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
  /**
   * How int8's forward products take their input (nn/quant-linear.ts QuantInputs): `auto` (default) picks the
   * faster one for this CPU (kernelsFor: int8-rows on x86 with VNNI or AMX, int8 blocks on Arm with sdot, else float).
   */
  inputs?: 'auto' | QuantInputs;
  /** How the per-channel int8 codes are stored for ORT (nn/quant-linear.ts Int8Codes); `auto` (default) per CPU. */
  codes?: 'auto' | Int8Codes;
  /** How a quantized head's vocabulary gradient runs (nn/quant-linear.ts VocabGrad); `auto` (default) per CPU. */
  vocab?: 'auto' | VocabGrad;
}

/** The kernels `opts` ask for, `auto` resolved for this CPU (kernelsFor); a bad value is refused by name. */
export function quantKernels(opts: Pick<QuantizeOptions, 'inputs' | 'codes' | 'vocab'>): QuantKernels {
  // each choice is `auto` or one of its values; the error lists them in that order
  const choice = <T extends string>(what: string, v: T | 'auto' | undefined, values: readonly T[], option?: string) => {
    const c = v ?? 'auto';
    if (c === 'auto' || values.includes(c)) return c;
    const list = ['auto', ...values];
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `quantize ${what} must be ${list.slice(0, -1).join(', ')} or ${list.at(-1)}, got ${String(c)}`,
      option ? { option } : {},
    );
  };
  const inputs = choice('inputs', opts.inputs, ['float', 'int8', 'int8-rows'] as const, 'quantize_inputs');
  const codes = choice('codes', opts.codes, ['u8', 's8'] as const);
  const vocab = choice('vocab', opts.vocab, ['blocks', 'residual', 'float'] as const);
  let cpu: QuantKernels | undefined; // read from /proc/cpuinfo only for a choice left to `auto`
  const pick = <T>(v: T | 'auto', of: (k: QuantKernels) => T): T =>
    v === 'auto' ? of((cpu ??= kernelsFor(cpuFeatures()))) : v;
  return {
    inputs: pick(inputs, (k) => k.inputs),
    codes: pick(codes, (k) => k.codes),
    vocab: pick(vocab, (k) => k.vocab ?? 'blocks'),
  };
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
  const scope: QuantizeScope = { head: opts.head === true };
  const head = quantizedHead(modules, scope);
  // a folder converted from a GGUF: its Q4_0/Q4_1 (q4) or Q8_0 (int8) tensors are used as the file holds them
  const gguf = opts.gguf === false ? null : await ggufSourceOf(model.dir);
  const layout = cacheLayout(mode, quantKernels(opts));
  const quantize = async () => {
    const c = model.config as { model_type: string; num_attention_heads?: number; num_key_value_heads?: number };
    const heads = c.model_type === 'llama' ? { q: c.num_attention_heads ?? 0, kv: c.num_key_value_heads ?? 0 } : null;
    const native = gguf ? (await nativeBlockWeights(gguf, quantizedModules(modules), mode, heads)).weights : undefined;
    return quantizeBase(modules, (n) => model.read(n), mode, native, scope, layout.rows);
  };
  if (opts.cacheDir === false) return quantize();
  const note = opts.onNote ?? ((m: string) => console.warn(`lorakit: ${m}`));
  const specs = cachedSpecs(quantizedModules(modules, scope));
  // with the head the file holds one more weight: its own slot, so runs with and without it do not evict each other
  const variant = `${mode}${head ? '-head' : ''}${layoutSuffix(layout)}`;
  const cacheDir = opts.cacheDir ?? lorakitCacheDir('quantized');
  const slot = await quantCacheSlot(cacheDir, model.dir, variant, specs, gguf ? `gguf ${gguf}` : '');
  if (!slot) return quantize();
  const found = await readQuantCache(slot, mode, specs, layout);
  if (found && 'weights' in found)
    return { ...summary(mode, found.weights, head), cache: { path: slot.path, hit: true } };
  if (found) note(`the quantized-weight cache ${slot.path} is unusable (${found.problem}); rebuilding it`);
  const base = await quantize();
  try {
    await writeQuantCache(slot, mode, base.weights, layout);
  } catch (e) {
    note(`could not write the quantized-weight cache ${slot.path} (${(e as Error).message}); weights stay in memory`);
    return base;
  }
  const back = await readQuantCache(slot, mode, specs, layout);
  if (!back || !('weights' in back)) return base; // removed or replaced by another process meanwhile: use ours
  return { ...summary(mode, back.weights, head), cache: { path: slot.path, hit: false } };
}

/**
 * The model with its frozen Linears quantized in `mode` (and its output head with `opts.head`): its contexts (and so
 * every graph: train step, eval, generation) multiply by the quantized weights. 'none' returns the model itself
 * (`head` then has nothing to apply to and is refused). The weights come from the quantized-weight cache when it
 * holds them (see QuantizeOptions). A context that trains or replaces a quantized head is refused
 * (refuseTrainedHead).
 */
export async function quantizeModel(
  model: LoadedModel,
  mode: QuantMode,
  opts: QuantizeOptions = {},
): Promise<LoadedModel> {
  if (mode !== 'none' && mode !== 'int8' && mode !== 'q4')
    throw new LorakitError('LK_INVALID_ARGUMENT', `quantize: mode must be none, int8 or q4, got ${String(mode)}`);
  if (mode === 'none') {
    if (opts.head)
      throw new LorakitError(
        'LK_INVALID_ARGUMENT',
        "quantize head: the head is quantized in the base's format, " + 'and the mode is none; use int8 or q4',
        { option: 'quantize_head' },
      );
    return model;
  }
  const kernels = quantKernels(opts);
  const base = await cachedQuantizeBase(model, mode, opts);
  return {
    ...model,
    context: (graph, opts = {}) => {
      refuseTrainedHead(base, opts);
      const vocabHead = base.head?.weightName;
      return model.context(graph, { quantized: base.weights, quantKernels: kernels, vocabHead, ...opts });
    },
    quantizedBase: base,
    quantKernels: kernels,
  };
}
