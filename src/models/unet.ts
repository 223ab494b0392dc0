/**
 * diffusers' UNet2DModel as a graph: sample [N, in, H, W] and timestep [N] → [N, out, H, W], every Conv2d and
 * Linear through the ModelContext (so adapters wrap them), GroupNorm, SiLU, nearest 2× upsampling and the attention
 * blocks as plain ops (autodiff sees every step). Follows diffusers/models/unets/unet_2d.py, unet_2d_blocks.py,
 * resnet.py, attention_processor.py (AttnProcessor2_0) and embeddings.py (get_timestep_embedding) op for op.
 * Not here: the config and block plan (unet-config.ts), opening folders (unet-load.ts).
 */
import type { Tensor } from '../graph/index.ts';
import { attention, mergeHeads, splitHeads } from '../nn/attention.ts';
import type { ModelContext } from '../nn/index.ts';
import { type AttentionPlan, type BlockPlan, type ResnetPlan, type UNet2DConfig, unetPlan } from './unet-config.ts';

/** x·σ(x). */
export const silu = (x: Tensor) => x.mul(x.sigmoid());

/** Static dims of a tensor (the U-Net graphs are built for one input size). */
function dims(x: Tensor): number[] {
  if (x.shape.slice(1).some((d) => typeof d !== 'number')) throw new Error(`internal: unet needs static C, H, W`);
  return x.shape.map((d) => (typeof d === 'number' ? d : 0));
}

/**
 * torch.nn.GroupNorm on x [N, C, H, W]: mean and (biased) variance over each group of C/G channels and all positions,
 * then the per-channel affine of `path`.weight / .bias.
 */
export function groupNorm(ctx: ModelContext<unknown>, path: string, x: Tensor, groups: number, eps: number): Tensor {
  const [, c, h, w] = dims(x);
  const g = x.reshape([0, groups, -1]); // [N, G, C/G·H·W]
  const d = g.sub(g.mean(2, true));
  const y = d.div(d.mul(d).mean(2, true).add(eps).sqrt()).reshape([0, c, h, w]); // [N, C, H, W]
  const gamma = ctx.param(`${path}.weight`, [c]).reshape([1, c, 1, 1]);
  return y.mul(gamma).add(ctx.param(`${path}.bias`, [c]).reshape([1, c, 1, 1]));
}

/**
 * diffusers' get_timestep_embedding: t [N] → [N, dim], frequencies exp(−ln(10⁴)·k/(dim/2 − shift)) computed in
 * float32 as torch does (the exponent rounded at each step), [sin, cos] or with flip_sin_to_cos [cos, sin].
 */
export function timestepEmbedding(t: Tensor, dim: number, flip: boolean, shift: number): Tensor {
  const half = Math.floor(dim / 2);
  const scale = Math.fround(-Math.log(10000));
  const freqs = Float32Array.from({ length: half }, (_, k) =>
    Math.exp(Math.fround(Math.fround(scale * k) / Math.fround(half - shift))),
  );
  const arg = t.unsqueeze(1).mul(t.graph.constant(freqs, t.dtype, [1, half])); // [N, half]
  const parts = flip ? [arg.cos(), arg.sin()] : [arg.sin(), arg.cos()];
  const emb = t.graph.concat(parts, 1); // [N, 2·half]
  if (dim % 2 === 0) return emb;
  return t.graph.concat([emb, emb.slice([0], [1], [1]).mul(0)], 1); // torch pads a zero column
}

/** The config fields a ResnetBlock2D reads (UNet2DModel's and UNet2DConditionModel's). */
export type ResnetConfig = { norm_num_groups: number; norm_eps: number };

/** ResnetBlock2D (time_embedding_norm "default"): x [N, in, H, W], temb [N, T] → [N, out, H, W]. */
export function resnetBlock<C extends ResnetConfig>(
  ctx: ModelContext<C>,
  r: ResnetPlan,
  x: Tensor,
  temb: Tensor,
): Tensor {
  const { norm_num_groups: groups, norm_eps: eps } = ctx.config;
  let h = ctx.conv2d(`${r.path}.conv1`, silu(groupNorm(ctx, `${r.path}.norm1`, x, groups, eps))); // [N, out, H, W]
  h = h.add(ctx.linear(`${r.path}.time_emb_proj`, silu(temb)).unsqueeze([2, 3])); // + [N, out, 1, 1]
  h = ctx.conv2d(`${r.path}.conv2`, silu(groupNorm(ctx, `${r.path}.norm2`, h, groups, eps)));
  const skip = r.inChannels !== r.outChannels ? ctx.conv2d(`${r.path}.conv_shortcut`, x) : x;
  const y = skip.add(h);
  return r.outputScale === 1 ? y : y.div(r.outputScale);
}

