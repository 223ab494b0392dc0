/**
 * diffusers' UNet2DConditionModel (the Stable Diffusion U-Net) at the sizes lorakit trains: its config fields, block
 * plan, module list, parameters and graph — sample [N, in, H, W], timestep [N] and encoder_hidden_states [N, L, D]
 * (text or class-token states) → [N, out, H, W]. Cross-attention blocks are Transformer2DModel: GroupNorm (eps 1e-6),
 * a 1×1 conv proj_in, BasicTransformerBlocks (LayerNorm, self-attention, LayerNorm, cross-attention to the states,
 * LayerNorm, GEGLU feed-forward, each residual), a 1×1 conv proj_out, plus the input. Follows diffusers 0.35's
 * unet_2d_condition.py, unet_2d_blocks.py, transformer_2d.py, attention.py. Note diffusers' naming quirk, kept:
 * `attention_head_dim` is the number of heads when num_attention_heads is null.
 * Supported: CrossAttnDownBlock2D, DownBlock2D, UNetMidBlock2DCrossAttn, UpBlock2D, CrossAttnUpBlock2D; the other
 * options at their defaults (refused otherwise, naming the field).
 * Not here: the resnet, GroupNorm and time embedding shared with UNet2DModel (unet.ts).
 */
import { z } from 'zod';
import { LorakitError } from '../errors.ts';
import { type Tensor, gelu, layerNorm } from '../graph/index.ts';
import { attention, mergeHeads, splitHeads } from '../nn/attention.ts';
import type { Conv2dInfo, ModelContext, ModuleInfo } from '../nn/index.ts';
import { type ParamSpec, linearInfo, parametersOf } from './family.ts';
import { groupNorm, resnetBlock, silu, timestepEmbedding, upsampleNearest2x } from './unet.ts';
import type { ResnetPlan } from './unet-config.ts';

const nul = z.null().default(null);

/** UNet2DConditionModel's config fields; the ones lorakit does not build must keep diffusers' default. */
export const unet2dConditionSchema = z
  .object({
    sample_size: z
      .union([z.number().int().positive(), z.array(z.number().int().positive())])
      .nullable()
      .default(null),
    in_channels: z.number().int().positive().default(4),
    out_channels: z.number().int().positive().default(4),
    center_input_sample: z.boolean().default(false),
    flip_sin_to_cos: z.boolean().default(true),
    freq_shift: z.number().default(0),
    down_block_types: z.array(z.enum(['CrossAttnDownBlock2D', 'DownBlock2D'])).min(1),
    mid_block_type: z.literal('UNetMidBlock2DCrossAttn').default('UNetMidBlock2DCrossAttn'),
    up_block_types: z.array(z.enum(['UpBlock2D', 'CrossAttnUpBlock2D'])).min(1),
    only_cross_attention: z.literal(false).default(false),
    block_out_channels: z.array(z.number().int().positive()).min(1),
    layers_per_block: z.number().int().positive().default(2),
    downsample_padding: z.number().int().nonnegative().default(1),
    mid_block_scale_factor: z.number().positive().default(1),
    dropout: z.literal(0).default(0),
    act_fn: z.literal('silu').default('silu'),
    norm_num_groups: z.number().int().positive().default(32),
    norm_eps: z.number().positive().default(1e-5),
    cross_attention_dim: z.number().int().positive().default(1280),
    transformer_layers_per_block: z.number().int().positive().default(1),
    reverse_transformer_layers_per_block: nul,
    encoder_hid_dim: nul,
    encoder_hid_dim_type: nul,
    attention_head_dim: z.number().int().positive().default(8),
    num_attention_heads: z.number().int().positive().nullable().default(null),
    dual_cross_attention: z.literal(false).default(false),
    use_linear_projection: z.literal(false).default(false),
    class_embed_type: nul,
    addition_embed_type: nul,
    addition_time_embed_dim: nul,
    num_class_embeds: nul,
    upcast_attention: z.boolean().default(false), // softmax in float32 either way here
    resnet_time_scale_shift: z.literal('default').default('default'),
    resnet_skip_time_act: z.literal(false).default(false),
    resnet_out_scale_factor: z.literal(1).default(1),
    time_embedding_type: z.literal('positional').default('positional'),
    time_embedding_dim: z.number().int().positive().nullable().default(null),
    time_embedding_act_fn: nul,
    timestep_post_act: nul,
    time_cond_proj_dim: nul,
    conv_in_kernel: z.literal(3).default(3),
    conv_out_kernel: z.literal(3).default(3),
    projection_class_embeddings_input_dim: nul,
    attention_type: z.literal('default').default('default'),
    class_embeddings_concat: z.literal(false).default(false),
    mid_block_only_cross_attention: nul,
    cross_attention_norm: nul,
    addition_embed_type_num_heads: z.number().int().default(64),
  })
  .strict();

