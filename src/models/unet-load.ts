/**
 * Opening a diffusers UNet2DModel folder (config.json + diffusion_pytorch_model.safetensors, or its shards): the
 * config parsed (unet-config.ts), every tensor it implies checked (present, right shape, readable dtype) before any
 * graph is built; contexts for graphs, and the folder as PeftModel's base (adapter targets = its Conv2d and Linear
 * modules, under diffusers' module paths, so PEFT adapters made on the diffusers model load as saved).
 * Not here: the graph (unet.ts).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { LorakitError } from '../errors.ts';
import type { Graph } from '../graph/index.ts';
import { openWeights, requireFolder } from '../io/index.ts';
import {
  type ModelContext,
  type ModuleInfo,
  WeightSource,
  checkStoredShape,
  createContext,
  missingWeightError,
  weightStore,
} from '../nn/index.ts';
import type { AdaptableBase } from '../peft/index.ts';
import type { ParamSpec } from './family.ts';
import type { ContextOptions } from './load.ts';
import { type UNet2DConfig, parseUNet2DConfig, unetModules, unetParameters } from './unet-config.ts';

/** The weights file stem diffusers writes. */
export const DIFFUSERS_WEIGHTS = 'diffusion_pytorch_model';

/** An opened UNet2DModel folder. */
export interface LoadedUNet {
  dir: string;
  config: UNet2DConfig;
  /** Every Conv2d and Linear, in forward order. */
  modules(): ModuleInfo[];
  /** Every tensor the network reads, with its shape. */
  parameters(): ParamSpec[];
  paramCount: number;
  /** A ModelContext for `graph` (hooks, trainable weights, overrides as for causal LMs). */
  context(graph: Graph, opts?: ContextOptions): ModelContext<UNet2DConfig>;
  /** The folder as an adapter base. */
  base(): AdaptableBase;
  /** The stored values of weight `name` as float32. */
  read(name: string): Promise<Float32Array>;
  close(): Promise<void>;
}

/** Parses a UNet2DModel config.json; refuses other diffusers classes by name. */
export async function loadUNetConfig(path: string): Promise<UNet2DConfig> {
  const json = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
  const cls = json._class_name;
  if (cls !== undefined && cls !== 'UNet2DModel') {
    throw new LorakitError(
      'LK_UNSUPPORTED',
      `${path}: _class_name "${String(cls)}" is not supported; lorakit builds diffusers' UNet2DModel`,
      { file: path, field: '_class_name' },
    );
  }
  return parseUNet2DConfig(json, path);
}

/** Opens a diffusers UNet2DModel folder and checks its weights against its config. */
export async function loadUNet(dir: string): Promise<LoadedUNet> {
  await requireFolder(
    dir,
    'U-Net folder',
    'a diffusers folder with config.json and diffusion_pytorch_model.safetensors',
  );
  const config = await loadUNetConfig(join(dir, 'config.json'));
  const reader = await openWeights(dir, { stem: DIFFUSERS_WEIGHTS });
  try {
    const store = weightStore(reader);
    const params = unetParameters(config);
    let paramCount = 0;
    for (const p of params) {
      if (!reader.has(p.name)) throw missingWeightError(p.name, store);
      checkStoredShape(p.name, reader.info(p.name), p.shape, store.fileOf(p.name));
      paramCount += p.shape.reduce((a, b) => a * b, 1);
    }
    const modules = unetModules(config);
    const read = async (name: string) => {
      if (!reader.has(name)) throw missingWeightError(name, store);
      return reader.readAs(name, 'f32');
    };
    return {
      dir,
      config,
      paramCount,
      modules: () => modules.map((m) => ({ ...m })),
      parameters: () => params.map((p) => ({ ...p, shape: [...p.shape] })),
      context: (graph, opts = {}) =>
        createContext({ graph, weights: new WeightSource(graph, store, opts), modules, config, hooks: opts.hooks }),
      base: () => ({
        modules,
        parameters: params.map((p) => p.name),
        readWeight: read,
        weightDtype: (name) => reader.info(name).dtype,
        outputHead: null,
      }),
      read,
      close: () => reader.close(),
    };
  } catch (e) {
    await reader.close();
    throw e;
  }
}
