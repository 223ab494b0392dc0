/**
 * The causal-LM contract shared by GPT-2 and the Llama family: inputs and outputs of `buildCausalLM`, the KV
 * cache layout, how masks and positions are derived, and helpers that declare the standard graph inputs and
 * compute left-padded position ids on the host (what a generation loop needs).
 *
 * Contract: past/present key and value per layer are [B, Hkv, P, hd], keys
 * after RoPE, before GQA repetition; present = concat(past, new) on axis 2. attention_mask is [B, S] with S = P + T
 * and covers the cached tokens too. Query t sits at cache position P + t (the causal mask uses cache positions);
 * position_ids [B, T] only choose RoPE angles / GPT-2 position embeddings and default to P..P+T-1.
 */
import type { Graph, Tensor } from '../graph/index.ts';
import type { AttentionMask, ModelContext } from '../nn/index.ts';
import { attentionMask, dimOf } from '../nn/index.ts';

/** One layer's cached keys or values. */
export interface KV {
  key: Tensor;
  value: Tensor;
}

export interface CausalLMInputs {
  /** [B, T] i64. */
  inputIds: Tensor;
  /** [B, T] i64; default P..P+T-1 for every row (pass cumsum(mask)-1 for left-padded rows, see leftPaddedPositions). */
  positionIds?: Tensor;
  /** [B, S] i64 (S = P + T), 1 = attend, 0 = padding; default: all ones. */
  attentionMask?: Tensor;
  /** Per layer [B, Hkv, P, hd]; P may be 0. Absent: no cache (P = 0). */
  past?: KV[];
  /** Rows of the RoPE cos/sin tables (Llama family); default config.max_position_embeddings. */
  maxPositions?: number;
}

export interface CausalLMOutputs {
  /** [B, T, V]. */
  logits: Tensor;
  /** Final hidden states after the last norm, [B, T, D]: pick rows, then call lmHead, to skip unneeded logits. */
  hidden: Tensor;
  /** Per layer [B, Hkv, P + T, hd]. */
  present: KV[];
  /** The LM head (through hooks): [..., D] → [..., V]. */
  lmHead(h: Tensor): Tensor;
  /**
   * The head when it is frozen (no hook adapts it, its weight does not train), else null: lets a loss that has
   * dLogits in hand skip differentiating through lmHead.
   */
  frozenHead: FrozenHead | null;
}

/** A frozen output head: its product and the pieces of its input gradient, without differentiating through it. */
export interface FrozenHead {
  /** The head's product (lmHead): [..., D] → [..., V]. */
  forward(h: Tensor): Tensor;
  /** dLogits [..., V] → dLogits·W [..., D], for the logits `forward` made of `input` (the same tensor). */
  inputGrad(dLogits: Tensor, input: Tensor): Tensor;
  /** Rows `ids` [n] of that W, [n, D]: inputGrad of one-hot rows, exactly. */
  rows(ids: Tensor): Tensor;
}

/** The runtime lengths and the attention mask every causal layer shares. */
export interface CausalSetup {
  queryLen: Tensor;
  pastLen: Tensor;
  /** [B|1, T] i64. */
  positionIds: Tensor;
  /** Causal (+ padding, + window) mask, or null. */
  mask: AttentionMask | null;
}

/** Lengths, default positions and the causal (+ padding, + window) mask from the inputs. */
export function causalSetup(
  ctx: ModelContext,
  inputs: CausalLMInputs,
  slidingWindow: number | null = null,
): CausalSetup {
  const g = ctx.graph;
  const queryLen = dimOf(inputs.inputIds, 1);
  const pastLen = inputs.past?.length ? dimOf(inputs.past[0].key, 2) : g.constInts([0], []);
  const positionIds = inputs.positionIds ?? g.range(pastLen, pastLen.add(queryLen)).unsqueeze(0); // [1, T]
  const mask = attentionMask(g, {
    attentionMask: inputs.attentionMask,
    causal: true,
    queryLen,
    pastLen,
    slidingWindow,
  });
  return { queryLen, pastLen, positionIds, mask };
}