/** A UNet2DConditionModel config with defaults filled. */
export type UNet2DConditionConfig = z.output<typeof unet2dConditionSchema>;

/** A Transformer2DModel block: channels, heads, its transformer layers. */
export interface TransformerPlan {
  path: string;
  channels: number;
  heads: number;
  layers: number;
}

/** A down or up block with cross-attention transformers after its resnets (none in plain blocks). */
export interface CondBlockPlan {
  path: string;
  resnets: ResnetPlan[];
  transformers: TransformerPlan[];
  resampler: string | null;
}

/** Parses and checks a UNet2DConditionModel config; `source` names the file in errors. */
export function parseUNet2DConditionConfig(json: unknown, source: string): UNet2DConditionConfig {
  const raw = Object.fromEntries(Object.entries(json as Record<string, unknown>).filter(([k]) => !k.startsWith('_')));
  const r = unet2dConditionSchema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0];
    const field = issue.path.join('.') || '(config)';
    throw new LorakitError('LK_CONFIG_INVALID', `${source}: ${field}: ${issue.message} (UNet2DConditionModel)`, {
      file: source,
      field,
    });
  }
  const c = r.data;
  const n = c.block_out_channels.length;
  if (c.down_block_types.length !== n || c.up_block_types.length !== n) {
    throw new LorakitError(
      'LK_CONFIG_INVALID',
      `${source}: block_out_channels: ${n} entries, but ${c.down_block_types.length} down and ` +
        `${c.up_block_types.length} up blocks`,
      { file: source, field: 'block_out_channels' },
    );
  }
  const heads = c.num_attention_heads ?? c.attention_head_dim;
  for (const ch of c.block_out_channels)
    if (ch % heads || ch % c.norm_num_groups) {
      throw new LorakitError(
        'LK_CONFIG_INVALID',
        `${source}: block channels ${ch} must be divisible by the heads (${heads}) and norm_num_groups`,
        { file: source, field: 'block_out_channels' },
      );
    }
  return c;
}

