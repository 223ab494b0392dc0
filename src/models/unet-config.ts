/**
 * diffusers' UNet2DModel as lorakit reads it: the config.json fields (diffusers' names and defaults), the block plan
 * they imply (which resnets, attentions and resamplers sit where, with their channel counts, as
 * diffusers/models/unets/unet_2d.py builds them), and from the plan the module list (every Conv2d and Linear, the
 * adapter targets) and every parameter with its shape. Supported: DownBlock2D, AttnDownBlock2D, UpBlock2D,
 * AttnUpBlock2D, UNetMidBlock2D (with or without attention), positional timestep embeddings, conv resamplers; other
 * values are refused naming the field.
 * Not here: the graph (unet.ts), opening a folder (unet-load.ts).
 */
import { z } from 'zod';
import { LorakitError } from '../errors.ts';
import type { Conv2dInfo, ModuleInfo } from '../nn/index.ts';
import { type ParamSpec, linearInfo, parametersOf } from './family.ts';

const DOWN = ['DownBlock2D', 'AttnDownBlock2D'] as const;
const UP = ['UpBlock2D', 'AttnUpBlock2D'] as const;

/** UNet2DModel's config fields with diffusers' defaults; `_`-prefixed bookkeeping keys are ignored. */
export const unet2dSchema = z
  .object({
    sample_size: z
      .union([z.number().int().positive(), z.array(z.number().int().positive())])
      .nullable()
      .default(null),
    in_channels: z.number().int().positive().default(3),
    out_channels: z.number().int().positive().default(3),
    center_input_sample: z.boolean().default(false),
    time_embedding_type: z.literal('positional').default('positional'),
    time_embedding_dim: z.number().int().positive().nullable().default(null),
    freq_shift: z.number().default(0),
    flip_sin_to_cos: z.boolean().default(true),
    down_block_types: z
      .array(z.enum(DOWN))
      .min(1)
      .default(['DownBlock2D', 'AttnDownBlock2D', 'AttnDownBlock2D', 'AttnDownBlock2D']),
    mid_block_type: z.literal('UNetMidBlock2D').nullable().default('UNetMidBlock2D'),
    up_block_types: z
      .array(z.enum(UP))
      .min(1)
      .default(['AttnUpBlock2D', 'AttnUpBlock2D', 'AttnUpBlock2D', 'UpBlock2D']),
    block_out_channels: z.array(z.number().int().positive()).min(1).default([224, 448, 672, 896]),
    layers_per_block: z.number().int().positive().default(2),
    mid_block_scale_factor: z.number().positive().default(1),
    downsample_padding: z.number().int().nonnegative().default(1),
    downsample_type: z.literal('conv').default('conv'),
    upsample_type: z.literal('conv').default('conv'),
    dropout: z.literal(0).default(0),
    act_fn: z.literal('silu').default('silu'),
    attention_head_dim: z.number().int().positive().nullable().default(8),
    norm_num_groups: z.number().int().positive().default(32),
    attn_norm_num_groups: z.number().int().positive().nullable().default(null),
    norm_eps: z.number().positive().default(1e-5),
    resnet_time_scale_shift: z.literal('default').default('default'),
    add_attention: z.boolean().default(true),
    class_embed_type: z.null().default(null),
    num_class_embeds: z.null().default(null),
    num_train_timesteps: z.number().int().nullable().default(null),
  })
  .strict();

/** A UNet2DModel config with defaults filled. */
export type UNet2DConfig = z.output<typeof unet2dSchema>;

/** A ResnetBlock2D: GroupNorm, SiLU, 3×3 conv, + time projection, GroupNorm, SiLU, 3×3 conv, (1×1) shortcut. */
export interface ResnetPlan {
  path: string;
  inChannels: number;
  outChannels: number;
  /** Divides the sum (diffusers' output_scale_factor). */
  outputScale: number;
}

/** A self-attention block over the H·W positions with a GroupNorm in front and a residual connection. */
export interface AttentionPlan {
  path: string;
  channels: number;
  heads: number;
  headDim: number;
  groups: number;
  outputScale: number;
}

/** A down or up block: its resnets (each followed by its attention, if any), then its resampler conv, if any. */
export interface BlockPlan {
  path: string;
  resnets: ResnetPlan[];
  attentions: AttentionPlan[];
  /** Path of the stride-2 conv (down) or the conv after nearest 2× upsampling (up); null in the last block. */
  resampler: string | null;
}

