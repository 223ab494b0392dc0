/**
 * The Llama family in one file, read top to bottom: Llama 2/3 (incl. llama3 RoPE scaling), Mistral, Qwen2/2.5
 * (q/k/v biases) and SmolLM (tied embeddings) share one decoder: RMSNorm, RoPE (rotate_half), grouped-query
 * attention, SwiGLU MLP. Exact transformers 4.57 semantics in float32; names are the HF module paths.
 * Config → blocks (attention, MLP, decoder layer) → the causal LM → the family entry the loader uses.
 * Not here: generation loops (models/generate.ts), adapters (peft/).
 */
import { rmsNorm, silu, type Tensor } from '../graph/index.ts';
import type { LlamaLikeConfig } from '../io/index.ts';
import {
  type AttentionMask,
  type ModelContext,
  type ModuleInfo,
  type Rope,
  applyRope,
  attention,
  mergeHeads,
  ropeAt,
  ropeInvFreq,
  ropeTables,
  splitHeads,
} from '../nn/index.ts';
import { type CausalLMInputs, type CausalLMOutputs, type KV, causalSetup, headOutputs } from './causal.ts';
import { type Family, type ParamSpec, embeddingInfo, linearInfo, lmHeadInfo, parametersOf } from './family.ts';

/** Llama, Mistral and Qwen2 configs, normalised by io/config.ts (head_dim, kv heads and biases resolved). */
export type LlamaConfig = LlamaLikeConfig;
type Ctx = ModelContext<LlamaConfig>;

/** What every layer of one forward shares: RoPE rows for the positions, and the attention mask. */
export interface LayerShared {
  /** Tables and position ids. */
  rope: Rope;
  /** The attention mask, or null. */
  mask: AttentionMask | null;
}

const layer = (i: number) => `model.layers.${i}`;

/** RMSNorm with the weight `<path>.weight` and the config's eps. */
function norm(ctx: Ctx, path: string, x: Tensor): Tensor {
  return rmsNorm(x, ctx.param(`${path}.weight`, [ctx.config.hidden_size]), ctx.config.rms_norm_eps);
}

/** Self-attention of layer i: x [B, T, D] → [B, T, D], plus this layer's cache [B, Hkv, P + T, hd]. */
export function llamaAttention(
  ctx: Ctx,
  i: number,
  x: Tensor,
  shared: LayerShared,
  past?: KV,
): { out: Tensor; present: KV } {
  const c = ctx.config;
  const [H, Hkv, hd] = [c.num_attention_heads, c.num_key_value_heads, c.head_dim];
  const p = `${layer(i)}.self_attn`;
  const q = applyRope(splitHeads(ctx.linear(`${p}.q_proj`, x), H, hd), shared.rope); // [B, H, T, hd]
  let k = applyRope(splitHeads(ctx.linear(`${p}.k_proj`, x), Hkv, hd), shared.rope); // [B, Hkv, T, hd]
  let v = splitHeads(ctx.linear(`${p}.v_proj`, x), Hkv, hd); // [B, Hkv, T, hd]
  if (past) {
    k = ctx.graph.concat([past.key, k], 2); // [B, Hkv, P + T, hd]
    v = ctx.graph.concat([past.value, v], 2);
  }
  // [B, H, T, hd] (kv heads shared by groups of H / Hkv)
  const o = attention(q, k, v, shared.mask, { scale: hd ** -0.5 });
  return { out: ctx.linear(`${p}.o_proj`, mergeHeads(o, H, hd)), present: { key: k, value: v } };
}

/** SwiGLU MLP of layer i: down(silu(gate(x)) · up(x)), [B, T, D] → [B, T, D]. */
export function llamaMlp(ctx: Ctx, i: number, x: Tensor): Tensor {
  const p = `${layer(i)}.mlp`;
  return ctx.linear(`${p}.down_proj`, silu(ctx.linear(`${p}.gate_proj`, x)).mul(ctx.linear(`${p}.up_proj`, x))); // [B, T, I] → [B, T, D]
}

