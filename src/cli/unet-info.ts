/**
 * `lorakit info <unet-dir>` for a diffusers U-Net folder (config.json with `_class_name` UNet2DModel or
 * UNet2DConditionModel + diffusion_pytorch_model.safetensors): the class, its blocks with channels and resolution,
 * the parameter count and dtypes, the attention layers (self- and cross-attention, heads, grid) and the modules an
 * adapter can target (Conv2d and Linear, under diffusers' paths, indices folded). Reads the config and the
 * safetensors headers only: no weight and no ONNX Runtime is loaded.
 * Not here: causal-LM folders (info.ts), the U-Net graph (models/unet*.ts).
 */
import { join } from 'node:path';
import { openWeights, readJsonFile } from '../io/index.ts';
import {
  crossAttentionLayers,
  parseUNet2DConditionConfig,
  type UNet2DConditionConfig,
  unetCondModules,
  unetCondPlan,
} from '../models/unet-cond.ts';
import { parseUNet2DConfig, type UNet2DConfig, unetModules, unetPlan } from '../models/unet-config.ts';
import type { ModuleInfo } from '../nn/index.ts';

/** The diffusers classes lorakit builds. */
export const UNET_CLASSES = ['UNet2DModel', 'UNet2DConditionModel'] as const;

/** One block of the U-Net: path, diffusers type, output channels, and its grid as a fraction of the sample. */
export interface UNetBlockInfo {
  path: string;
  type: string;
  channels: number;
  downscale: number;
}

/** One attention layer: path, kind, heads, grid fraction; cross-attention also the width of the states it reads. */
export interface UNetAttentionInfo {
  path: string;
  kind: 'self' | 'cross';
  heads: number;
  downscale: number;
  contextDim: number | null;
}

/** What `unetInfo` reports. */
export interface UNetInfo {
  dir: string;
  className: (typeof UNET_CLASSES)[number];
  sampleSize: number | number[] | null;
  inChannels: number;
  outChannels: number;
  blockOutChannels: number[];
  layersPerBlock: number;
  parameters: number;
  dtypes: Record<string, number>;
  blocks: UNetBlockInfo[];
  attention: UNetAttentionInfo[];
  /** Targetable modules, indices folded (`down_blocks.{0..1}.resnets.0.conv1`): pattern, kind, shape, how many. */
  modules: { pattern: string; kind: 'conv2d' | 'linear'; shape: string; count: number }[];
}

/** The `_class_name` of a folder's config.json when it is a U-Net lorakit builds, else null. */
export async function unetClassOf(dir: string): Promise<UNetInfo['className'] | null> {
  const raw = (await readJsonFile(join(dir, 'config.json')).catch(() => null)) as Record<string, unknown> | null;
  const name = raw?._class_name;
  return UNET_CLASSES.find((c) => c === name) ?? null;
}

/** `{0..5}` for a contiguous run, `{0,2,7}` otherwise, the number itself for one index. */
function fmtIndices(xs: readonly number[]): string {
  const v = [...new Set(xs)].sort((x, y) => x - y);
  if (v.length === 1) return String(v[0]);
  return v.every((x, i) => i === 0 || x === v[i - 1] + 1) ? `{${v[0]}..${v[v.length - 1]}}` : `{${v.join(',')}}`;
}

/** Folds module paths: modules whose paths differ only in indices, of one kind and shape, are one line. */
function foldModules(modules: readonly ModuleInfo[]): UNetInfo['modules'] {
  const out = new Map<string, { template: string; kind: 'conv2d' | 'linear'; shape: string; indices: number[][] }>();
  for (const m of modules) {
    if (m.kind !== 'conv2d' && m.kind !== 'linear') continue;
    const template = m.path.replace(/\.\d+(?=\.|$)/g, '.{}');
    const indices = [...m.path.matchAll(/\.(\d+)(?=\.|$)/g)].map((x) => Number(x[1]));
    const stride = m.kind === 'conv2d' && m.stride[0] > 1 ? `, stride ${m.stride[0]}` : '';
    const shape =
      m.kind === 'conv2d'
        ? `[${m.inChannels} -> ${m.outChannels}, ${m.kernel[0]}x${m.kernel[1]}${stride}]`
        : `[${m.inFeatures} -> ${m.outFeatures}]`;
    const key = `${template}|${m.kind}|${shape}`;
    const f = out.get(key);
    if (f) f.indices.push(indices);
    else out.set(key, { template, kind: m.kind, shape, indices: [indices] });
  }
  return [...out.values()].map(({ template, kind, shape, indices }) => {
    let slot = 0;
    const pattern = template.replace(/\{\}/g, () => {
      const k = slot++;
      return fmtIndices(indices.map((ix) => ix[k]));
    });
    return { pattern, kind, shape, count: indices.length };
  });
}