/** The plan of a config, as UNet2DConditionModel.__init__ builds it. */
export function unetCondPlan(c: UNet2DConditionConfig) {
  const ch = c.block_out_channels;
  const last = ch.length - 1;
  const heads = c.num_attention_heads ?? c.attention_head_dim; // diffusers' quirk: the head *count*
  const res = (path: string, inC: number, outC: number, outputScale = 1): ResnetPlan => ({
    path,
    inChannels: inC,
    outChannels: outC,
    outputScale,
  });
  const tf = (path: string, channels: number): TransformerPlan => ({
    path,
    channels,
    heads,
    layers: c.transformer_layers_per_block,
  });
  const down: CondBlockPlan[] = c.down_block_types.map((type, i) => {
    const [inC, outC] = [i === 0 ? ch[0] : ch[i - 1], ch[i]];
    const path = `down_blocks.${i}`;
    const resnets = Array.from({ length: c.layers_per_block }, (_, j) =>
      res(`${path}.resnets.${j}`, j === 0 ? inC : outC, outC),
    );
    const transformers =
      type === 'CrossAttnDownBlock2D' ? resnets.map((_, j) => tf(`${path}.attentions.${j}`, outC)) : [];
    return { path, resnets, transformers, resampler: i < last ? `${path}.downsamplers.0.conv` : null };
  });
  const s = c.mid_block_scale_factor;
  const mid = {
    resnets: [res('mid_block.resnets.0', ch[last], ch[last], s), res('mid_block.resnets.1', ch[last], ch[last], s)],
    transformers: [tf('mid_block.attentions.0', ch[last])],
  };
  const rev = [...ch].reverse();
  const up: CondBlockPlan[] = c.up_block_types.map((type, i) => {
    const [prev, outC, inC] = [rev[Math.max(i - 1, 0)], rev[i], rev[Math.min(i + 1, last)]];
    const path = `up_blocks.${i}`;
    const layers = c.layers_per_block + 1;
    const resnets = Array.from({ length: layers }, (_, j) =>
      res(`${path}.resnets.${j}`, (j === 0 ? prev : outC) + (j === layers - 1 ? inC : outC), outC),
    );
    const transformers =
      type === 'CrossAttnUpBlock2D' ? resnets.map((_, j) => tf(`${path}.attentions.${j}`, outC)) : [];
    return { path, resnets, transformers, resampler: i < last ? `${path}.upsamplers.0.conv` : null };
  });
  return { timeInput: ch[0], timeDim: c.time_embedding_dim ?? ch[0] * 4, down, mid, up };
}

function conv(path: string, inC: number, outC: number, k: number, stride = 1, padding = (k - 1) / 2): Conv2dInfo {
  const [kernel, strides, pad] = [
    [k, k],
    [stride, stride],
    [padding, padding],
  ] as [number, number][];
  const base = { kind: 'conv2d' as const, path, inChannels: inC, outChannels: outC, kernel, stride: strides };
  return { ...base, padding: pad, dilation: [1, 1], groups: 1, weightName: `${path}.weight`, biasName: `${path}.bias` };
}

/** Every Conv2d and Linear in forward order, and the norm parameters. */
function listing(c: UNet2DConditionConfig): { modules: ModuleInfo[]; norms: ParamSpec[] } {
  const p = unetCondPlan(c);
  const modules: ModuleInfo[] = [
    linearInfo('time_embedding.linear_1', p.timeInput, p.timeDim, true),
    linearInfo('time_embedding.linear_2', p.timeDim, p.timeDim, true),
    conv('conv_in', c.in_channels, c.block_out_channels[0], 3),
  ];
  const norms: ParamSpec[] = [];
  const norm = (path: string, n: number) =>
    norms.push({ name: `${path}.weight`, shape: [n] }, { name: `${path}.bias`, shape: [n] });
  const res = (r: ResnetPlan) => {
    norm(`${r.path}.norm1`, r.inChannels);
    norm(`${r.path}.norm2`, r.outChannels);
    modules.push(conv(`${r.path}.conv1`, r.inChannels, r.outChannels, 3));
    modules.push(linearInfo(`${r.path}.time_emb_proj`, p.timeDim, r.outChannels, true));
    modules.push(conv(`${r.path}.conv2`, r.outChannels, r.outChannels, 3));
    if (r.inChannels !== r.outChannels) modules.push(conv(`${r.path}.conv_shortcut`, r.inChannels, r.outChannels, 1));
  };
  const tf = (t: TransformerPlan) => {
    const d = t.channels;
    norm(`${t.path}.norm`, d);
    modules.push(conv(`${t.path}.proj_in`, d, d, 1));
    for (let k = 0; k < t.layers; k++) {
      const b = `${t.path}.transformer_blocks.${k}`;
      for (const n of ['norm1', 'norm2', 'norm3']) norm(`${b}.${n}`, d);
      for (const [a, kv] of [
        ['attn1', d],
        ['attn2', c.cross_attention_dim],
      ] as const) {
        modules.push(linearInfo(`${b}.${a}.to_q`, d, d, false));
        modules.push(linearInfo(`${b}.${a}.to_k`, kv, d, false));
        modules.push(linearInfo(`${b}.${a}.to_v`, kv, d, false));
        modules.push(linearInfo(`${b}.${a}.to_out.0`, d, d, true));
      }
      modules.push(linearInfo(`${b}.ff.net.0.proj`, d, 8 * d, true)); // GEGLU: value and gate, 4·d each
      modules.push(linearInfo(`${b}.ff.net.2`, 4 * d, d, true));
    }
    modules.push(conv(`${t.path}.proj_out`, d, d, 1));
  };
  const block = (b: CondBlockPlan, down: boolean) => {
    b.resnets.forEach((r, j) => {
      res(r);
      if (b.transformers[j]) tf(b.transformers[j]);
    });
    const n = b.resnets[0].outChannels;
    if (b.resampler) modules.push(conv(b.resampler, n, n, 3, down ? 2 : 1, down ? c.downsample_padding : 1));
  };
  p.down.forEach((b) => block(b, true));
  res(p.mid.resnets[0]);
  tf(p.mid.transformers[0]);
  res(p.mid.resnets[1]);
  p.up.forEach((b) => block(b, false));
  norm('conv_norm_out', c.block_out_channels[0]);
  modules.push(conv('conv_out', c.block_out_channels[0], c.out_channels, 3));
  return { modules, norms };
}

