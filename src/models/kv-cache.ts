/**
 * The KV cache of one generation on the host. Per layer, key and value buffers [B, Hkv, C, hd] have room for every
 * token the graph will be fed (C = capacity). The generation graph returns only the keys and values of the tokens
 * it was fed (`new.{i}.key` / `.value`, [B, Hkv, T, hd]); `append` writes them at the next free position. A step then
 * feeds the whole buffers as past_key_values (P = C) with the unfilled positions masked, so nothing the size of the
 * cache is copied per step but ORT's concatenation of past and new: a full `present` output would be copied again by
 * onnxruntime-node 1.30 into a fresh JS buffer (bench/RESULTS.md). The buffers move to the ORT worker and back
 * (Session.run's `transfer`), so `feeds` always holds the current views.
 * Where the model's sliding window could reach the unfilled positions (the window counts cache positions), `compact`
 * feeds copies of the filled part instead. Not here: the cache layout contract (causal.ts), the loop (generate.ts).
 */
import type { Feed, HostTensor } from '../runtime/index.ts';
import type { CacheSpec } from './causal.ts';

type Buffer = Float32Array | Float64Array;

export const pastName = (i: number, kv: 'key' | 'value') => `past_key_values.${i}.${kv}`;
export const newName = (i: number, kv: 'key' | 'value') => `new.${i}.${kv}`;

export class KvCache {
  /** past_key_values.{i}.key/value feeds over the whole buffers [B, Hkv, C, hd]. */
  readonly feeds: Record<string, { data: Buffer; shape: number[] }> = {};
  /** Positions written so far (the same for every row: rows are left-padded to one length). */
  filled = 0;
  private readonly names: { past: string; out: string }[] = [];

  constructor(
    readonly spec: CacheSpec,
    readonly batch: number,
    readonly capacity: number,
    readonly dtype: 'f32' | 'f64',
  ) {
    const n = batch * spec.kvHeads * capacity * spec.headDim;
    for (let i = 0; i < spec.layers; i++) {
      for (const kv of ['key', 'value'] as const) {
        this.feeds[pastName(i, kv)] = {
          data: dtype === 'f64' ? new Float64Array(n) : new Float32Array(n),
          shape: [batch, spec.kvHeads, capacity, spec.headDim],
        };
        this.names.push({ past: pastName(i, kv), out: newName(i, kv) });
      }
    }
  }

  /** Empty past feeds (P = 0), for the prefill. */
  empty(): Record<string, Feed> {
    const { kvHeads, headDim } = this.spec;
    const shape = [this.batch, kvHeads, 0, headDim];
    return Object.fromEntries(
      this.names.map(({ past }) => [
        past,
        { data: this.dtype === 'f64' ? new Float64Array(0) : new Float32Array(0), shape },
      ]),
    );
  }

  /** Copies the fed tokens' keys and values (graph outputs [B, Hkv, T, hd]) to positions filled … filled + T − 1. */
  append(out: Record<string, HostTensor>, T: number): void {
    if (this.filled + T > this.capacity)
      throw new Error(`internal: KV cache of ${this.capacity} positions overflows (${this.filled} + ${T})`);
    const { kvHeads, headDim } = this.spec;
    const [C, row] = [this.capacity, T * headDim];
    for (const { past, out: o } of this.names) {
      const src = out[o].data as Buffer,
        dst = this.feeds[past].data;
      for (let bh = 0; bh < this.batch * kvHeads; bh++)
        dst.set(src.subarray(bh * row, (bh + 1) * row), (bh * C + this.filled) * headDim);
    }
    this.filled += T;
  }

  /** The dense attention mask [B, filled + T] widened to the fed past: [B, C + T], unfilled positions 0. */
  paddedMask(dense: readonly (readonly number[])[], T: number): BigInt64Array {
    const [C, f] = [this.capacity, this.filled];
    const out = new BigInt64Array(this.batch * (C + T));
    dense.forEach((m, b) => {
      for (let s = 0; s < f; s++) out[b * (C + T) + s] = BigInt(m[s]);
      for (let t = 0; t < T; t++) out[b * (C + T) + C + t] = BigInt(m[f + t]);
    });
    return out;
  }

  /** Copies of the filled part, [B, Hkv, filled, hd] per layer (fed when a sliding window forbids padding). */
  compact(): Record<string, Feed> {
    const { kvHeads, headDim } = this.spec;
    const [C, f] = [this.capacity, this.filled];
    const feeds: Record<string, Feed> = {};
    for (const { past } of this.names) {
      const src = this.feeds[past].data;
      const dst =
        this.dtype === 'f64'
          ? new Float64Array(this.batch * kvHeads * f * headDim)
          : new Float32Array(this.batch * kvHeads * f * headDim);
      for (let bh = 0; bh < this.batch * kvHeads; bh++)
        dst.set(src.subarray(bh * C * headDim, (bh * C + f) * headDim), bh * f * headDim);
      feeds[past] = { data: dst, shape: [this.batch, kvHeads, f, headDim] };
    }
    return feeds;
  }
}
