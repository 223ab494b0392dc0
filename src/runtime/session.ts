/**
 * A compiled graph's handle: `Session.run` validates feeds against the graph's declared inputs first, so a wrong feed
 * reads as a lorakit error naming the input and both shapes, never as a raw ORT message, then runs the ORT session
 * that every handle of an equal graph shares. Not here: compiling and sharing sessions (runtime.ts), ORT (backend.ts).
 */
import { LorakitError } from '../errors.ts';
import { type AnyTypedArray, type DType, ORT_TYPE, arrayMatchesDtype } from '../graph/dtype.ts';
import type { Graph } from '../graph/graph.ts';
import { type Dim, fmtShape } from '../graph/shape.ts';
import type { WireTensor } from './backend.ts';

/** A tensor on the host: typed data plus its shape. */
export interface HostTensor {
  dtype: DType;
  shape: number[];
  data: AnyTypedArray;
}
/** A feed: a typed array (for inputs with static shapes) or data with an explicit shape. */
export type Feed = AnyTypedArray | { data: AnyTypedArray; shape: readonly number[] };

/** What every handle of one compiled graph shares; the Runtime that compiled it owns it (runtime.ts). */
export interface SharedSession {
  /** The cache key: a hash of the serialised graph, the options and the weight files' identities. */
  readonly key: string;
  /** The execution provider the session runs on (CPU where WebGPU was asked for but is unavailable). */
  readonly ep: 'cpu' | 'webgpu';
  /** The inputs the serialised model kept (unused graph inputs are dropped). */
  readonly liveInputs: ReadonlySet<string>;
  /** True once the ORT session is gone (shutdownRuntime, or the last handle disposed after leaving the cache). */
  readonly released: boolean;
  run(
    feeds: Record<string, WireTensor>,
    transfer: readonly string[],
  ): Promise<{ outputs: Record<string, WireTensor>; returned: Record<string, ArrayBuffer> }>;
  /** Drops one handle's reference. */
  unref(): Promise<void>;
}

/** Turns ORT's message into a lorakit error that names the failing node when ORT says which. */
export function runtimeError(phase: string, e: unknown, graph?: Graph): LorakitError {
  const msg = String((e as Error)?.message ?? e);
  const node = /node\. Name:'([^']+)'/.exec(msg)?.[1] ?? /Node \(([^)]+)\)/.exec(msg)?.[1];
  const unknownOp = /(not a registered function\/op|No Op registered for (\S+))/.exec(msg);
  const where = node ? ` at node ${node}` : '';
  const n = node ? graph?.nodes.find((x) => x.name === node) : undefined;
  const shapes = n ? `; its inputs are ${n.inputs.map((t) => (t ? t.toString() : 'none')).join(', ')}` : '';
  const code = unknownOp ? 'LK_UNKNOWN_OP' : 'LK_RUNTIME';
  return new LorakitError(code, `ONNX Runtime failed ${phase}${where}${shapes}: ${msg}`, { node, ortMessage: msg });
}

/**
 * One handle to a compiled graph, returned by each `compile()`. Handles of equal graphs share one ORT session;
 * `dispose()` drops this handle only (see runtime.ts for when the ORT session itself is released).
 */
export class Session {
  private disposed = false;
  constructor(
    private readonly shared: SharedSession,
    /** The graph this handle was compiled from (equal in structure to every other handle's). */
    readonly graph: Graph,
  ) {}

  /** The cache key shared by every handle of an equal graph. */
  get key(): string {
    return this.shared.key;
  }
  /** The execution provider the session runs on. */
  get ep(): 'cpu' | 'webgpu' {
    return this.shared.ep;
  }

  /**
   * Runs the graph; returns every graph output (or only `fetch`) as host tensors. Feeds named in `transfer` are
   * moved to the worker thread and back rather than copied (a KV cache is tens of MB per decode step): a
   * `{data, shape}` feed gets `data` replaced by a view of the same memory when the run returns; the arrays passed in
   * are detached and must not be used again.
   */
  async run(
    feeds: Record<string, Feed>,
    fetch?: string[],
    { transfer }: { transfer?: readonly string[] } = {},
  ): Promise<Record<string, HostTensor>> {
    if (this.disposed || this.shared.released)
      throw new LorakitError(
        'LK_SESSION_DISPOSED',
        `session for graph "${this.graph.name}" was ${this.disposed ? 'disposed' : 'released by shutdownRuntime()'}; ` +
          `compile the graph again`,
      );
    const wire = validateFeeds(this.graph, feeds, this.shared.liveInputs);
    let out: Record<string, WireTensor>;
    let returned: Record<string, ArrayBuffer>;
    const lent = (transfer ?? []).filter((n) => wire[n]);
    const views = lent.map((n) => {
      const d = wire[n].data;
      return { Ctor: d.constructor, offset: d.byteOffset, length: d.length };
    });
    try {
      ({ outputs: out, returned } = await this.shared.run(wire, lent));
    } catch (e) {
      throw runtimeError('while running the graph', e, this.graph);
    }
    lent.forEach((name, i) => {
      const f = feeds[name],
        b = returned[name],
        v = views[i];
      if (!b || ArrayBuffer.isView(f)) return;
      const Ctor = v.Ctor as new (b: ArrayBuffer, offset: number, length: number) => AnyTypedArray;
      (f as { data: AnyTypedArray }).data = new Ctor(b, v.offset, v.length);
    });
    const result: Record<string, HostTensor> = {};
    for (const { name, tensor } of this.graph.outputs) {
      if (fetch && !fetch.includes(name)) continue;
      const t = out[name];
      result[name] = { dtype: tensor.dtype, shape: t.dims, data: t.data };
    }
    return result;
  }

