/**
 * WeightSource: the graph tensor for a Hugging Face weight name. By default a frozen weight is an initializer that
 * points straight into its safetensors file (ORT memory-maps it; no bytes pass through JavaScript). Names in
 * `trainable` become graph inputs instead (full fine-tuning, PEFT modules_to_save), and `overrides` supply
 * in-memory values (merged weights, random test weights). Every weight is returned in the compute dtype.
 * Not here: which weights a model needs (models/), how adapters add their own parameters (peft/).
 */
import { LorakitError } from '../errors.ts';
import { type DType, type Graph, type Tensor, fmtShape } from '../graph/index.ts';
import type { TensorInfo, WeightsReader } from '../io/index.ts';

/** The dtypes a model computes in: f32 for real use, f64 for gradient checks. */
export type ComputeDType = 'f32' | 'f64';

/** Stored safetensors dtypes that a model can read, with the graph dtype of their initializer. */
const STORED: Record<string, DType | undefined> = { F32: 'f32', F16: 'f16', BF16: 'bf16', F64: 'f64' };

/** Where a weight lives: a reader plus, for each HF name, the tensor name inside the file (aliases resolved). */
export interface WeightStore {
  reader: WeightsReader;
  /** HF name → name in the file (identity for most checkpoints; e.g. GPT-2 files without "transformer."). */
  resolve(name: string): string;
  /** Path of the file (or shard) that holds the file-side name. */
  fileOf(fileName: string): string;
  /** The weights file, or the index of a sharded folder (for messages). */
  where: string;
}

export interface WeightSourceOptions {
  /** HF names that become f32 (or f64) graph inputs, named by the HF name, fed by the caller. */
  trainable?: Iterable<string>;
  /** In-memory values by HF name; a Float64Array makes an f64 initializer (cast to the compute dtype). */
  overrides?: ReadonlyMap<string, Float32Array | Float64Array>;
  /** Compute dtype (default 'f32'). */
  dtype?: ComputeDType;
  /**
   * Prefixes the graph names of this source's tensors, so a second copy of the model can live in the same graph
   * (a frozen reference model beside the adapted one; file-backed weights stay one mapping of the same file).
   */
  namePrefix?: string;
}

/** Makes a WeightStore over an opened reader (single file or shards). */
export function weightStore(reader: WeightsReader, resolve: (name: string) => string = (n) => n): WeightStore {
  const r = reader as WeightsReader & { path?: string; indexPath?: string; shardOf?: (n: string) => string };
  const fileOf = (n: string): string => (r.shardOf ? r.shardOf(n) : (r.path ?? '(in memory)'));
  return { reader, resolve, fileOf, where: r.indexPath ?? r.path ?? '(in memory)' };
}

/** Up to five names sharing the longest prefix with `name` (for "did you mean" lists). */
export function closeNames(name: string, names: readonly string[]): string[] {
  const common = (s: string) => {
    let i = 0;
    while (i < s.length && s[i] === name[i]) i++;
    return i;
  };
  return [...names].sort((a, b) => common(b) - common(a) || a.localeCompare(b)).slice(0, 5);
}

/** Checks one stored tensor against the shape the config implies; throws naming the tensor and both shapes. */
export function checkStoredShape(name: string, info: TensorInfo, shape: readonly number[], where: string): void {
  if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
    throw new LorakitError(
      'LK_SHAPE_MISMATCH',
      `weight '${name}' in ${where} has shape ${fmtShape(info.shape)}, but config.json implies ${fmtShape(shape)}; ` +
        'is config.json from the same checkpoint as the weights?',
      { tensor: name, stored: info.shape, expected: [...shape] },
    );
  }
  if (!STORED[info.dtype]) {
    throw new LorakitError(
      'LK_UNSUPPORTED',
      `weight '${name}' in ${where} is stored as ${info.dtype}; models read F32, F16, BF16 or F64 weights`,
      { tensor: name },
    );
  }
}

