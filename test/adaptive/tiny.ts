// Shared inputs of the adaptive-merging tests: the tiny Llama fixture (2 layers, width 64), random LoRA adapters on
// some of its Linears as compose.LoraAdapter objects (no files), token batches, and float64 host references of
// Σᵢ cᵢ·sᵢ·BᵢAᵢ.
import { join } from 'node:path';
import type { TokenBatch } from '../../src/adaptive/index.ts';
import { Rng } from '../../src/linalg/index.ts';
import type { compose } from '../../src/peft/index.ts';

export const LLAMA = join(import.meta.dirname, '..', 'fixtures', 'models', 'llama');
/** Linears of the fixture the random adapters wrap: [path, out, in]. */
export const TARGETS: [string, number, number][] = [
  ['model.layers.0.self_attn.q_proj', 64, 64],
  ['model.layers.0.self_attn.v_proj', 32, 64],
  ['model.layers.1.mlp.down_proj', 64, 128],
];

/** A random plain LoRA adapter (rank r, scaling s) on TARGETS; `std` sets the size of A and B's entries. */
export function randomLora(seed: number, r: number, scaling: number, std = 0.3): compose.LoraAdapter {
  const rng = new Rng(seed);
  const modules = new Map<string, compose.LoraModule>();
  for (const [path, out, inF] of TARGETS) {
    const a = Float64Array.from(rng.normalArray(r * inF, std));
    const b = Float64Array.from(rng.normalArray(out * r, std));
    modules.set(path, { a, b, r, out, in: inF, scaling, embedding: false, transposed: false });
  }
  return { dir: `random-${seed}`, config: { peft_type: 'LORA', r }, modules };
}

/** B windows of T random tokens below `vocab`, labels the next token (last one ignored as -100). */
export function randomBatch(seed: number, B: number, T: number, vocab = 384): TokenBatch {
  const rng = new Rng(seed);
  const ids = Array.from({ length: B * (T + 1) }, () => Math.floor(rng.next() * vocab));
  const inputIds = new BigInt64Array(B * T);
  const labels = new BigInt64Array(B * T);
  for (let b = 0; b < B; b++)
    for (let t = 0; t < T; t++) {
      inputIds[b * T + t] = BigInt(ids[b * (T + 1) + t]);
      labels[b * T + t] = BigInt(ids[b * (T + 1) + t + 1]);
    }
  return { inputIds, labels };
}

/** ΔW [out, in] = Σᵢ cᵢ·sᵢ·BᵢAᵢ of one module, in float64 on the host. */
export function denseDelta(adapters: compose.LoraAdapter[], path: string, c: readonly number[]): Float64Array {
  const first = adapters[0].modules.get(path)!;
  const dw = new Float64Array(first.out * first.in);
  adapters.forEach((ad, i) => {
    const m = ad.modules.get(path)!;
    for (let o = 0; o < m.out; o++)
      for (let k = 0; k < m.r; k++) {
        const bk = c[i] * m.scaling * m.b[o * m.r + k];
        for (let j = 0; j < m.in; j++) dw[o * m.in + j] += bk * m.a[k * m.in + j];
      }
  });
  return dw;
}
