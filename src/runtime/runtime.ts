/**
 * The Runtime: the ONNX Runtime sessions of a process, shared by structure. `compile(graph)` serialises the graph and
 * keys it by the bytes (graphs built the same way serialise identically, since each Graph numbers its own symbols),
 * the compile options and the identity of each external weight file; equal keys share one ORT session. Each compile
 * returns its own `Session` handle, counted: disposing one handle never breaks another. The runtime also keeps the
 * `maxCachedSessions` most recently compiled sessions alive after their last handle is disposed (an LRU), so a
 * caller that rebuilds the same graph (generate() with an adapter without a key) finds its session again; a session
 * that leaves the LRU is released when its last handle is disposed. Models with file weights load from an entry of
 * the on-disk cache (disk-cache.ts), bounded after each new entry.
 * Not here: feeds and runs (session.ts), the on-disk layout (disk-cache.ts), ORT calls (backend.ts).
 */
import {
  basename,
  cpuFeatures,
  createHash,
  dirname,
  join,
  lstat,
  processId,
  randomHex,
  readFile,
  rename,
  rm,
  writeFile,
} from '../io/host.ts';
import { dedupeSubgraphInitializers } from './saved-model.ts';
import ort from './ort.ts';
import { LorakitError } from '../errors.ts';
import { type Graph, nodeReads } from '../graph/graph.ts';
import { toOnnx } from '../graph/onnx.ts';
import { lorakitCacheDir } from '../io/cache-root.ts';
import { type Backend, InThreadBackend, type OrtOptions, type WireTensor, WorkerBackend } from './backend.ts';
import {
  type SessionCacheLimits,
  type WeightFile,
  ensureEntry,
  removeEntry,
  sweepSessionCache,
  weightFile,
} from './disk-cache.ts';
import { Session, type SharedSession, runtimeError } from './session.ts';

/** Options of `compile`. */
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
  /** Session cache folder for models that reference weight files (default: `sessions/` under lorakitCacheRoot()). */
  cacheDir?: string;
  /**
   * Keep the session in the runtime's cache after its last handle is disposed (default true). false releases it at
   * the last dispose(): to free its memory at once, or to end ORT profiling (the trace is written on release). The
   * latest compile of a structure decides.
   */
  retain?: boolean;
  /** Extra ORT session options (merged last). */
  ortOptions?: OrtOptions;
  /**
   * For a graph with file weights on the CPU EP at the default optimisation level: save ORT's optimized model in
   * the graph's cache entry (its new initializers, such as folded transposes, in a file beside it), and load that
   * with graph optimisation off when the entry is used again, so a later process skips ORT's optimisers (a GPT-2
   * int8 LoRA step: session creation 17–22 s → 7–9 s under load; bench/RESULTS.md). Costs the optimized
   * initializers' bytes on disk (about 320 MB for that step), counted against the cache's bound. Default false;
   * the train step engine turns it on for its step graphs.
   */
  persistOptimized?: boolean;
}

/** Options of a Runtime. */
export interface RuntimeOptions {
  /** Compiled sessions kept alive after their last handle is disposed, most recently compiled first (default 8). */
  maxCachedSessions?: number;
  /** Bounds of the on-disk cache, applied after each new entry (defaults: SESSION_CACHE_LIMITS). */
  diskLimits?: SessionCacheLimits;
  /**
   * What the session key records of the machine (default: ORT's build and the CPU's flags): an entry's saved
   * optimised model holds kernels chosen for one CPU by one ORT, so another machine sharing the cache folder, or
   * another ORT, makes its own.
   */
  environment?: string;
}

/** Counts of a Runtime's ORT sessions. */
export interface RuntimeStats {
  /** ORT sessions created so far. */
  created: number;
  /** ORT sessions released so far. */
  released: number;
  /** ORT sessions alive now (used by a handle, or kept by the cache). */
  alive: number;
  /** Of those, the ones the cache keeps (at most maxCachedSessions). */
  cached: number;
}

/** One ORT session and the handles that share it. */
interface Entry extends SharedSession {
  ep: 'cpu' | 'webgpu';
  liveInputs: ReadonlySet<string>;
  refs: number;
  cached: boolean;
  released: boolean;
  ready: Promise<void>;
  backend?: Backend;
  handle?: number;
}