/** The error for a weight the file does not hold, listing names that look close. */
export function missingWeightError(name: string, store: WeightStore | null): LorakitError {
  if (!store)
    return new LorakitError(
      'LK_INVALID_ARGUMENT',
      `weight '${name}' has no value: no weights file, and it is neither trainable nor overridden`,
      { tensor: name },
    );
  const names = store.reader.names();
  const near = closeNames(name, names)
    .map((s) => `'${s}'`)
    .join(', ');
  return new LorakitError(
    'LK_FILE_INVALID',
    `weight '${name}' is missing from ${store.where}; it has ${names.length} ` +
      `tensors${names.length ? `, e.g. ${near}` : ''}`,
    { tensor: name },
  );
}

/** Hands out one graph tensor per HF weight name for one graph. */
export class WeightSource {
  /** Trainable weights as graph inputs, by HF name (feed them; take gradients with respect to them). */
  readonly inputs = new Map<string, Tensor>();
  readonly dtype: ComputeDType;
  private readonly trainable: Set<string>;
  private readonly overrides: ReadonlyMap<string, Float32Array | Float64Array>;
  private readonly cache = new Map<string, Tensor>();
  private readonly prefix: string;

  constructor(
    readonly graph: Graph,
    readonly store: WeightStore | null,
    opts: WeightSourceOptions = {},
  ) {
    this.trainable = new Set(opts.trainable ?? []);
    this.overrides = opts.overrides ?? new Map();
    this.dtype = opts.dtype ?? 'f32';
    this.prefix = opts.namePrefix ?? '';
  }

  /** The prefix of this source's graph names ('' unless a second copy of the model shares the graph). */
  get namePrefix(): string {
    return this.prefix;
  }

  /** Whether `name` has an in-memory value here (it then replaces the stored weight, quantized or not). */
  isOverridden(name: string): boolean {
    return this.overrides.has(name);
  }

  /** Whether `name` is a graph input here. */
  isTrainable(name: string): boolean {
    return this.trainable.has(name);
  }

  /** The tensor for HF weight `name`, whose shape must be `shape`, in the compute dtype. Built once per name. */
  get(name: string, shape: readonly number[]): Tensor {
    const hit = this.cache.get(name);
    if (hit) {
      if (hit.shape.some((d, i) => d !== shape[i]) || hit.rank !== shape.length) {
        throw new LorakitError(
          'LK_SHAPE_MISMATCH',
          `weight '${name}' is used with shape ${fmtShape(shape)} and ${fmtShape(hit.shape)}`,
          { tensor: name },
        );
      }
      return hit;
    }
    const t = this.build(name, shape);
    this.cache.set(name, t);
    return t;
  }

  private build(name: string, shape: readonly number[]): Tensor {
    const g = this.graph;
    if (this.trainable.has(name)) {
      const t = g.input(this.prefix + name, this.dtype, shape);
      this.inputs.set(name, t);
      return t;
    }
    const value = this.overrides.get(name);
    if (value) {
      const n = shape.reduce((a, b) => a * b, 1);
      if (value.length !== n) {
        throw new LorakitError(
          'LK_SHAPE_MISMATCH',
          `override for weight '${name}' has ${value.length} values, but its shape ${fmtShape(shape)} needs ${n}`,
          { tensor: name },
        );
      }
      return g
        .initializer(this.prefix + name, value instanceof Float64Array ? 'f64' : 'f32', shape, value)
        .cast(this.dtype);
    }
    const store = this.store;
    const fileName = store?.resolve(name);
    if (!store || fileName === undefined || !store.reader.has(fileName)) throw missingWeightError(name, store);
    const info = store.reader.info(fileName);
    const path = store.fileOf(fileName);
    checkStoredShape(name, info, shape, path);
    // f16/bf16 weights stay in their stored dtype on disk; one Cast per weight brings them to the compute dtype.
    const init = g.initializer(this.prefix + name, STORED[info.dtype]!, shape, {
      kind: 'file',
      path,
      offset: info.dataOffset,
      length: info.byteLength,
    });
    return init.cast(this.dtype);
  }
}
