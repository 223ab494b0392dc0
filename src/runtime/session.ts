/**
 * Compile a Graph into an ONNX Runtime session and run it with named feeds.
 * Feeds are validated against the graph's declared inputs first, so a wrong feed reads as a lorakit error naming
 * the input and both shapes, never as a raw ORT message. Sessions are cached by a hash of the serialised model.
 */
import { createHash } from 'node:crypto';
import { existsSync, linkSync, copyFileSync, mkdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { LorakitError } from '../errors.ts';
import { type AnyTypedArray, type DType, ORT_TYPE, arrayMatchesDtype } from '../graph/dtype.ts';
import type { Graph } from '../graph/graph.ts';
import { toOnnx } from '../graph/onnx.ts';
import { type Dim, fmtShape } from '../graph/shape.ts';
import { writeFileAtomic } from '../io/atomic.ts';
import { type Backend, InThreadBackend, WorkerBackend, type OrtOptions, type WireTensor } from './backend.ts';

/** A tensor on the host: typed data plus its shape. */
export interface HostTensor {
  dtype: DType;
  shape: number[];
  data: AnyTypedArray;
}
/** A feed: a typed array (for inputs with static shapes) or data with an explicit shape. */
export type Feed = AnyTypedArray | { data: AnyTypedArray; shape: readonly number[] };

export interface CompileOptions {
  /** Execution provider: 'cpu' (default) or 'webgpu' (falls back to CPU, with a warning, where no GPU adapter exists).
   * */
  ep?: 'cpu' | 'webgpu';
  /**
   * Run in a worker thread so the caller's event loop keeps ticking during run() (an HTTP server, a UI). Default
   * false: on a few cores the extra thread and the copies of the feeds cost more than the event loop gains
   * (bench/RESULTS.md, row 18: decode at batch 8 +30…57%, a SmolLM all-linear LoRA step +14% in this thread).
   */
  worker?: boolean;
  /** Threads for one op (default: ORT's choice, the core count). */
  threads?: number;
  /** ORT graph optimisation level (default 'all'). */
  optimization?: 'disabled' | 'basic' | 'extended' | 'all';
  /** Folder for models that reference weight files (default: the OS temp folder). */
  cacheDir?: string;
  /** Extra ORT session options (merged last). */
  ortOptions?: OrtOptions;
}

let inThread: InThreadBackend | null = null;
let worker: WorkerBackend | null = null;
const cache = new Map<string, Promise<Session>>();
let warnedWebGpu = false;

function backendFor(useWorker: boolean): Backend {
  if (useWorker) return (worker ??= new WorkerBackend());
  return (inThread ??= new InThreadBackend());
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

/** A compiled graph. run() validates feeds, then executes on its backend. */
export class Session {
  private disposed = false;
  constructor(
    private backend: Backend,
    private handle: number,
    readonly graph: Graph,
    readonly key: string,
    /** The inputs the serialised model kept (unused graph inputs are dropped). */
    private liveInputs: Set<string>,
    readonly ep: 'cpu' | 'webgpu',
  ) {}

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
    if (this.disposed)
      throw new LorakitError(
        'LK_SESSION_DISPOSED',
        `session for graph "${this.graph.name}" was disposed; compile the graph again`,
      );
    const wire = validateFeeds(this.graph, feeds, this.liveInputs);
    let out: Record<string, WireTensor>;
    let returned: Record<string, ArrayBuffer>;
    const lent = (transfer ?? []).filter((n) => wire[n]);
    const views = lent.map((n) => {
      const d = wire[n].data;
      return { Ctor: d.constructor, offset: d.byteOffset, length: d.length };
    });
    try {
      ({ outputs: out, returned } = await this.backend.run(this.handle, wire, lent));
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

  /** Frees the ORT session. */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    cache.delete(this.key);
    await this.backend.release(this.handle);
  }
}

/** Checks names, dtypes and shapes of feeds (binding symbolic dims consistently) and converts them for ORT. */
export function validateFeeds(
  graph: Graph,
  feeds: Record<string, Feed>,
  live: Set<string>,
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
  return {
    f32: 'Float32Array',
    f64: 'Float64Array',
    i64: 'BigInt64Array',
    i32: 'Int32Array',
    f16: 'Uint16Array',
    bf16: 'Uint16Array',
    u8: 'Uint8Array',
    bool: 'Uint8Array',
  }[d];
}

/**
 * Serialises and loads `graph`. Initializers that live in files are linked next to the model (ORT only reads
 * external data inside the model's folder) so ORT memory-maps them instead of copying.
 */
export async function compile(graph: Graph, opts: CompileOptions = {}): Promise<Session> {
  const fileInits = [...graph.initializers.values()].filter((i) => i.data.kind === 'file');
  const sources = new Map<string, string>();
  for (const i of fileInits)
    if (i.data.kind === 'file' && !sources.has(i.data.path))
      sources.set(i.data.path, `w${sources.size}_${basename(i.data.path)}`);
  const model = toOnnx(graph, {
    externalize: (_n, d) => (d.kind === 'file' ? { location: sources.get(d.path)!, offset: d.offset } : null),
  });
  const ep = opts.ep ?? 'cpu';
  const useWorker = opts.worker ?? false;
  const optsKey = JSON.stringify({ ep, useWorker, t: opts.threads, o: opts.optimization, x: opts.ortOptions });
  const hash = createHash('sha256').update(model).update(optsKey);
  for (const p of sources.keys()) {
    const s = statSync(p);
    hash.update(`${p}:${s.size}:${s.mtimeMs}`);
  }
  const key = hash.digest('hex').slice(0, 32);
  let s = cache.get(key);
  if (!s) {
    s = createSession(graph, model, sources, key, ep, useWorker, opts);
    cache.set(key, s);
    s.catch(() => cache.delete(key));
  }
  return s;
}

async function createSession(
  graph: Graph,
  model: Uint8Array,
  sources: Map<string, string>,
  key: string,
  ep: 'cpu' | 'webgpu',
  useWorker: boolean,
  opts: CompileOptions,
): Promise<Session> {
  let source: Uint8Array | string = model;
  if (sources.size > 0) {
    const dir = join(opts.cacheDir ?? join(tmpdir(), 'lorakit-cache'), key);
    mkdirSync(dir, { recursive: true });
    for (const [path, name] of sources) {
      const target = join(dir, name);
      if (existsSync(target)) continue;
      try {
        linkSync(path, target);
      } catch {
        copyFileSync(path, target);
      } // a hard link stays inside the folder ORT allows
    }
    source = join(dir, 'model.onnx');
    await writeFileAtomic(source, model);
  }
  // No memory pattern: for a training step (static shapes) ORT then keeps the first run's arena blocks and a pattern
  // block for every activation, twice the memory (GPT-2 LoRA step, batch 4×256: peak RSS 3.9 → 2.7 GB), for no
  // measurable speed; decode steps change shape every step, so a pattern is never reused (bench/RESULTS.md).
  const base: OrtOptions = {
    graphOptimizationLevel: opts.optimization ?? 'all',
    enableMemPattern: false,
    ...(opts.threads ? { intraOpNumThreads: opts.threads } : {}),
  };
  const backend = backendFor(useWorker);
  const live = new Set(
    graph.liveNodes().flatMap((n) => n.inputs.filter((t) => t?.kind === 'input').map((t) => t!.name)),
  );
  let usedEp: 'cpu' | 'webgpu' = ep;
  let handle: number;
  try {
    handle = await backend.create(source, { ...base, executionProviders: [ep], ...opts.ortOptions });
  } catch (e) {
    if (ep !== 'webgpu') throw runtimeError('while loading the graph', e, graph);
    if (!warnedWebGpu) {
      warnedWebGpu = true;
      console.warn(
        `lorakit: the WebGPU execution provider is unavailable here ` +
          `(${String((e as Error).message ?? e).split('\n')[0]}); running on CPU`,
      );
    }
    usedEp = 'cpu';
    try {
      handle = await backend.create(source, { ...base, executionProviders: ['cpu'], ...opts.ortOptions });
    } catch (e2) {
      throw runtimeError('while loading the graph', e2, graph);
    }
  }
  return new Session(backend, handle, graph, key, live, usedEp);
}

/** Stops the shared worker thread (pending sessions are lost). Call at the end of a program that compiled with worker:
 * true. */
export async function shutdownRuntime(): Promise<void> {
  for (const s of cache.values()) await (await s.catch(() => null))?.dispose().catch(() => {});
  await worker?.terminate();
  worker = null;
}