/** The whole network. */
export interface UNetPlan {
  /** Channels of the sinusoidal embedding (block_out_channels[0]) and of the time embedding MLP. */
  timeInput: number;
  timeDim: number;
  down: BlockPlan[];
  /** resnets[0], then attentions[i] and resnets[i + 1]. */
  mid: { resnets: ResnetPlan[]; attentions: AttentionPlan[] } | null;
  up: BlockPlan[];
}

/** Checks the config against itself (lengths, divisibility) and parses it; `source` names the file in errors. */
export function parseUNet2DConfig(json: unknown, source: string): UNet2DConfig {
  const raw = Object.fromEntries(Object.entries(json as Record<string, unknown>).filter(([k]) => !k.startsWith('_')));
  const r = unet2dSchema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new LorakitError(
      'LK_CONFIG_INVALID',
      `${source}: ${issue.path.join('.') || '(config)'}: ${issue.message} (UNet2DModel fields lorakit supports: ` +
        `${Object.keys(unet2dSchema.shape).join(', ')})`,
      { file: source, field: issue.path.join('.') },
    );
  }
  const c = r.data;
  const bad = (field: string, why: string) => {
    throw new LorakitError('LK_CONFIG_INVALID', `${source}: ${field}: ${why}`, { file: source, field });
  };
  const n = c.block_out_channels.length;
  if (c.down_block_types.length !== n || c.up_block_types.length !== n)
    bad(
      'block_out_channels',
      `${n} entries, but ${c.down_block_types.length} down and ${c.up_block_types.length} up blocks`,
    );
  for (const ch of c.block_out_channels)
    if (ch % c.norm_num_groups) bad('norm_num_groups', `${c.norm_num_groups} does not divide block channels ${ch}`);
  // only blocks with attention split their channels into heads
  const rev = [...c.block_out_channels].reverse();
  const attended = [
    ...c.down_block_types.flatMap((t, i) => (t === 'AttnDownBlock2D' ? [c.block_out_channels[i]] : [])),
    ...c.up_block_types.flatMap((t, i) => (t === 'AttnUpBlock2D' ? [rev[i]] : [])),
    ...(c.mid_block_type !== null && c.add_attention ? [c.block_out_channels[n - 1]] : []),
  ];
  if (c.attention_head_dim !== null)
    for (const ch of attended)
      if (ch % c.attention_head_dim)
        bad('attention_head_dim', `${c.attention_head_dim} does not divide channels ${ch}`);
  return c;
}

function resnet(path: string, inChannels: number, outChannels: number, outputScale = 1): ResnetPlan {
  return { path, inChannels, outChannels, outputScale };
}

function attention(c: UNet2DConfig, path: string, channels: number, groups: number, outputScale = 1): AttentionPlan {
  const headDim = c.attention_head_dim ?? channels; // diffusers: head dim defaults to the block's channels (1 head)
  return { path, channels, heads: channels / headDim, headDim, groups, outputScale };
}

/** The block plan of a config, as UNet2DModel.__init__ builds it. */
export function unetPlan(c: UNet2DConfig): UNetPlan {
  const ch = c.block_out_channels;
  const last = ch.length - 1;
  const g = c.norm_num_groups;
  const down: BlockPlan[] = c.down_block_types.map((type, i) => {
    const [inC, outC] = [i === 0 ? ch[0] : ch[i - 1], ch[i]];
    const path = `down_blocks.${i}`;
    const resnets = Array.from({ length: c.layers_per_block }, (_, j) =>
      resnet(`${path}.resnets.${j}`, j === 0 ? inC : outC, outC),
    );
    const attentions =
      type === 'AttnDownBlock2D' ? resnets.map((_, j) => attention(c, `${path}.attentions.${j}`, outC, g)) : [];
    return { path, resnets, attentions, resampler: i < last ? `${path}.downsamplers.0.conv` : null };
  });
  let mid: UNetPlan['mid'] = null;
  if (c.mid_block_type !== null) {
    const s = c.mid_block_scale_factor;
    const groups = c.attn_norm_num_groups ?? g;
    mid = {
      resnets: [
        resnet('mid_block.resnets.0', ch[last], ch[last], s),
        resnet('mid_block.resnets.1', ch[last], ch[last], s),
      ],
      attentions: c.add_attention ? [attention(c, 'mid_block.attentions.0', ch[last], groups, s)] : [],
    };
  }
  const rev = [...ch].reverse();
  const up: BlockPlan[] = c.up_block_types.map((type, i) => {
    const [prev, outC, inC] = [rev[Math.max(i - 1, 0)], rev[i], rev[Math.min(i + 1, last)]];
    const path = `up_blocks.${i}`;
    const layers = c.layers_per_block + 1;
    // resnet j reads the previous output (prev channels for j = 0) concatenated with a skip of the down path
    const resnets = Array.from({ length: layers }, (_, j) =>
      resnet(`${path}.resnets.${j}`, (j === 0 ? prev : outC) + (j === layers - 1 ? inC : outC), outC),
    );
    const attentions =
      type === 'AttnUpBlock2D' ? resnets.map((_, j) => attention(c, `${path}.attentions.${j}`, outC, g)) : [];
    return { path, resnets, attentions, resampler: i < last ? `${path}.upsamplers.0.conv` : null };
  });
  return { timeInput: ch[0], timeDim: c.time_embedding_dim ?? ch[0] * 4, down, mid, up };
}