/** The optimized model a disk entry may hold beside model.onnx (CompileOptions.persistOptimized). */
const OPTIMIZED_MODEL = 'optimized.onnx';

const exists = (path: string) =>
  lstat(path).then(
    () => true,
    () => false,
  );

/** A serialised graph, ready to key and load. */
interface Prepared {
  key: string;
  model: Uint8Array;
  weights: { name: string; file: WeightFile }[];
}

/** Owns ORT sessions and the worker thread; see the file header. */
export class Runtime {
  /** The LRU's size. */
  readonly maxCachedSessions: number;
  /** Bounds of the on-disk cache, applied after each new entry. */
  readonly diskLimits: SessionCacheLimits;
  private inThread: InThreadBackend | null = null;
  private worker: WorkerBackend | null = null;
  /** Every entry whose ORT session is alive or loading, by key: a compile with an equal key shares it. */
  private entries = new Map<string, Entry>();
  /** The entries the cache keeps, least recently compiled first. */
  private lru = new Map<string, Entry>();
  private counts = { created: 0, released: 0 };
  private warnedWebGpu = false;

  /** Keyed into every session (RuntimeOptions.environment). */
  readonly environment: string;

  constructor(opts: RuntimeOptions = {}) {
    this.maxCachedSessions = opts.maxCachedSessions ?? 8;
    this.diskLimits = opts.diskLimits ?? {};
    this.environment = opts.environment ?? JSON.stringify([ort.env.versions, [...cpuFeatures()].sort().join(' ')]);
  }

  /** Compiles `graph` (or finds its equal) and returns a new handle to the shared session. */
  async compile(graph: Graph, opts: CompileOptions = {}): Promise<Session> {
    const p = await prepare(graph, opts, this.environment);
    let e = this.entries.get(p.key);
    if (!e) {
      e = this.newEntry(p.key, opts.ep ?? 'cpu');
      this.entries.set(p.key, e);
      e.ready = this.load(e, graph, p, opts);
    }
    const entry = e;
    entry.refs++;
    if (opts.retain === false) this.forget(entry);
    else this.remember(entry);
    try {
      await entry.ready;
    } catch (err) {
      entry.refs--;
      this.forget(entry);
      if (this.entries.get(entry.key) === entry) this.entries.delete(entry.key);
      throw err;
    }
    return new Session(entry, graph);
  }

  /** How many ORT sessions were created and released, and how many are alive and cached now. */
  stats(): RuntimeStats {
    return { ...this.counts, alive: this.entries.size, cached: this.lru.size };
  }

  /** Releases every ORT session (handles still held then refuse to run) and stops the worker thread. */
  async shutdown(): Promise<void> {
    const all = [...this.entries.values()];
    this.lru.clear();
    for (const e of all) e.cached = false;
    for (const e of all) await this.release(e).catch(() => {});
    await this.worker?.terminate();
    this.worker = null;
  }

  private newEntry(key: string, ep: 'cpu' | 'webgpu'): Entry {
    const e: Entry = {
      key,
      ep,
      liveInputs: new Set(),
      refs: 0,
      cached: false,
      released: false,
      ready: Promise.resolve(),
      run: (feeds: Record<string, WireTensor>, transfer: readonly string[]) =>
        e.backend!.run(e.handle!, feeds, transfer),
      unref: async () => {
        e.refs--;
        if (e.refs === 0 && !e.cached) await this.release(e);
      },
    };
    return e;
  }

  /** Moves `e` to the young end of the LRU, releasing unused sessions that fall off the old end. */
  private remember(e: Entry): void {
    this.lru.delete(e.key);
    this.lru.set(e.key, e);
    e.cached = true;
    while (this.lru.size > this.maxCachedSessions) {
      const [key, old] = this.lru.entries().next().value as [string, Entry];
      this.lru.delete(key);
      old.cached = false;
      if (old.refs === 0) void this.release(old).catch(() => {});
    }
  }

  private forget(e: Entry): void {
    if (this.lru.get(e.key) === e) this.lru.delete(e.key);
    e.cached = false;
  }

  private async release(e: Entry): Promise<void> {
    if (e.released) return;
    e.released = true;
    if (this.entries.get(e.key) === e) this.entries.delete(e.key);
    if (this.lru.get(e.key) === e) this.lru.delete(e.key);
    const loaded = await e.ready.then(
      () => true,
      () => false,
    );
    if (!loaded) return;
    this.counts.released++;
    await e.backend!.release(e.handle!);
  }