/** Every Conv2d and Linear, in forward order. */
export const unetCondModules = (c: UNet2DConditionConfig): ModuleInfo[] => listing(c).modules;

/** Every tensor the network reads. */
export function unetCondParameters(c: UNet2DConditionConfig): ParamSpec[] {
  const { modules, norms } = listing(c);
  return parametersOf(modules, norms);
}

/**
 * Multi-head attention of x [N, T, d] to `kv` [N, S, e] (x itself for self-attention), to_out applied. With `onProbs`
 * the softmax(QKᵀ/√hd) [N, h, T, S] is formed here and handed over (the same ops nn/attention.ts emits unmasked, so
 * the output is unchanged); without it the shared attention() builds them.
 */
function attend(
  ctx: ModelContext<UNet2DConditionConfig>,
  path: string,
  x: Tensor,
  kv: Tensor,
  heads: number,
  onProbs?: (probs: Tensor) => void,
): Tensor {
  const d = x.shape[2] as number;
  const hd = d / heads;
  const split = (name: string, t: Tensor) => splitHeads(ctx.linear(`${path}.${name}`, t), heads, hd); // [N, h, ·, hd]
  const [q, k, v] = [split('to_q', x), split('to_k', kv), split('to_v', kv)];
  let o: Tensor;
  if (onProbs) {
    const probs = q
      .matmul(k.T)
      .mul(hd ** -0.5)
      .softmax(-1); // [N, h, T, S]
    onProbs(probs);
    o = probs.matmul(v); // [N, h, T, hd]
  } else o = attention(q, k, v, null, { scale: hd ** -0.5 });
  return ctx.linear(`${path}.to_out.0`, mergeHeads(o, heads, hd)); // [N, T, d]
}

/**
 * One cross-attention layer (a BasicTransformerBlock's attn2) of a UNet2DConditionModel, as a typed handle: which
 * block, which Transformer2DModel in it, which transformer layer. Made by crossAttentionLayers; compare handles with
 * sameCrossAttentionLayer, never by their path.
 */
export interface CrossAttentionLayer {
  place: 'down' | 'mid' | 'up';
  /** The block's index among the down (or up) blocks; 0 for the mid block. */
  block: number;
  /** The Transformer2DModel's index in the block (`attentions.{j}`). */
  attention: number;
  /** The transformer layer (`transformer_blocks.{k}`). */
  layer: number;
  heads: number;
  /** The sample's height (and width) over the layer's: its maps are [H/downscale, W/downscale]. */
  downscale: number;
  /** diffusers' module path of the attention, for messages and listings. */
  path: string;
}

