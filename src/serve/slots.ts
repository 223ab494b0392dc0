/**
 * The adapter slots of the batched graph: per targeted layer the tensors `lora_a` [N, in, R] and `lora_b` [N, R, out]
 * that every step gathers rows from (vLLM's `lora_a_stacked`/`lora_b_stacked`, S-LoRA's "bmm" baseline). Slot 0 is
 * all zeros (the base model); slots 1..N−1 hold the adapters of the running batch. An adapter keeps its slot while
 * a running request uses it and after, until a new adapter needs the slot (least recently used first), so a hot
 * adapter is not copied again. A slot write copies the adapter's factors and zero-pads its rank to R.
 * Not here: resident adapters and their memory budget (adapter-pool.ts), the graph (batch-graph.ts).
 */
import type { LoraTarget } from './batch-graph.ts';
import { names } from './batch-graph.ts';
import type { LoraForm } from './lora-form.ts';

/** The adapter slot tensors and which adapter each slot holds. */
export class LoraSlots {
  private readonly a = new Map<string, Float32Array>();
  private readonly b = new Map<string, Float32Array>();
  /** Per slot: the key of the adapter instance it holds, or null. */
  private readonly holder: (string | null)[];
  private readonly users: number[];
  private readonly lastUsed: number[];
  private clock = 0;

  constructor(
    readonly targets: readonly LoraTarget[],
    /** N, slot 0 (the base) included. */
    readonly slots: number,
    /** R. */
    readonly rank: number,
  ) {
    for (const t of targets) {
      this.a.set(t.path, new Float32Array(slots * t.inFeatures * rank));
      this.b.set(t.path, new Float32Array(slots * rank * t.outFeatures));
    }
    this.holder = new Array<string | null>(slots).fill(null);
    this.users = new Array<number>(slots).fill(0);
    this.lastUsed = new Array<number>(slots).fill(0);
  }

  /** Bytes of the slot tensors. */
  get bytes(): number {
    return this.targets.reduce((n, t) => n + this.slots * this.rank * (t.inFeatures + t.outFeatures) * 4, 0);
  }

  /** Whether `key` holds a slot now, or a slot could be given to it. */
  canAcquire(key: string): boolean {
    return this.holder.includes(key) || this.victim() !== null;
  }

  /**
   * The slot of adapter instance `key` (writing `form` into a slot if it holds none), counted as used by one more
   * request; null when every adapter slot is in use. `key` null is the base model: slot 0.
   */
  acquire(key: string | null, form: LoraForm | null): number | null {
    if (key === null) return 0;
    let s = this.holder.indexOf(key);
    if (s < 0) {
      const v = this.victim();
      if (v === null) return null;
      s = v;
      this.write(s, form!);
      this.holder[s] = key;
    }
    this.users[s]++;
    this.lastUsed[s] = ++this.clock;
    return s;
  }

  /** One request fewer uses slot `s`; the adapter stays in it until the slot is needed. */
  release(s: number): void {
    if (s === 0) return;
    if (this.users[s] === 0) throw new Error(`internal: adapter slot ${s} released twice`);
    this.users[s]--;
  }

  /** Forgets adapter instance `key` (unloaded): its slot is reused first once no request uses it. */
  forget(key: string): void {
    const s = this.holder.indexOf(key);
    if (s > 0) this.lastUsed[s] = 0;
  }

  /** Adapter keys in slots used by running requests now (the running_lora_adapters of the metrics). */
  inUse(): string[] {
    return this.holder.filter((k, s): k is string => k !== null && this.users[s] > 0);
  }

  /** A free slot, or the least recently used slot no request uses; null when all are in use. */
  private victim(): number | null {
    let best: number | null = null;
    for (let s = 1; s < this.slots; s++) {
      if (this.holder[s] === null) return s;
      if (this.users[s] === 0 && (best === null || this.lastUsed[s] < this.lastUsed[best])) best = s;
    }
    return best;
  }

  /** Copies an adapter's Aᵀ and (s·B)ᵀ into slot `s`, zero-padding ranks below R; untargeted layers stay zero. */
  private write(s: number, form: LoraForm): void {
    const R = this.rank;
    for (const t of this.targets) {
      const [I, O] = [t.inFeatures, t.outFeatures];
      const A = this.a.get(t.path)!.subarray(s * I * R, (s + 1) * I * R); // [in, R]
      const B = this.b.get(t.path)!.subarray(s * R * O, (s + 1) * R * O); // [R, out]
      A.fill(0);
      B.fill(0);
      const l = form.layers.get(t.path);
      if (!l || l.rank === 0) continue;
      for (let i = 0; i < I; i++) A.set(l.at.subarray(i * l.rank, (i + 1) * l.rank), i * R);
      B.set(l.bt); // rows 0..r−1 of [R, out]
    }
  }

  /** The slot tensors as graph feeds (the arrays themselves). */
  feeds(): Record<string, { data: Float32Array; shape: number[] }> {
    const f: Record<string, { data: Float32Array; shape: number[] }> = {};
    for (const t of this.targets) {
      f[names.loraA(t.path)] = { data: this.a.get(t.path)!, shape: [this.slots, t.inFeatures, this.rank] };
      f[names.loraB(t.path)] = { data: this.b.get(t.path)!, shape: [this.slots, this.rank, t.outFeatures] };
    }
    return f;
  }
}
