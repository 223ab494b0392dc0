/**
 * GPT-2 in one file, read top to bottom like nanoGPT's model.py: learned position embeddings, pre-LayerNorm blocks
 * with a fused q/k/v projection (c_attn), gelu_new MLP, final LayerNorm, LM head tied to the token embedding.
 * GPT-2's projections are HF `Conv1D` layers: their weights are stored [in, out] (PEFT's fan_in_fan_out), so they
 * are declared as kind 'conv1d' and multiplied without a transpose. Exact transformers 4.57 semantics in float32.
 * Not here: generation loops (models/generate.ts), adapters (peft/).
 */
import { type Tensor, gelu, layerNorm, silu } from '../graph/index.ts';
import type { Gpt2Config } from '../io/index.ts';
import {
  type AttentionMask,
  type ModelContext,
  type ModuleInfo,
  attention,
  mergeHeads,
  splitHeads,
} from '../nn/index.ts';
import { type CausalLMInputs, type CausalLMOutputs, type KV, causalSetup, headOutputs } from './causal.ts';
import { type Family, type ParamSpec, embeddingInfo, linearInfo, lmHeadInfo, parametersOf } from './family.ts';

export type { Gpt2Config };
type Ctx = ModelContext<Gpt2Config>;

const block = (i: number) => `transformer.h.${i}`;

/** LayerNorm with `<path>.weight` and `<path>.bias` and the config's eps. */
function ln(ctx: Ctx, path: string, x: Tensor): Tensor {
  const D = ctx.config.n_embd;
  return layerNorm(x, ctx.param(`${path}.weight`, [D]), ctx.param(`${path}.bias`, [D]), ctx.config.layer_norm_epsilon);
}

/** The MLP activation named by `activation_function` (gelu_new is the tanh approximation). */
export function gpt2Activation(name: Gpt2Config['activation_function'], x: Tensor): Tensor {
  switch (name) {
    case 'gelu_new':
    case 'gelu_pytorch_tanh':
      return gelu(x, 'tanh');
    case 'gelu':
      return gelu(x);
    case 'relu':
      return x.relu();
    case 'silu':
      return silu(x);
    case 'tanh':
      return x.tanh();
  }
}

/** Causal self-attention of block i: x [B, T, D] → [B, T, D], plus this block's cache [B, H, P + T, hd]. */
export function gpt2Attention(
  ctx: Ctx,
  i: number,
  x: Tensor,
  mask: AttentionMask | null,
  past?: KV,
): { out: Tensor; present: KV } {
  const c = ctx.config;
  const [H, D] = [c.n_head, c.n_embd];
  const hd = D / H;
  const [q, k0, v0] = ctx
    .linear(`${block(i)}.attn.c_attn`, x)
    .split([D, D, D], -1)
    .map((t) => splitHeads(t, H, hd)); // [B, H, T, hd] each
  const k = past ? ctx.graph.concat([past.key, k0], 2) : k0; // [B, H, P + T, hd]
  const v = past ? ctx.graph.concat([past.value, v0], 2) : v0;
  // GPT-2 divides the scores by √hd (scale_attn_weights); the division (not a product) matches transformers bit for
  // bit.
  const o = attention(q, k, v, mask, { divisor: c.scale_attn_weights ? Math.sqrt(hd) : 1 }); // [B, H, T, hd]
  return { out: ctx.linear(`${block(i)}.attn.c_proj`, mergeHeads(o, H, hd)), present: { key: k, value: v } };
}

/** MLP of block i: c_proj(act(c_fc(x))), [B, T, D] → [B, T, n_inner] → [B, T, D]. */
export function gpt2Mlp(ctx: Ctx, i: number, x: Tensor): Tensor {
  return ctx.linear(
    `${block(i)}.mlp.c_proj`,
    gpt2Activation(ctx.config.activation_function, ctx.linear(`${block(i)}.mlp.c_fc`, x)),
  );
}

/** Block i: h = x + attn(ln_1(x)); out = h + mlp(ln_2(h)). */
export function gpt2Block(
  ctx: Ctx,
  i: number,
  x: Tensor,
  mask: AttentionMask | null,
  past?: KV,
): { hidden: Tensor; present: KV } {
  const attn = gpt2Attention(ctx, i, ln(ctx, `${block(i)}.ln_1`, x), mask, past);
  const h = x.add(attn.out); // [B, T, D]
  return { hidden: h.add(gpt2Mlp(ctx, i, ln(ctx, `${block(i)}.ln_2`, h))), present: attn.present };
}

/** The causal LM: token + position embeddings → blocks → ln_f → lm_head. See causal.ts for the cache contract. */
export function gpt2CausalLM(ctx: Ctx, inputs: CausalLMInputs): CausalLMOutputs {
  const c = ctx.config;
  const setup = causalSetup(ctx, inputs);
  let x = ctx.embedding('transformer.wte', inputs.inputIds).add(ctx.embedding('transformer.wpe', setup.positionIds)); // [B, T, D]
  const present: KV[] = [];
  for (let i = 0; i < c.n_layer; i++) {
    const r = gpt2Block(ctx, i, x, setup.mask, inputs.past?.[i]);
    x = r.hidden;
    present.push(r.present);
  }
  const hidden = ln(ctx, 'transformer.ln_f', x); // [B, T, D]
  return headOutputs(ctx, 'lm_head', hidden, present);
}

// ---------------------------------------------------------------------------------------------------------------
// The family entry: parameters and modules the config implies.

function gpt2Modules(c: Gpt2Config): ModuleInfo[] {
  const [D, I] = [c.n_embd, c.n_inner];
  const mods: ModuleInfo[] = [
    embeddingInfo('transformer.wte', c.vocab_size, D),
    embeddingInfo('transformer.wpe', c.n_positions, D),
  ];
  for (let i = 0; i < c.n_layer; i++) {
    mods.push(
      linearInfo(`${block(i)}.attn.c_attn`, D, 3 * D, true, 'conv1d'),
      linearInfo(`${block(i)}.attn.c_proj`, D, D, true, 'conv1d'),
      linearInfo(`${block(i)}.mlp.c_fc`, D, I, true, 'conv1d'),
      linearInfo(`${block(i)}.mlp.c_proj`, I, D, true, 'conv1d'),
    );
  }
  mods.push(lmHeadInfo(D, c.vocab_size, c.tie_word_embeddings, 'transformer.wte.weight'));
  return mods;
}

function gpt2Parameters(c: Gpt2Config): ParamSpec[] {
  const D = c.n_embd;
  const norms: ParamSpec[] = [];
  const lnParams = (p: string) => norms.push({ name: `${p}.weight`, shape: [D] }, { name: `${p}.bias`, shape: [D] });
  for (let i = 0; i < c.n_layer; i++) {
    lnParams(`${block(i)}.ln_1`);
    lnParams(`${block(i)}.ln_2`);
  }
  lnParams('transformer.ln_f');
  return parametersOf(gpt2Modules(c), norms);
}

export const gpt2Family: Family<Gpt2Config> = {
  name: 'gpt2',
  parameters: gpt2Parameters,
  modules: gpt2Modules,
  // GPT2Model checkpoints (the original "gpt2" on the Hub) store names without the "transformer." prefix.
  fileNames: (name) => (name.startsWith('transformer.') ? [name, name.slice('transformer.'.length)] : [name]),
  cache: (c) => ({ layers: c.n_layer, kvHeads: c.n_head, headDim: c.n_embd / c.n_head }),
};