/** Attention with a GroupNorm in front over the H·W positions, residual added: [N, C, H, W] → [N, C, H, W]. */
function attentionBlock(ctx: ModelContext<UNet2DConfig>, a: AttentionPlan, x: Tensor): Tensor {
  const [, c, h, w] = dims(x);
  const n = groupNorm(ctx, `${a.path}.group_norm`, x, a.groups, ctx.config.norm_eps)
    .reshape([0, c, h * w])
    .transpose([0, 2, 1]); // [N, HW, C]
  const heads = (name: string) => splitHeads(ctx.linear(`${a.path}.${name}`, n), a.heads, a.headDim); // [N, h, HW, hd]
  const o = attention(heads('to_q'), heads('to_k'), heads('to_v'), null, { scale: a.headDim ** -0.5 });
  const out = ctx
    .linear(`${a.path}.to_out.0`, mergeHeads(o, a.heads, a.headDim)) // [N, HW, C]
    .transpose([0, 2, 1])
    .reshape([0, c, h, w]);
  const y = out.add(x);
  return a.outputScale === 1 ? y : y.div(a.outputScale);
}

/** Nearest-neighbour 2× upsampling (F.interpolate(scale_factor=2, mode="nearest")): each value to a 2×2 block. */
export function upsampleNearest2x(x: Tensor): Tensor {
  const [, c, h, w] = dims(x);
  const ones = x.graph.constant(new Float32Array(4).fill(1), x.dtype, [1, 1, 1, 2, 1, 2]);
  return x
    .unsqueeze([3, 5])
    .mul(ones)
    .reshape([0, c, 2 * h, 2 * w]); // [N, C, H, 2, W, 2] → [N, C, 2H, 2W]
}

/** A down block: resnet (+ attention) per layer, each output kept as a skip, then the stride-2 conv. */
function downBlock(ctx: ModelContext<UNet2DConfig>, b: BlockPlan, x: Tensor, temb: Tensor, skips: Tensor[]): Tensor {
  let h = x;
  b.resnets.forEach((r, j) => {
    h = resnetBlock(ctx, r, h, temb);
    if (b.attentions[j]) h = attentionBlock(ctx, b.attentions[j], h);
    skips.push(h);
  });
  if (b.resampler) {
    h = ctx.conv2d(b.resampler, h); // [N, C, H/2, W/2]
    skips.push(h);
  }
  return h;
}

/** An up block: per layer the last skip concatenated on channels, resnet (+ attention); then upsample and conv. */
function upBlock(ctx: ModelContext<UNet2DConfig>, b: BlockPlan, x: Tensor, temb: Tensor, skips: Tensor[]): Tensor {
  let h = x;
  b.resnets.forEach((r, j) => {
    h = resnetBlock(ctx, r, h.graph.concat([h, skips.pop()!], 1), temb);
    if (b.attentions[j]) h = attentionBlock(ctx, b.attentions[j], h);
  });
  return b.resampler ? ctx.conv2d(b.resampler, upsampleNearest2x(h)) : h;
}

/** UNet2DModel.forward(sample, timestep).sample: [N, in, H, W], [N] → [N, out, H, W]. */
export function unet2d(ctx: ModelContext<UNet2DConfig>, sample: Tensor, timestep: Tensor): Tensor {
  const c = ctx.config;
  const p = unetPlan(c);
  const t = timestepEmbedding(timestep, p.timeInput, c.flip_sin_to_cos, c.freq_shift); // [N, ch0]
  const temb = ctx.linear('time_embedding.linear_2', silu(ctx.linear('time_embedding.linear_1', t))); // [N, T]
  const x = c.center_input_sample ? sample.mul(2).sub(1) : sample;
  let h = ctx.conv2d('conv_in', x); // [N, ch0, H, W]
  const skips = [h];
  for (const b of p.down) h = downBlock(ctx, b, h, temb, skips);
  if (p.mid) {
    h = resnetBlock(ctx, p.mid.resnets[0], h, temb);
    p.mid.resnets.slice(1).forEach((r, j) => {
      if (p.mid!.attentions[j]) h = attentionBlock(ctx, p.mid!.attentions[j], h);
      h = resnetBlock(ctx, r, h, temb);
    });
  }
  for (const b of p.up) h = upBlock(ctx, b, h, temb, skips);
  h = silu(groupNorm(ctx, 'conv_norm_out', h, c.norm_num_groups, c.norm_eps));
  return ctx.conv2d('conv_out', h); // [N, out, H, W]
}