/** Describes a diffusers U-Net folder from its config and weight headers. */
export async function unetInfo(dir: string): Promise<UNetInfo> {
  const file = join(dir, 'config.json');
  const raw = (await readJsonFile(file)) as Record<string, unknown>;
  const weights = await openWeights(dir, { stem: 'diffusion_pytorch_model' });
  const dtypes: Record<string, number> = {};
  let parameters = 0;
  for (const n of weights.names()) {
    const t = weights.info(n);
    dtypes[t.dtype] = (dtypes[t.dtype] ?? 0) + 1;
    parameters += t.shape.reduce((a, b) => a * b, 1);
  }
  await weights.close();
  const n = (raw.block_out_channels as number[] | undefined)?.length ?? 1;
  const scale = (place: 'down' | 'mid' | 'up', i: number) =>
    2 ** (place === 'down' ? i : place === 'mid' ? n - 1 : n - 1 - i);
  const blocksOf = (down: string[], mid: string | null, up: string[], ch: number[]): UNetBlockInfo[] => [
    ...down.map((type, i) => ({ path: `down_blocks.${i}`, type, channels: ch[i], downscale: scale('down', i) })),
    ...(mid ? [{ path: 'mid_block', type: mid, channels: ch[n - 1], downscale: scale('mid', 0) }] : []),
    ...up.map((type, i) => ({ path: `up_blocks.${i}`, type, channels: ch[n - 1 - i], downscale: scale('up', i) })),
  ];
  // The fields both classes report the same way, from their parsed config.
  const shared = (className: UNetInfo['className'], c: UNet2DConfig | UNet2DConditionConfig) => ({
    dir,
    className,
    sampleSize: c.sample_size,
    inChannels: c.in_channels,
    outChannels: c.out_channels,
    blockOutChannels: c.block_out_channels,
    layersPerBlock: c.layers_per_block,
    parameters,
    dtypes,
  });
  if (raw._class_name === 'UNet2DConditionModel') {
    const c = parseUNet2DConditionConfig(raw, file);
    const p = unetCondPlan(c);
    const attention: UNetAttentionInfo[] = [];
    const tfs = [
      ...p.down.map((b, i) => [b.transformers, scale('down', i)] as const),
      [p.mid.transformers, scale('mid', 0)] as const,
      ...p.up.map((b, i) => [b.transformers, scale('up', i)] as const),
    ];
    for (const [ts, ds] of tfs)
      for (const t of ts)
        for (let k = 0; k < t.layers; k++)
          attention.push({
            path: `${t.path}.transformer_blocks.${k}.attn1`,
            kind: 'self',
            heads: t.heads,
            downscale: ds,
            contextDim: null,
          });
    for (const l of crossAttentionLayers(c))
      attention.push({
        path: l.path,
        kind: 'cross',
        heads: l.heads,
        downscale: l.downscale,
        contextDim: c.cross_attention_dim,
      });
    attention.sort((a, b) => a.path.localeCompare(b.path, 'en', { numeric: true }));
    return {
      ...shared('UNet2DConditionModel', c),
      blocks: blocksOf(c.down_block_types, c.mid_block_type, c.up_block_types, c.block_out_channels),
      attention,
      modules: foldModules(unetCondModules(c)),
    };
  }
  const c = parseUNet2DConfig(raw, file);
  const p = unetPlan(c);
  const attention: UNetAttentionInfo[] = [];
  p.down.forEach((b, i) => {
    for (const a of b.attentions)
      attention.push({ path: a.path, kind: 'self', heads: a.heads, downscale: scale('down', i), contextDim: null });
  });
  for (const a of p.mid?.attentions ?? [])
    attention.push({ path: a.path, kind: 'self', heads: a.heads, downscale: scale('mid', 0), contextDim: null });
  p.up.forEach((b, i) => {
    for (const a of b.attentions)
      attention.push({ path: a.path, kind: 'self', heads: a.heads, downscale: scale('up', i), contextDim: null });
  });
  return {
    ...shared('UNet2DModel', c),
    blocks: blocksOf(
      c.down_block_types,
      p.mid ? (c.mid_block_type ?? 'UNetMidBlock2D') : null,
      c.up_block_types,
      c.block_out_channels,
    ),
    attention,
    modules: foldModules(unetModules(c)),
  };
}

/** Renders `unetInfo`'s result as aligned text lines. */
export function formatUNetInfo(i: UNetInfo): string {
  const dtypes = Object.entries(i.dtypes)
    .map(([d, n]) => `${d} (${n} tensors)`)
    .join(', ');
  const lines = [
    i.dir,
    `  ${'class'.padEnd(16)} ${i.className} (diffusers)`,
    `  ${'parameters'.padEnd(16)} ${i.parameters.toLocaleString('en-US')}; ${dtypes}`,
    `  ${'channels'.padEnd(16)} in ${i.inChannels}, out ${i.outChannels}, blocks [${i.blockOutChannels.join(', ')}], ` +
      `${i.layersPerBlock} layer${i.layersPerBlock > 1 ? 's' : ''} per block`,
    `  ${'sample size'.padEnd(16)} ${i.sampleSize === null ? 'not set' : String(i.sampleSize)}`,
    `blocks (${i.blocks.length}):`,
  ];
  const w = Math.max(...i.blocks.map((b) => b.path.length));
  for (const b of i.blocks)
    lines.push(`  ${b.path.padEnd(w)}  ${b.type}, ${b.channels} channels, grid 1/${b.downscale}`);
  lines.push(`attention layers (${i.attention.length}):`);
  const wa = Math.max(0, ...i.attention.map((a) => a.path.length));
  for (const a of i.attention)
    lines.push(
      `  ${a.path.padEnd(wa)}  ${a.kind}, ${a.heads} heads, grid 1/${a.downscale}` +
        `${a.contextDim !== null ? `, states of width ${a.contextDim}` : ''}`,
    );
  lines.push(`targetable modules (${i.modules.reduce((a, m) => a + m.count, 0)}, Conv2d and Linear, indices folded):`);
  const wm = Math.max(0, ...i.modules.map((m) => m.pattern.length));
  for (const m of i.modules)
    lines.push(`  ${m.pattern.padEnd(wm)}  ${m.kind} ${m.shape}${m.count > 1 ? ` x${m.count}` : ''}`);
  return lines.join('\n');
}