  private backendFor(useWorker: boolean): Backend {
    if (useWorker) return (this.worker ??= new WorkerBackend());
    return (this.inThread ??= new InThreadBackend());
  }

  /** Creates the ORT session of `e`: from the bytes, or from a disk entry when weights live in files. */
  private async load(e: Entry, graph: Graph, p: Prepared, opts: CompileOptions): Promise<void> {
    e.liveInputs = new Set(
      graph.liveNodes().flatMap((n) =>
        nodeReads(n)
          .filter((t) => t?.kind === 'input')
          .map((t) => t!.name),
      ),
    );
    e.backend = this.backendFor(opts.worker ?? false);
    if (p.weights.length === 0) {
      await this.create(e, graph, p.model, opts);
      return;
    }
    const dir = opts.cacheDir ?? lorakitCacheDir('sessions');
    for (let attempt = 0; ; attempt++) {
      const { modelPath, created } = await ensureEntry(dir, p.key, p.model, p.weights);
      try {
        await this.createFromEntry(e, graph, modelPath, opts);
      } catch (err) {
        // A failed entry must not be found again; one found on disk (not just built) may have been half-swept by
        // another process between our look and ORT's, so it is rebuilt once.
        await removeEntry(dir, p.key);
        if (created || attempt > 0) throw err;
        continue;
      }
      if (created) {
        const live = new Set(this.entries.keys());
        await sweepSessionCache(dir, this.diskLimits, live).catch(() => {}); // a failed sweep costs only space
      }
      return;
    }
  }

  /**
   * Creates the session of a disk entry: from the optimized model saved in it when asked to persist one and one is
   * there (graph optimisation off: ORT's optimisers already ran), else from model.onnx, saving ORT's optimized
   * model for the next process. A saved model that fails to load is deleted and made again. Saving writes under a
   * unique name and renames it into place, so a reader never sees half a file; the initializer file it names keeps
   * its unique name (a concurrent loser's stays until the entry is swept).
   */
  private async createFromEntry(e: Entry, graph: Graph, modelPath: string, opts: CompileOptions): Promise<void> {
    const level = opts.optimization ?? 'all';
    const own = opts.ortOptions?.optimizedModelFilePath !== undefined;
    if (!opts.persistOptimized || e.ep !== 'cpu' || level === 'disabled' || own)
      return this.create(e, graph, modelPath, opts);
    const dir = dirname(modelPath);
    const saved = join(dir, OPTIMIZED_MODEL);
    if (await exists(saved)) {
      try {
        await this.create(e, graph, saved, { ...opts, optimization: 'disabled' });
        return;
      } catch {
        await rm(saved, { force: true }); // broken, or from another ORT build: made again below
      }
    }
    const tag = `optimized.${processId()}.${randomHex(6)}`;
    const session = { ...(opts.ortOptions?.extra as { session?: Record<string, string> } | undefined)?.session };
    const drop = async () => {
      await rm(join(dir, `${tag}.onnx`), { force: true });
      await rm(join(dir, `${tag}.bin`), { force: true });
    };
    const saving = this.create(e, graph, modelPath, {
      ...opts,
      ortOptions: {
        ...opts.ortOptions,
        optimizedModelFilePath: join(dir, `${tag}.onnx`),
        // ORT warns that a level-'all' model may hold hardware-specific kernels; the entry is this machine's own
        logSeverityLevel: 3,
        extra: {
          ...(opts.ortOptions?.extra as object | undefined),
          session: {
            ...session,
            optimized_model_external_initializers_file_name: `${tag}.bin`,
            optimized_model_external_initializers_min_size_in_bytes: '1024',
            // the kernels' packed weights too, memory-mapped by the next process: its first step −1.0 s on SmolLM
            // all-linear int8 (−0.14 s GPT-2), for ~450 MB more .bin per entry (bench/RESULTS.md)
            save_external_prepacked_constant_initializers: '1',
          },
        },
      },
    });
    try {
      await saving;
    } catch {
      await drop(); // a model ORT cannot serialise still runs, as it did before: unsaved
      return this.create(e, graph, modelPath, opts);
    }
    const written = join(dir, `${tag}.onnx`);
    const bytes = await readFile(written).catch(() => null);
    const mended = bytes && dedupeSubgraphInitializers(bytes);
    if (mended && mended !== bytes) await writeFile(written, mended).catch(drop);
    await rename(written, saved).catch(drop);
  }

