// A tiny sequential conv net for tests: a torch.nn.Sequential of Conv2d and ReLU layers described by a config
// (test/fixtures/conv/config.json, written by interop/make_conv_fixtures.py), built with createContext so every
// Conv2d goes through ctx.conv2d and therefore through hooks.conv2d. Weights are read by torch's Sequential names
// (`0.weight`, `0.bias`, ...); `convNetBase` is the net as PeftModel's base. Not a model family: nothing in src/ loads
// conv nets yet.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Graph, Tensor } from '../../src/graph/index.ts';
import { SafetensorsFile } from '../../src/io/index.ts';
import type { AdaptableBase } from '../../src/peft/index.ts';
import {
  type Conv2dInfo,
  type ComputeDType,
  type ModelContext,
  type ModuleHooks,
  WeightSource,
  createContext,
  weightStore,
} from '../../src/nn/index.ts';

/** One layer of the net, as config.json spells it (torch.nn.Conv2d's argument names). */
export type ConvNetLayer =
  | {
      type: 'conv2d';
      in_channels: number;
      out_channels: number;
      kernel_size: [number, number];
      stride: [number, number];
      padding: [number, number];
      dilation: [number, number];
      groups: number;
      bias: boolean;
    }
  | { type: 'relu' };

export interface ConvNetConfig {
  layers: ConvNetLayer[];
}

/** The Conv2d modules of the net, named by their index in the Sequential. */
export function convNetModules(config: ConvNetConfig): Conv2dInfo[] {
  return config.layers.flatMap((l, i): Conv2dInfo[] =>
    l.type !== 'conv2d'
      ? []
      : [
          {
            kind: 'conv2d',
            path: String(i),
            inChannels: l.in_channels,
            outChannels: l.out_channels,
            kernel: l.kernel_size,
            stride: l.stride,
            padding: l.padding,
            dilation: l.dilation,
            groups: l.groups,
            weightName: `${i}.weight`,
            biasName: l.bias ? `${i}.bias` : null,
          },
        ],
  );
}

/** The net's forward, x [N, C, H, W] → [N, C', H', W'], each Conv2d through ctx.conv2d. */
export function convNetForward(ctx: ModelContext<ConvNetConfig>, x: Tensor): Tensor {
  let h = x;
  ctx.config.layers.forEach((l, i) => {
    h = l.type === 'relu' ? h.relu() : ctx.conv2d(String(i), h);
  });
  return h;
}

/** The fixture net of `dir`: its config and its weights file (close it when done). */
export async function openConvNet(dir: string): Promise<{ config: ConvNetConfig; file: SafetensorsFile }> {
  const config = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as ConvNetConfig;
  return { config, file: await SafetensorsFile.open(join(dir, 'model.safetensors')) };
}

/** A context for the net on graph `g`: weights from `file` unless in `overrides` (merged weights), optional hooks. */
export function convNetContext(
  g: Graph,
  config: ConvNetConfig,
  file: SafetensorsFile | null,
  opts: {
    hooks?: ModuleHooks;
    trainable?: string[];
    dtype?: ComputeDType;
    overrides?: ReadonlyMap<string, Float32Array>;
  } = {},
): ModelContext<ConvNetConfig> {
  const weights = new WeightSource(g, file ? weightStore(file) : null, {
    trainable: opts.trainable,
    dtype: opts.dtype,
    overrides: opts.overrides,
  });
  return createContext({ graph: g, weights, modules: convNetModules(config), config, hooks: opts.hooks });
}

/** The net as the base of a PeftModel (no output head); `file` must stay open while the PeftModel reads weights. */
export function convNetBase(config: ConvNetConfig, file: SafetensorsFile): AdaptableBase {
  return { modules: convNetModules(config), outputHead: null, readWeight: (n) => file.readAs(n, 'f32') };
}
