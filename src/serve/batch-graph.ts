/**
 * The one graph a server runs for every step: a batch of rows, each with its own adapter and its own KV cache, for
 * prefill (T prompt tokens per row, no past) and decode (one token per row over its past) alike.
 *
 * - KV cache: token-granular pages, as S-LoRA's unified pool. Per layer a key pool and a value pool [NT, Hkv, hd]
 *   hold one slot per cached token; `kv_index` [B, P] lists each row's slots, right-aligned (left padding with slot
 *   0, masked by `attention_mask` [B, P + T]), so the distance between a query and a key is the distance between
 *   their tokens and a sliding window stays right. The pools are gathered into the dense past [B, Hkv, P, hd] the
 *   model's attention takes; P is the longest row of this batch, not the pool's size.
 * - LoRA: Punica's batched gather. Each targeted Linear has slot tensors `lora_a.<path>` [N, in, R] (Aᵀ) and
 *   `lora_b.<path>` [N, R, out] ((s·B)ᵀ); `lora_slot` [B] names each row's slot (slot 0 is all zeros: the base).
 *   y = x·Wᵀ + (x·A_g)·B_g with A_g, B_g gathered per row: at decode (T = 1) each row is one gathered
 *   matrix-vector product (BGMV); at prefill each row's T tokens are one segment multiplied by its adapter (SGMV
 *   with one segment per row). Ranks below R are zero-padded, which adds nothing.
 * Outputs: `logits` [B, V] of each row's last position, and the fed tokens' keys and values `new.{i}.key|value`
 * [B, T, Hkv, hd] (token-major, so the host copies one block per token into its slot).
 * Not here: which rows run (scheduler.ts), the pools' host memory (kv-pool.ts, slots.ts), sampling (engine.ts).
 */
import { Graph, type Tensor } from '../graph/index.ts';
import { type CacheSpec, type KV, type LoadedModel, buildCausalLM } from '../models/index.ts';
import { dimOf, type LinearModule, type ModuleHooks } from '../nn/index.ts';

/** A Linear layer the graph gives LoRA slots. */
export interface LoraTarget {
  path: string;
  inFeatures: number;
  outFeatures: number;
}

/** What the batched graph is built for. */
export interface BatchGraphSpec {
  cache: CacheSpec;
  /** Layers with LoRA slots, in model order. */
  targets: readonly LoraTarget[];
  /** Adapter slots N (slot 0 included). */
  slots: number;
  /** Slot rank R. */
  rank: number;
  /** Token slots NT of the KV pools. */
  tokens: number;
}

/** Graph input and output names (one place, so the engine and the graph cannot disagree). */
export const names = {
  keyPool: (i: number) => `kv_pool.${i}.key`,
  valuePool: (i: number) => `kv_pool.${i}.value`,
  loraA: (path: string) => `lora_a.${path}`,
  loraB: (path: string) => `lora_b.${path}`,
  newKey: (i: number) => `new.${i}.key`,
  newValue: (i: number) => `new.${i}.value`,
};

/** Builds the batched multi-adapter graph of `model` (see the file header for inputs and outputs). */
export function buildBatchGraph(model: LoadedModel, spec: BatchGraphSpec): Graph {
  const g = new Graph('serve-batch');
  const { layers, kvHeads: Hkv, headDim: hd } = spec.cache;
  const inputIds = g.input('input_ids', 'i64', ['B', 'T']);
  const positionIds = g.input('position_ids', 'i64', ['B', 'T']);
  const attentionMask = g.input('attention_mask', 'i64', ['B', 'S']);
  const kvIndex = g.input('kv_index', 'i64', ['B', 'P']);
  const slot = g.input('lora_slot', 'i64', ['B']);
  const past: KV[] = [];
  for (let i = 0; i < layers; i++) {
    const dense = (pool: Tensor) => pool.gather(kvIndex).transpose([0, 2, 1, 3]); // [B, P, Hkv, hd] → [B, Hkv, P, hd]
    past.push({
      key: dense(g.input(names.keyPool(i), 'f32', [spec.tokens, Hkv, hd])),
      value: dense(g.input(names.valuePool(i), 'f32', [spec.tokens, Hkv, hd])),
    });
  }
  const ctx = model.context(g, { hooks: loraHooks(g, spec, slot) });
  const out = buildCausalLM(ctx, { inputIds, positionIds, attentionMask, past });
  const last = out.hidden.slice([-1], [2 ** 62], [1]); // [B, 1, D]
  g.output('logits', out.lmHead(last).squeeze(1)); // [B, V]
  const start = dimOf(kvIndex, 1).unsqueeze(0); // [1]: P
  out.present.forEach((kv, i) => {
    const fresh = (t: Tensor) => t.slice(start, [2 ** 62], [2]).transpose([0, 2, 1, 3]); // [B, T, Hkv, hd]
    g.output(names.newKey(i), fresh(kv.key));
    g.output(names.newValue(i), fresh(kv.value));
  });
  return g;
}

/** Hooks adding each row's gathered LoRA term to the targeted Linear layers. */
function loraHooks(g: Graph, spec: BatchGraphSpec, slot: Tensor): ModuleHooks {
  const targets = new Map(spec.targets.map((t) => [t.path, t]));
  return {
    linear(m: LinearModule, x: Tensor): Tensor {
      const y = m.base(x); // [B, T, out]
      const t = targets.get(m.path);
      if (!t) return y;
      const A = g.input(names.loraA(t.path), 'f32', [spec.slots, t.inFeatures, spec.rank]);
      const B = g.input(names.loraB(t.path), 'f32', [spec.slots, spec.rank, t.outFeatures]);
      const u = x.matmul(A.gather(slot)); // [B, T, in] · [B, in, R] → [B, T, R] (shrink)
      return y.add(u.matmul(B.gather(slot))); // [B, T, R] · [B, R, out] → [B, T, out] (expand)
    },
  };
}
