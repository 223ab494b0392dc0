// Two ways to reach ONNX Runtime with one interface: in this thread, or in a worker thread that owns the sessions.
import { Worker } from 'node:worker_threads';
import ort, { type OrtOptions, createSession } from './ort.ts';
import type { AnyTypedArray } from '../graph/dtype.ts';

export interface WireTensor {
  type: string;
  data: AnyTypedArray;
  dims: number[];
}
export type { OrtOptions };

export interface Backend {
  create(model: Uint8Array | string, options: OrtOptions): Promise<number>;
  /**
   * `transfer`: the feeds whose buffers move to a worker instead of being copied; a worker hands them back in
   * `returned` (by feed name) after the run. In-thread nothing moves and `returned` is empty.
   */
  run(
    handle: number,
    feeds: Record<string, WireTensor>,
    transfer?: readonly string[],
  ): Promise<{ outputs: Record<string, WireTensor>; returned: Record<string, ArrayBuffer> }>;
  release(handle: number): Promise<void>;
}

/** Runs sessions on the calling thread (blocks it during run; fine for tests and short graphs). */
export class InThreadBackend implements Backend {
  private sessions = new Map<number, ort.InferenceSession>();
  private next = 1;
  async create(model: Uint8Array | string, options: OrtOptions): Promise<number> {
    const s = await createSession(model, options);
    const h = this.next++;
    this.sessions.set(h, s);
    return h;
  }
  async run(
    handle: number,
    feeds: Record<string, WireTensor>,
  ): Promise<{ outputs: Record<string, WireTensor>; returned: Record<string, ArrayBuffer> }> {
    const s = this.sessions.get(handle)!;
    const f: Record<string, ort.Tensor> = {};
    for (const [k, v] of Object.entries(feeds))
      f[k] = new ort.Tensor(v.type as 'float32', v.data as Float32Array, v.dims);
    const out = await s.run(f);
    const r: Record<string, WireTensor> = {};
    for (const [k, t] of Object.entries(out)) r[k] = { type: t.type, data: t.data as AnyTypedArray, dims: [...t.dims] };
    return { outputs: r, returned: {} };
  }
  async release(handle: number): Promise<void> {
    await this.sessions.get(handle)?.release();
    this.sessions.delete(handle);
  }
}

/** Runs sessions in one worker thread; requests are answered in order by id. The worker is unref'd when idle. */
export class WorkerBackend implements Backend {
  private worker: Worker | null = null;
  private pending = new Map<number, { resolve: (v: any) => void; reject: (e: Error) => void }>();
  private next = 1;

  private call(msg: Record<string, unknown>, transfer: ArrayBuffer[] = []): Promise<any> {
    if (!this.worker) {
      // The URL is made apart from `new Worker(...)`: bundlers (the browser build's Vite) would otherwise try to
      // bundle this Node worker thread as a Web Worker.
      const script = new URL('./ort-worker.mjs', import.meta.url);
      this.worker = new Worker(script);
      this.worker.on('message', (m: { id: number; ok: boolean; error?: string }) => {
        const p = this.pending.get(m.id);
        this.pending.delete(m.id);
        if (this.pending.size === 0) this.worker?.unref();
        if (!p) return;
        if (m.ok) p.resolve(m);
        else p.reject(new Error(m.error));
      });
      this.worker.on('error', (e) => {
        for (const p of this.pending.values()) p.reject(e);
        this.pending.clear();
      });
    }
    this.worker.ref();
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker!.postMessage({ ...msg, id }, transfer);
    });
  }
  async create(model: Uint8Array | string, options: OrtOptions): Promise<number> {
    return (await this.call({ type: 'create', model, options })).handle;
  }
  async run(
    handle: number,
    feeds: Record<string, WireTensor>,
    transfer: readonly string[] = [],
  ): Promise<{ outputs: Record<string, WireTensor>; returned: Record<string, ArrayBuffer> }> {
    const buffers = new Set<ArrayBuffer>();
    for (const name of transfer) {
      const b = feeds[name]?.data.buffer;
      if (b instanceof ArrayBuffer && b.byteLength > 0) buffers.add(b);
    }
    const r = await this.call({ type: 'run', handle, feeds, giveBack: transfer }, [...buffers]);
    return { outputs: r.outputs, returned: r.returned ?? {} };
  }
  async release(handle: number): Promise<void> {
    await this.call({ type: 'release', handle });
  }
  /** Stops the worker thread (sessions in it are lost). */
  async terminate(): Promise<void> {
    await this.worker?.terminate();
    this.worker = null;
  }
}