/** Whether two handles name the same layer. */
export const sameCrossAttentionLayer = (a: CrossAttentionLayer, b: CrossAttentionLayer): boolean =>
  a.place === b.place && a.block === b.block && a.attention === b.attention && a.layer === b.layer;

/** Every cross-attention layer of a config, in forward order (down blocks, mid block, up blocks). */
export function crossAttentionLayers(c: UNet2DConditionConfig): CrossAttentionLayer[] {
  const p = unetCondPlan(c);
  const last = c.block_out_channels.length - 1;
  const out: CrossAttentionLayer[] = [];
  const add = (place: CrossAttentionLayer['place'], block: number, ts: TransformerPlan[], downscale: number) =>
    ts.forEach((t, attention) => {
      for (let layer = 0; layer < t.layers; layer++) {
        const path = `${t.path}.transformer_blocks.${layer}.attn2`;
        out.push({ place, block, attention, layer, heads: t.heads, downscale, path });
      }
    });
  p.down.forEach((b, i) => add('down', i, b.transformers, 2 ** i));
  add('mid', 0, p.mid.transformers, 2 ** last);
  p.up.forEach((b, i) => add('up', i, b.transformers, 2 ** (last - i)));
  return out;
}

/** Receives each cross-attention layer's probabilities [N, heads, h·w, L] as the graph is built. */
export type CrossAttentionProbe = (layer: CrossAttentionLayer, probs: Tensor) => void;

/**
 * Transformer2DModel on x [N, C, H, W] with states [N, L, D] → [N, C, H, W]; `probe(k, probs)` sees layer k's attn2.
 */
function transformer2d(
  ctx: ModelContext<UNet2DConditionConfig>,
  t: TransformerPlan,
  x: Tensor,
  states: Tensor,
  probe?: (layer: number, probs: Tensor) => void,
) {
  const [, c, h, w] = x.shape as number[];
  const ln = (name: string, v: Tensor) =>
    layerNorm(v, ctx.param(`${name}.weight`, [c]), ctx.param(`${name}.bias`, [c]), 1e-5);
  let v = ctx.conv2d(`${t.path}.proj_in`, groupNorm(ctx, `${t.path}.norm`, x, ctx.config.norm_num_groups, 1e-6));
  v = v.reshape([0, c, h * w]).transpose([0, 2, 1]); // [N, HW, C]
  for (let k = 0; k < t.layers; k++) {
    const b = `${t.path}.transformer_blocks.${k}`;
    const n1 = ln(`${b}.norm1`, v);
    v = v.add(attend(ctx, `${b}.attn1`, n1, n1, t.heads));
    const onProbs = probe && ((p: Tensor) => probe(k, p));
    v = v.add(attend(ctx, `${b}.attn2`, ln(`${b}.norm2`, v), states, t.heads, onProbs));
    const [value, gate] = ctx.linear(`${b}.ff.net.0.proj`, ln(`${b}.norm3`, v)).split([4 * c, 4 * c], 2); // GEGLU
    v = v.add(ctx.linear(`${b}.ff.net.2`, value.mul(gelu(gate))));
  }
  const out = v.transpose([0, 2, 1]).reshape([0, c, h, w]);
  return ctx.conv2d(`${t.path}.proj_out`, out).add(x);
}

/**
 * UNet2DConditionModel.forward(sample, timestep, encoder_hidden_states).sample. `probe`, when given, receives every
 * cross-attention layer's probabilities with its handle (the output is the same with or without it).
 */
export function unet2dCondition(
  ctx: ModelContext<UNet2DConditionConfig>,
  sample: Tensor,
  timestep: Tensor,
  states: Tensor,
  probe?: CrossAttentionProbe,
): Tensor {
  return unet2dConditionParts(ctx, sample, timestep, states, undefined, probe).sample;
}