/** Decoder layer i (pre-norm residual blocks): h = x + attn(norm(x)); out = h + mlp(norm(h)). */
export function llamaDecoderLayer(
  ctx: Ctx,
  i: number,
  x: Tensor,
  shared: LayerShared,
  past?: KV,
): { hidden: Tensor; present: KV } {
  const attn = llamaAttention(ctx, i, norm(ctx, `${layer(i)}.input_layernorm`, x), shared, past);
  const h = x.add(attn.out); // [B, T, D]
  return {
    hidden: h.add(llamaMlp(ctx, i, norm(ctx, `${layer(i)}.post_attention_layernorm`, h))),
    present: attn.present,
  };
}

/** RoPE rows for `positionIds` [B|1, T] from tables of `maxPositions` rows (θ and scaling from the config). */
export function llamaRope(ctx: Ctx, positionIds: Tensor, maxPositions?: number): Rope {
  const c = ctx.config;
  const tables = ropeTables(
    ctx.graph,
    ropeInvFreq(c.head_dim, c.rope_theta, c.rope_scaling),
    maxPositions ?? c.max_position_embeddings,
    ctx.dtype,
  );
  return ropeAt(tables, positionIds);
}

/** The causal LM: embed → layers → final norm → lm_head. See causal.ts for the cache and mask contract. */
export function llamaCausalLM(ctx: Ctx, inputs: CausalLMInputs): CausalLMOutputs {
  const c = ctx.config;
  const setup = causalSetup(ctx, inputs, c.sliding_window);
  const shared: LayerShared = { rope: llamaRope(ctx, setup.positionIds, inputs.maxPositions), mask: setup.mask };
  let x = ctx.embedding('model.embed_tokens', inputs.inputIds); // [B, T, D]
  const present: KV[] = [];
  for (let i = 0; i < c.num_hidden_layers; i++) {
    const r = llamaDecoderLayer(ctx, i, x, shared, inputs.past?.[i]);
    x = r.hidden;
    present.push(r.present);
  }
  const hidden = norm(ctx, 'model.norm', x); // [B, T, D]
  return headOutputs(ctx, 'lm_head', hidden, present);
}

// ---------------------------------------------------------------------------------------------------------------
// The family entry: parameters and modules the config implies.

function llamaModules(c: LlamaConfig): ModuleInfo[] {
  const [D, I, hd] = [c.hidden_size, c.intermediate_size, c.head_dim];
  const mods: ModuleInfo[] = [embeddingInfo('model.embed_tokens', c.vocab_size, D)];
  for (let i = 0; i < c.num_hidden_layers; i++) {
    const a = `${layer(i)}.self_attn`,
      m = `${layer(i)}.mlp`;
    mods.push(
      linearInfo(`${a}.q_proj`, D, c.num_attention_heads * hd, c.attention_bias),
      linearInfo(`${a}.k_proj`, D, c.num_key_value_heads * hd, c.attention_bias),
      linearInfo(`${a}.v_proj`, D, c.num_key_value_heads * hd, c.attention_bias),
      linearInfo(`${a}.o_proj`, c.num_attention_heads * hd, D, c.o_proj_bias),
      linearInfo(`${m}.gate_proj`, D, I, c.mlp_bias),
      linearInfo(`${m}.up_proj`, D, I, c.mlp_bias),
      linearInfo(`${m}.down_proj`, I, D, c.mlp_bias),
    );
  }
  mods.push(lmHeadInfo(D, c.vocab_size, c.tie_word_embeddings, 'model.embed_tokens.weight'));
  return mods;
}

function llamaParameters(c: LlamaConfig): ParamSpec[] {
  const D = c.hidden_size;
  const norms: ParamSpec[] = [];
  for (let i = 0; i < c.num_hidden_layers; i++) {
    norms.push(
      { name: `${layer(i)}.input_layernorm.weight`, shape: [D] },
      { name: `${layer(i)}.post_attention_layernorm.weight`, shape: [D] },
    );
  }
  norms.push({ name: 'model.norm.weight', shape: [D] });
  return parametersOf(llamaModules(c), norms);
}

export const llamaFamily: Family<LlamaConfig> = {
  name: 'llama',
  parameters: llamaParameters,
  modules: llamaModules,
  fileNames: (name) => [name],
  cache: (c) => ({ layers: c.num_hidden_layers, kvHeads: c.num_key_value_heads, headDim: c.head_dim }),
};
