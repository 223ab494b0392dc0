/**
 * BERT in one file: embeddings (word + position + token type, then LayerNorm), post-LayerNorm encoder layers with
 * bidirectional attention and a padding mask, and the sequence-classification head (pooler: tanh(dense([CLS])),
 * then the classifier). Exact transformers 4.57 semantics in float32 (erf GELU, layer_norm_eps from the config).
 * Not here: masked-LM heads, tokenisation (io/tokenizer.ts), adapters (peft/).
 */
import { type Tensor, gelu, layerNorm, silu } from '../graph/index.ts';
import type { BertConfig } from '../io/index.ts';
import {
  type AttentionMask,
  type ModelContext,
  type ModuleInfo,
  attention,
  attentionMask,
  dimOf,
  mergeHeads,
  splitHeads,
} from '../nn/index.ts';
import { type Family, type ParamSpec, embeddingInfo, linearInfo, parametersOf } from './family.ts';

export type { BertConfig };
type Ctx = ModelContext<BertConfig>;

export interface BertInputs {
  /** [B, T] i64. */
  inputIds: Tensor;
  /** [B, T] i64; default all 0 (segment A). */
  tokenTypeIds?: Tensor;
  /** [B, T], 1 = token, 0 = padding; default all ones. */
  attentionMask?: Tensor;
  /** [B, T] i64; default 0..T-1 (absolute positions: padding does not shift them). */
  positionIds?: Tensor;
}

const layer = (i: number) => `bert.encoder.layer.${i}`;

/** LayerNorm with `<path>.weight` / `<path>.bias` and the config's eps. */
function ln(ctx: Ctx, path: string, x: Tensor): Tensor {
  const D = ctx.config.hidden_size;
  return layerNorm(x, ctx.param(`${path}.weight`, [D]), ctx.param(`${path}.bias`, [D]), ctx.config.layer_norm_eps);
}

/** The activation named by `hidden_act` ("gelu" is the exact erf form). */
export function bertActivation(name: BertConfig['hidden_act'], x: Tensor): Tensor {
  switch (name) {
    case 'gelu':
      return gelu(x);
    case 'gelu_new':
    case 'gelu_pytorch_tanh':
      return gelu(x, 'tanh');
    case 'relu':
      return x.relu();
    case 'silu':
      return silu(x);
    case 'tanh':
      return x.tanh();
  }
}

/** Embeddings: LayerNorm(word + token type + position), [B, T] → [B, T, D]. */
export function bertEmbeddings(ctx: Ctx, inputs: BertInputs): Tensor {
  const g = ctx.graph;
  const p = 'bert.embeddings';
  const ids = inputs.inputIds;
  const types = inputs.tokenTypeIds ?? ids.mul(0); // zeros shaped like ids (transformers' token_type_ids buffer)
  const positions = inputs.positionIds ?? g.range(0, dimOf(ids, 1)).unsqueeze(0); // [1, T]
  const x = ctx.embedding(`${p}.word_embeddings`, ids).add(ctx.embedding(`${p}.token_type_embeddings`, types));
  return ln(ctx, `${p}.LayerNorm`, x.add(ctx.embedding(`${p}.position_embeddings`, positions))); // [B, T, D]
}

/** Self-attention + output of layer i (post-norm): LayerNorm(x + dense(attn(x))). */
export function bertAttention(ctx: Ctx, i: number, x: Tensor, mask: AttentionMask | null): Tensor {
  const c = ctx.config;
  const H = c.num_attention_heads,
    hd = c.hidden_size / H;
  const p = `${layer(i)}.attention`;
  const [q, k, v] = ['query', 'key', 'value'].map((n) => splitHeads(ctx.linear(`${p}.self.${n}`, x), H, hd)); // [B, H, T, hd]
  const o = attention(q, k, v, mask, { scale: hd ** -0.5 }); // [B, H, T, hd]
  return ln(ctx, `${p}.output.LayerNorm`, ctx.linear(`${p}.output.dense`, mergeHeads(o, H, hd)).add(x));
}

/** Encoder layer i: attention, then LayerNorm(h + dense(act(dense(h)))). */
export function bertLayer(ctx: Ctx, i: number, x: Tensor, mask: AttentionMask | null): Tensor {
  const h = bertAttention(ctx, i, x, mask);
  const inner = bertActivation(ctx.config.hidden_act, ctx.linear(`${layer(i)}.intermediate.dense`, h)); // [B, T, I]
  return ln(ctx, `${layer(i)}.output.LayerNorm`, ctx.linear(`${layer(i)}.output.dense`, inner).add(h)); // [B, T, D]
}