/**
 * The forward pass with a DeepCache-style cut (Ma et al., CVPR 2024): `deep` is the input of the last up block (the
 * output of every block below it, [N, C, H, W] at full resolution). Given `cached` (a `deep` of an earlier pass),
 * only the shallow path runs — conv_in, the first down block's layers (their outputs are the last up block's skips;
 * not its downsampler), the last up block, conv_out — and `cached` stands for everything deeper. With `cached` equal
 * to this pass's own `deep` the output is the full pass's. `probe` sees the cross-attention layers that run.
 */
export function unet2dConditionParts(
  ctx: ModelContext<UNet2DConditionConfig>,
  sample: Tensor,
  timestep: Tensor,
  states: Tensor,
  cached?: Tensor,
  probe?: CrossAttentionProbe,
): { sample: Tensor; deep: Tensor } {
  const c = ctx.config;
  const p = unetCondPlan(c);
  const t = timestepEmbedding(timestep, p.timeInput, c.flip_sin_to_cos, c.freq_shift);
  const temb = ctx.linear('time_embedding.linear_2', silu(ctx.linear('time_embedding.linear_1', t))); // [N, T]
  const handles = probe ? crossAttentionLayers(c) : [];
  /** The probe of Transformer2DModel `attention` of a block, handing over the listed handle of each of its layers. */
  const probeOf = (place: CrossAttentionLayer['place'], block: number, attention: number) =>
    probe &&
    ((layer: number, probs: Tensor) => {
      const want = { place, block, attention, layer } as CrossAttentionLayer;
      probe(handles.find((l) => sameCrossAttentionLayer(l, want))!, probs); // probs [N, heads, h·w, L]
    });
  let h = ctx.conv2d('conv_in', c.center_input_sample ? sample.mul(2).sub(1) : sample);
  const skips = [h];
  const layer = (b: CondBlockPlan, place: 'down' | 'up', i: number, j: number, x: Tensor) => {
    const y = resnetBlock(ctx, b.resnets[j], x, temb);
    return b.transformers[j] ? transformer2d(ctx, b.transformers[j], y, states, probeOf(place, i, j)) : y;
  };
  const lastIndex = p.up.length - 1;
  const last = p.up[lastIndex];
  if (cached) {
    // the shallow path: only the skips the last up block reads
    p.down[0].resnets.forEach((_, j) => {
      h = layer(p.down[0], 'down', 0, j, h);
      skips.push(h);
    });
    h = cached;
  } else {
    p.down.forEach((b, i) => {
      b.resnets.forEach((_, j) => {
        h = layer(b, 'down', i, j, h);
        skips.push(h);
      });
      if (b.resampler) {
        h = ctx.conv2d(b.resampler, h);
        skips.push(h);
      }
    });
    h = resnetBlock(ctx, p.mid.resnets[0], h, temb);
    h = transformer2d(ctx, p.mid.transformers[0], h, states, probeOf('mid', 0, 0));
    h = resnetBlock(ctx, p.mid.resnets[1], h, temb);
    p.up.slice(0, -1).forEach((b, i) => {
      b.resnets.forEach((_, j) => {
        h = layer(b, 'up', i, j, h.graph.concat([h, skips.pop()!], 1));
      });
      if (b.resampler) h = ctx.conv2d(b.resampler, upsampleNearest2x(h));
    });
  }
  const deep = h;
  last.resnets.forEach((_, j) => {
    h = layer(last, 'up', lastIndex, j, h.graph.concat([h, skips.pop()!], 1));
  });
  if (last.resampler) h = ctx.conv2d(last.resampler, upsampleNearest2x(h));
  return {
    sample: ctx.conv2d('conv_out', silu(groupNorm(ctx, 'conv_norm_out', h, c.norm_num_groups, c.norm_eps))),
    deep,
  };
}
