/**
 * The server's KV cache on the host: token-granular pages, as S-LoRA's unified pool. Per layer one key pool and one
 * value pool [NT, Hkv, hd] hold one slot per cached token of any request; a row of the batched graph lists its slots
 * (`kv_index`), so rows of any length share the pools without fragmentation and without copying a cache when rows
 * join or leave the batch. Slot 0 is never handed out: it pads short rows (their padding is masked). Slots are
 * reference-counted so the n completions of one prompt share the prompt's slots.
 * Not here: which requests may take slots (scheduler.ts), the graph that reads the pools (batch-graph.ts).
 */
import type { CacheSpec } from '../models/index.ts';
import type { HostTensor } from '../runtime/index.ts';
import { names } from './batch-graph.ts';

/** Host KV pools and their slot allocator. */
export class KvPool {
  /** Per layer, the key and value pools [NT, Hkv, hd]. */
  readonly keys: Float32Array[] = [];
  readonly values: Float32Array[] = [];
  /** Floats of one token's keys and values in one layer's pool (Hkv·hd). */
  readonly width: number;
  private readonly free: Int32Array;
  private top: number;
  private readonly refs: Uint32Array;

  constructor(
    readonly spec: CacheSpec,
    /** Token slots NT, slot 0 included. */
    readonly tokens: number,
  ) {
    this.width = spec.kvHeads * spec.headDim;
    for (let i = 0; i < spec.layers; i++) {
      this.keys.push(new Float32Array(tokens * this.width));
      this.values.push(new Float32Array(tokens * this.width));
    }
    // a stack of free slots, lowest on top, so a quiet server reuses the same few pages
    this.free = Int32Array.from({ length: tokens - 1 }, (_, i) => tokens - 1 - i);
    this.top = tokens - 1;
    this.refs = new Uint32Array(tokens);
  }

  /** Slots that can hold tokens (all but slot 0). */
  get capacity(): number {
    return this.tokens - 1;
  }
  /** Slots in use. */
  get used(): number {
    return this.capacity - this.top;
  }
  /** Bytes of one cached token over all layers (keys and values). */
  get bytesPerToken(): number {
    return this.spec.layers * 2 * this.width * 4;
  }

  /** Takes `n` free slots; internal error when too few (the scheduler's admission rule must prevent that). */
  alloc(n: number): number[] {
    if (n > this.top) throw new Error(`internal: KV pool of ${this.capacity} slots has ${this.top} free, ${n} asked`);
    const out: number[] = [];
    for (let k = 0; k < n; k++) {
      const s = this.free[--this.top];
      this.refs[s] = 1;
      out.push(s);
    }
    return out;
  }

  /** One more holder of each slot (a forked completion sharing its prompt's cache). */
  retain(slots: readonly number[]): void {
    for (const s of slots) this.refs[s]++;
  }

  /** Drops one holder of each slot; a slot nobody holds is free again. */
  release(slots: readonly number[]): void {
    for (const s of slots) {
      if (this.refs[s] === 0) throw new Error(`internal: KV slot ${s} released twice`);
      if (--this.refs[s] === 0) this.free[this.top++] = s;
    }
  }

  /**
   * Copies the fed tokens' keys and values (graph outputs new.{i}.* [B, T, Hkv, hd]) into slots: `dest[b][t]` is
   * the slot of row b's token t, or -1 for a padding position that is not kept.
   */
  write(out: Record<string, HostTensor>, dest: readonly (readonly number[])[]): void {
    const w = this.width;
    for (let i = 0; i < this.spec.layers; i++) {
      const k = out[names.newKey(i)].data as Float32Array,
        v = out[names.newValue(i)].data as Float32Array;
      const T = out[names.newKey(i)].shape[1];
      dest.forEach((row, b) => {
        row.forEach((s, t) => {
          if (s < 0) return;
          const from = (b * T + t) * w;
          this.keys[i].set(k.subarray(from, from + w), s * w);
          this.values[i].set(v.subarray(from, from + w), s * w);
        });
      });
    }
  }

  /** The pools as graph feeds (the arrays themselves: nothing is copied). */
  feeds(): Record<string, { data: Float32Array; shape: number[] }> {
    const shape = [this.tokens, this.spec.kvHeads, this.spec.headDim];
    const f: Record<string, { data: Float32Array; shape: number[] }> = {};
    for (let i = 0; i < this.spec.layers; i++) {
      f[names.keyPool(i)] = { data: this.keys[i], shape };
      f[names.valuePool(i)] = { data: this.values[i], shape };
    }
    return f;
  }
}