/** The encoder's last hidden states [B, T, D]. */
export function bertEncoder(ctx: Ctx, inputs: BertInputs): Tensor {
  const g = ctx.graph;
  // Bidirectional: only padding keys are masked, for every query.
  const mask = attentionMask(g, {
    attentionMask: inputs.attentionMask,
    causal: false,
    queryLen: dimOf(inputs.inputIds, 1),
    pastLen: g.constInts([0], []),
  });
  let x = bertEmbeddings(ctx, inputs);
  for (let i = 0; i < ctx.config.num_hidden_layers; i++) x = bertLayer(ctx, i, x, mask);
  return x;
}

/** BertForSequenceClassification: logits [B, num_labels] from tanh(pooler([CLS])); also the pooled and last hidden
 * states. */
export function bertSequenceClassifier(
  ctx: Ctx,
  inputs: BertInputs,
): { logits: Tensor; pooled: Tensor; lastHidden: Tensor } {
  const lastHidden = bertEncoder(ctx, inputs);
  const cls = lastHidden.slice([0], [1], [1]).squeeze(1); // [B, D]
  const pooled = ctx.linear('bert.pooler.dense', cls).tanh(); // [B, D]
  return { logits: ctx.linear('classifier', pooled), pooled, lastHidden }; // [B, num_labels]
}

// ---------------------------------------------------------------------------------------------------------------
// The family entry: parameters and modules the config implies.

function bertModules(c: BertConfig): ModuleInfo[] {
  const [D, I] = [c.hidden_size, c.intermediate_size];
  const e = 'bert.embeddings';
  const mods: ModuleInfo[] = [
    embeddingInfo(`${e}.word_embeddings`, c.vocab_size, D),
    embeddingInfo(`${e}.position_embeddings`, c.max_position_embeddings, D),
    embeddingInfo(`${e}.token_type_embeddings`, c.type_vocab_size, D),
  ];
  for (let i = 0; i < c.num_hidden_layers; i++) {
    const a = `${layer(i)}.attention`;
    mods.push(
      linearInfo(`${a}.self.query`, D, D, true),
      linearInfo(`${a}.self.key`, D, D, true),
      linearInfo(`${a}.self.value`, D, D, true),
      linearInfo(`${a}.output.dense`, D, D, true),
      linearInfo(`${layer(i)}.intermediate.dense`, D, I, true),
      linearInfo(`${layer(i)}.output.dense`, I, D, true),
    );
  }
  mods.push(linearInfo('bert.pooler.dense', D, D, true), linearInfo('classifier', D, c.num_labels, true));
  return mods;
}

function bertParameters(c: BertConfig): ParamSpec[] {
  const D = c.hidden_size;
  const norms: ParamSpec[] = [];
  const lnParams = (p: string) => norms.push({ name: `${p}.weight`, shape: [D] }, { name: `${p}.bias`, shape: [D] });
  lnParams('bert.embeddings.LayerNorm');
  for (let i = 0; i < c.num_hidden_layers; i++) {
    lnParams(`${layer(i)}.attention.output.LayerNorm`);
    lnParams(`${layer(i)}.output.LayerNorm`);
  }
  // The head may be absent (a BertModel or masked-LM checkpoint): it is then trained (modules_to_save) or overridden.
  return parametersOf(bertModules(c), norms, ['bert.pooler.', 'classifier.']);
}

/** Older checkpoints: no "bert." prefix (BertModel), and LayerNorm.gamma/beta for weight/bias (TF ports). */
function bertFileNames(name: string): string[] {
  const names = [name];
  if (name.startsWith('bert.')) names.push(name.slice('bert.'.length));
  const legacy = names
    .map((n) => n.replace(/LayerNorm\.weight$/, 'LayerNorm.gamma').replace(/LayerNorm\.bias$/, 'LayerNorm.beta'))
    .filter((n) => !names.includes(n));
  return [...names, ...legacy];
}

export const bertFamily: Family<BertConfig> = {
  name: 'bert',
  parameters: bertParameters,
  modules: bertModules,
  fileNames: bertFileNames,
};