  /** Drops this handle (idempotent); other handles of an equal graph keep working. */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    await this.shared.unref();
  }
}

/** Checks names, dtypes and shapes of feeds (binding symbolic dims consistently) and converts them for ORT. */
export function validateFeeds(
  graph: Graph,
  feeds: Record<string, Feed>,
  live: ReadonlySet<string>,
): Record<string, WireTensor> {
  const declared = new Map(graph.inputs.map((t) => [t.name, t]));
  for (const name of Object.keys(feeds)) {
    if (!declared.has(name)) {
      throw new LorakitError(
        'LK_FEED_UNKNOWN',
        `feed "${name}" is not an input of graph "${graph.name}"; inputs are ` +
          `${[...declared.keys()].join(', ') || '(none)'}`,
      );
    }
  }
  const symbols = new Map<string, { value: number; from: string }>();
  const wire: Record<string, WireTensor> = {};
  for (const t of graph.inputs) {
    const f = feeds[t.name];
    if (f === undefined) {
      if (!live.has(t.name)) continue;
      const missing = graph.inputs
        .filter((x) => live.has(x.name) && feeds[x.name] === undefined)
        .map((x) => x.toString());
      throw new LorakitError('LK_FEED_MISSING', `graph "${graph.name}" needs a value for ${missing.join(', ')}`);
    }
    const data = 'data' in f && !ArrayBuffer.isView(f) ? f.data : (f as AnyTypedArray);
    const shape =
      'shape' in f && !ArrayBuffer.isView(f)
        ? [...f.shape]
        : t.shape.every((d) => typeof d === 'number')
          ? (t.shape as number[])
          : null;
    if (!shape)
      throw new LorakitError(
        'LK_SHAPE_MISMATCH',
        `feed "${t.name}": input ${t.toString()} has symbolic dims, so give {data, shape}`,
      );
    if (!arrayMatchesDtype(data, t.dtype)) {
      throw new LorakitError(
        'LK_DTYPE_MISMATCH',
        `feed "${t.name}": expected ${t.dtype} (${expectedArray(t.dtype)}), got ${data.constructor.name}`,
      );
    }
    const bad = () =>
      new LorakitError(
        'LK_SHAPE_MISMATCH',
        `feed "${t.name}": shape ${fmtShape(shape)} does not fit input ${t.toString()}`,
      );
    if (shape.length !== t.rank) throw bad();
    shape.forEach((v, i) => {
      const d: Dim = t.shape[i];
      if (!Number.isInteger(v) || v < 0) throw bad();
      if (typeof d === 'number') {
        if (d !== v) throw bad();
        return;
      }
      const prev = symbols.get(d);
      if (prev && prev.value !== v) {
        throw new LorakitError(
          'LK_SHAPE_MISMATCH',
          `feed "${t.name}": dim ${d} is ${v} here but ${prev.value} in feed "${prev.from}"`,
        );
      }
      symbols.set(d, { value: v, from: t.name });
    });
    const n = shape.reduce((a, b) => a * b, 1);
    if (data.length !== n)
      throw new LorakitError(
        'LK_SHAPE_MISMATCH',
        `feed "${t.name}": shape ${fmtShape(shape)} needs ${n} values, got ${data.length}`,
      );
    if (live.has(t.name)) wire[t.name] = { type: ORT_TYPE[t.dtype], data, dims: shape };
  }
  return wire;
}

function expectedArray(d: DType): string {
  const names: Record<DType, string> = {
    f32: 'Float32Array',
    f64: 'Float64Array',
    i64: 'BigInt64Array',
    i32: 'Int32Array',
    f16: 'Uint16Array',
    bf16: 'Uint16Array',
    u8: 'Uint8Array',
    i8: 'Int8Array',
    bool: 'Uint8Array',
  };
  return names[d];
}