  private async create(e: Entry, graph: Graph, source: Uint8Array | string, opts: CompileOptions): Promise<void> {
    // No memory pattern: for a training step (static shapes) ORT then keeps the first run's arena blocks and a
    // pattern block for every activation, twice the memory (GPT-2 LoRA step, batch 4×256: peak RSS 3.9 → 2.7 GB),
    // for no measurable speed; decode steps change shape every step, so a pattern is never reused
    // (bench/RESULTS.md).
    const base: OrtOptions = {
      graphOptimizationLevel: opts.optimization ?? 'all',
      enableMemPattern: false,
      ...(opts.threads ? { intraOpNumThreads: opts.threads } : {}),
    };
    const backend = e.backend!;
    try {
      e.handle = await backend.create(source, { ...base, executionProviders: [e.ep], ...opts.ortOptions });
    } catch (err) {
      if (e.ep !== 'webgpu') throw runtimeError('while loading the graph', err, graph);
      if (!this.warnedWebGpu) {
        this.warnedWebGpu = true;
        console.warn(
          `lorakit: the WebGPU execution provider is unavailable here ` +
            `(${String((err as Error).message ?? err).split('\n')[0]}); running on CPU`,
        );
      }
      e.ep = 'cpu';
      try {
        e.handle = await backend.create(source, { ...base, executionProviders: ['cpu'], ...opts.ortOptions });
      } catch (err2) {
        throw runtimeError('while loading the graph', err2, graph);
      }
    }
    this.counts.created++;
  }
}

/**
 * Serialises `graph` with its file weights as external data named after their files, and keys it: the model bytes,
 * the options that change the session, the environment, and each weight file's identity (its bytes may change under
 * the same path).
 */
async function prepare(graph: Graph, opts: CompileOptions, environment: string): Promise<Prepared> {
  const names = new Map<string, string>(); // weight path → file name in the entry folder
  const model = toOnnx(graph, {
    externalize: (_n, d) => {
      if (d.kind !== 'file') return null;
      let name = names.get(d.path);
      if (name === undefined) names.set(d.path, (name = `w${names.size}_${basename(d.path)}`));
      return { location: name, offset: d.offset };
    },
  });
  const ep = opts.ep ?? 'cpu';
  const optsKey = JSON.stringify({
    ep,
    w: opts.worker ?? false,
    t: opts.threads,
    o: opts.optimization,
    x: opts.ortOptions,
    env: environment,
  });
  const hash = createHash('sha256').update(model).update(optsKey);
  const weights: Prepared['weights'] = [];
  for (const [path, name] of names) {
    const file = await weightFile(path).catch((e) => {
      throw new LorakitError(
        'LK_FILE_NOT_FOUND',
        `graph "${graph.name}" reads weights from ${path}, which cannot be opened (${(e as Error).message})`,
        { path },
      );
    });
    weights.push({ name, file });
    hash.update(`\0${name}\0${file.id}`);
  }
  return { key: hash.digest('hex').slice(0, 32), model, weights };
}

// The process's default Runtime, made on first use. Module-level on purpose: a process has one ONNX Runtime
// environment (ORT's global thread pools and allocators) and at most one worker thread worth having, so the sessions
// compile() shares belong to the process; code that wants its own bounds makes its own Runtime (docs/decisions.md).
let defaultInstance: Runtime | null = null;

/** The Runtime that `compile()` and `shutdownRuntime()` use. */
export function defaultRuntime(): Runtime {
  return (defaultInstance ??= new Runtime());
}

/** Compiles `graph` on the default Runtime: a new handle to the session of this graph's structure (see the header). */
export function compile(graph: Graph, opts: CompileOptions = {}): Promise<Session> {
  return defaultRuntime().compile(graph, opts);
}

/**
 * Releases every session of the default Runtime and stops its worker thread. Call at the end of a program that
 * compiled with worker: true (the thread would keep it alive), or to free all session memory at once.
 */
export async function shutdownRuntime(): Promise<void> {
  await defaultInstance?.shutdown();
}