/** Sizes of the KV cache of a model. */
export interface CacheSpec {
  layers: number;
  kvHeads: number;
  headDim: number;
}

export interface CausalGraphInputs {
  inputs: CausalLMInputs;
  /** Feed names: input_ids, position_ids, attention_mask, past_key_values.{i}.key/value. */
  names: string[];
}

/**
 * Declares the standard inputs of a causal-LM graph: input_ids [B, T], position_ids [B, T], attention_mask [B, S]
 * and, with `past`, past_key_values.{i}.key / .value [B, Hkv, P, hd] (Optimum's names). Name the outputs
 * `logits` and `present.{i}.key` / `present.{i}.value` (see outputCausalLM).
 */
export function causalGraphInputs(
  g: Graph,
  cache: CacheSpec,
  opts: { past?: boolean; dtype?: 'f32' | 'f64' } = {},
): CausalGraphInputs {
  const inputs: CausalLMInputs = {
    inputIds: g.input('input_ids', 'i64', ['B', 'T']),
    positionIds: g.input('position_ids', 'i64', ['B', 'T']),
    attentionMask: g.input('attention_mask', 'i64', ['B', 'S']),
  };
  const names = ['input_ids', 'position_ids', 'attention_mask'];
  if (opts.past) {
    inputs.past = Array.from({ length: cache.layers }, (_, i) => {
      const shape = ['B', cache.kvHeads, 'P', cache.headDim];
      names.push(`past_key_values.${i}.key`, `past_key_values.${i}.value`);
      return {
        key: g.input(`past_key_values.${i}.key`, opts.dtype ?? 'f32', shape),
        value: g.input(`past_key_values.${i}.value`, opts.dtype ?? 'f32', shape),
      };
    });
  }
  return { inputs, names };
}

/** Marks `logits` (optionally only the last position's, [B, 1, V]) and every present.{i}.key/value as outputs. */
export function outputCausalLM(g: Graph, out: CausalLMOutputs, opts: { lastOnly?: boolean } = {}): void {
  if (opts.lastOnly)
    g.output('logits', out.lmHead(out.hidden.slice([-1], [2 ** 62], [1]))); // [B, 1, V]
  else g.output('logits', out.logits);
  out.present.forEach((kv, i) => {
    g.output(`present.${i}.key`, kv.key);
    g.output(`present.${i}.value`, kv.value);
  });
}

/**
 * Position ids for rows of an attention mask [B, S] (host side), as transformers' generate computes them:
 * cumsum(mask) - 1, and 1 at padded slots. Returns the last `T` columns ([B, T]), i.e. the ids of the tokens being fed.
 */
export function leftPaddedPositions(mask: ArrayLike<number | bigint>, batch: number, T?: number): BigInt64Array {
  const S = mask.length / batch;
  const t = T ?? S;
  const out = new BigInt64Array(batch * t);
  for (let b = 0; b < batch; b++) {
    let seen = 0;
    for (let s = 0; s < S; s++) {
      const on = Number(mask[b * S + s]) !== 0;
      if (on) seen++;
      if (s >= S - t) out[b * t + s - (S - t)] = on ? BigInt(seen - 1) : 1n;
    }
  }
  return out;
}

/**
 * The outputs around the head at `path` on the final hidden states: the logits are built on first read only, so a
 * caller that takes rows first (generation's last position, the training loss's chunks) never records the whole
 * [B, T, V] product, nor runs the head's hooks on it.
 */
export function headOutputs(ctx: ModelContext, path: string, hidden: Tensor, present: KV[]): CausalLMOutputs {
  const lmHead = (h: Tensor) => ctx.linear(path, h); // [..., V]
  const frozenHead: FrozenHead | null = ctx.adapted(path)
    ? null
    : {
        forward: lmHead,
        inputGrad: (dy, h) => ctx.linearModule(path).inputGrad(dy, h),
        rows: (ids) => ctx.linearModule(path).inputRows(ids),
      };
  let logits: Tensor | null = null;
  return {
    get logits() {
      logits ??= lmHead(hidden);
      return logits;
    },
    hidden,
    present,
    lmHead,
    frozenHead,
  };
}