/** A torch Conv2d entry with weight and bias under `<path>.`. */
function conv(path: string, inC: number, outC: number, k: number, stride = 1, padding = (k - 1) / 2): Conv2dInfo {
  return {
    kind: 'conv2d',
    path,
    inChannels: inC,
    outChannels: outC,
    kernel: [k, k],
    stride: [stride, stride],
    padding: [padding, padding],
    dilation: [1, 1],
    groups: 1,
    weightName: `${path}.weight`,
    biasName: `${path}.bias`,
  };
}

/** Every Conv2d and Linear of the network, in forward order. */
export function unetModules(c: UNet2DConfig): ModuleInfo[] {
  const p = unetPlan(c);
  const out: ModuleInfo[] = [
    linearInfo('time_embedding.linear_1', p.timeInput, p.timeDim, true),
    linearInfo('time_embedding.linear_2', p.timeDim, p.timeDim, true),
    conv('conv_in', c.in_channels, c.block_out_channels[0], 3),
  ];
  const res = (r: ResnetPlan) => {
    out.push(conv(`${r.path}.conv1`, r.inChannels, r.outChannels, 3));
    out.push(linearInfo(`${r.path}.time_emb_proj`, p.timeDim, r.outChannels, true));
    out.push(conv(`${r.path}.conv2`, r.outChannels, r.outChannels, 3));
    if (r.inChannels !== r.outChannels) out.push(conv(`${r.path}.conv_shortcut`, r.inChannels, r.outChannels, 1));
  };
  const attn = (a: AttentionPlan) => {
    for (const n of ['to_q', 'to_k', 'to_v', 'to_out.0'])
      out.push(linearInfo(`${a.path}.${n}`, a.channels, a.channels, true));
  };
  const block = (b: BlockPlan, resamplerChannels: number, down: boolean) => {
    b.resnets.forEach((r, j) => {
      res(r);
      if (b.attentions[j]) attn(b.attentions[j]);
    });
    if (b.resampler) {
      const padding = down ? c.downsample_padding : 1;
      out.push(conv(b.resampler, resamplerChannels, resamplerChannels, 3, down ? 2 : 1, padding));
    }
  };
  p.down.forEach((b, i) => block(b, c.block_out_channels[i], true));
  if (p.mid) {
    res(p.mid.resnets[0]);
    p.mid.resnets.slice(1).forEach((r, j) => {
      if (p.mid!.attentions[j]) attn(p.mid!.attentions[j]);
      res(r);
    });
  }
  p.up.forEach((b) => block(b, b.resnets[0].outChannels, false));
  out.push(conv('conv_out', c.block_out_channels[0], c.out_channels, 3));
  return out;
}

/** Every tensor the network reads: the modules' weights and biases, then the GroupNorm affines. */
export function unetParameters(c: UNet2DConfig): ParamSpec[] {
  const p = unetPlan(c);
  const norms: ParamSpec[] = [];
  const norm = (path: string, channels: number) =>
    norms.push({ name: `${path}.weight`, shape: [channels] }, { name: `${path}.bias`, shape: [channels] });
  const resnets = [...p.down.flatMap((b) => b.resnets), ...(p.mid?.resnets ?? []), ...p.up.flatMap((b) => b.resnets)];
  for (const r of resnets) {
    norm(`${r.path}.norm1`, r.inChannels);
    norm(`${r.path}.norm2`, r.outChannels);
  }
  const attns = [
    ...p.down.flatMap((b) => b.attentions),
    ...(p.mid?.attentions ?? []),
    ...p.up.flatMap((b) => b.attentions),
  ];
  for (const a of attns) norm(`${a.path}.group_norm`, a.channels);
  norm('conv_norm_out', c.block_out_channels[0]);
  return parametersOf(unetModules(c), norms);
}
