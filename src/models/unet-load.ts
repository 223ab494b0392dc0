/**
 * Opening a diffusers UNet2DModel folder (config.json + diffusion_pytorch_model.safetensors, or its shards): the
 * config parsed (unet-config.ts), every tensor it implies checked (present, right shape, readable dtype) before any
 * graph is built; contexts for graphs, and the folder as PeftModel's base (adapter targets = its Conv2d and Linear
 * modules, under diffusers' module paths, so PEFT adapters made on the diffusers model load as saved).
 * Also a U-Net held in memory, torch's default initialisation of one, and writing a folder.
 * Not here: the graph (unet.ts).
 */
import { join, readFile } from '../io/host.ts';
import { LorakitError } from '../errors.ts';
import type { Graph } from '../graph/index.ts';
import { ensureFolder, openWeights, requireFolder, writeFileAtomic, writeSafetensors } from '../io/index.ts';
import type { Rng } from '../linalg/index.ts';
import {
  type ModelContext,
  type ModuleInfo,
  WeightSource,
  checkStoredShape,
  conv2dWeightShape,
  createContext,
  missingWeightError,
  weightStore,
} from '../nn/index.ts';
import type { AdaptableBase } from '../peft/index.ts';
import type { ParamSpec } from './family.ts';
import type { ContextOptions } from './load.ts';
import { type UNet2DConfig, parseUNet2DConfig, unetModules, unetParameters } from './unet-config.ts';
import {
  type UNet2DConditionConfig,
  parseUNet2DConditionConfig,
  unetCondModules,
  unetCondParameters,
} from './unet-cond.ts';

/** The weights file stem diffusers writes. */
export const DIFFUSERS_WEIGHTS = 'diffusion_pytorch_model';

/** An opened diffusers U-Net folder (UNet2DModel, or UNet2DConditionModel with C = UNet2DConditionConfig). */
export interface LoadedUNet<C = UNet2DConfig> {
  dir: string;
  config: C;
  /** Every Conv2d and Linear, in forward order. */
  modules(): ModuleInfo[];
  /** Every tensor the network reads, with its shape. */
  parameters(): ParamSpec[];
  paramCount: number;
  /** A ModelContext for `graph` (hooks, trainable weights, overrides as for causal LMs). */
  context(graph: Graph, opts?: ContextOptions): ModelContext<C>;
  /** The folder as an adapter base. */
  base(): AdaptableBase;
  /** The stored values of weight `name` as float32. */
  read(name: string): Promise<Float32Array>;
  close(): Promise<void>;
}

/** A UNet2DConditionModel to build graphs of: a loaded folder or `memoryUNetCondition`. */
export interface UNetConditionSource {
  config: UNet2DConditionConfig;
  context(graph: Graph, opts?: ContextOptions): ModelContext<UNet2DConditionConfig>;
  parameters(): { name: string; shape: number[] }[];
  read(name: string): Promise<Float32Array>;
}

/** How one diffusers class is read: its config parser, module list and parameters. */
interface UNetClass<C> {
  name: string;
  parse(json: unknown, source: string): C;
  modules(c: C): ModuleInfo[];
  parameters(c: C): ParamSpec[];
}

const UNET_2D: UNetClass<UNet2DConfig> = {
  name: 'UNet2DModel',
  parse: parseUNet2DConfig,
  modules: unetModules,
  parameters: unetParameters,
};
const UNET_2D_CONDITION: UNetClass<UNet2DConditionConfig> = {
  name: 'UNet2DConditionModel',
  parse: parseUNet2DConditionConfig,
  modules: unetCondModules,
  parameters: unetCondParameters,
};

/** Parses a config.json of class `cls`; refuses other diffusers classes by name. */
async function readConfig<C>(path: string, cls: UNetClass<C>): Promise<C> {
  const json = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
  const name = json._class_name;
  if (name !== undefined && name !== cls.name) {
    throw new LorakitError(
      'LK_UNSUPPORTED',
      `${path}: _class_name "${String(name)}" where a ${cls.name} was asked for; lorakit builds UNet2DModel ` +
        '(loadUNet) and UNet2DConditionModel (loadUNetCondition)',
      { file: path, field: '_class_name' },
    );
  }
  return cls.parse(json, path);
}

/** Parses a UNet2DModel config.json. */
export const loadUNetConfig = (path: string) => readConfig(path, UNET_2D);

/** Opens a diffusers UNet2DModel folder and checks its weights against its config. */
export const loadUNet = (dir: string): Promise<LoadedUNet> => openUNet(dir, UNET_2D);

/** Opens a diffusers UNet2DConditionModel folder and checks its weights against its config. */
export const loadUNetCondition = (dir: string): Promise<LoadedUNet<UNet2DConditionConfig>> =>
  openUNet(dir, UNET_2D_CONDITION);

async function openUNet<C>(dir: string, cls: UNetClass<C>): Promise<LoadedUNet<C>> {
  await requireFolder(
    dir,
    'U-Net folder',
    'a diffusers folder with config.json and diffusion_pytorch_model.safetensors',
  );
  const config = await readConfig(join(dir, 'config.json'), cls);
  const reader = await openWeights(dir, { stem: DIFFUSERS_WEIGHTS });
  try {
    const store = weightStore(reader);
    const params = cls.parameters(config);
    let paramCount = 0;
    for (const p of params) {
      if (!reader.has(p.name)) throw missingWeightError(p.name, store);
      checkStoredShape(p.name, reader.info(p.name), p.shape, store.fileOf(p.name));
      paramCount += p.shape.reduce((a, b) => a * b, 1);
    }
    const modules = cls.modules(config);
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

/** A U-Net whose weights are in memory (a fresh initialisation, trained weights): the parts of LoadedUNet graphs need. */
export const memoryUNet = (config: UNet2DConfig, weights: ReadonlyMap<string, Float32Array>) =>
  memoryOf(UNET_2D, config, weights);

/** A UNet2DConditionModel whose weights are in memory (as memoryUNet). */
export const memoryUNetCondition = (config: UNet2DConditionConfig, weights: ReadonlyMap<string, Float32Array>) =>
  memoryOf(UNET_2D_CONDITION, config, weights);

function memoryOf<C>(cls: UNetClass<C>, config: C, weights: ReadonlyMap<string, Float32Array>) {
  const modules = cls.modules(config);
  const params = cls.parameters(config);
  for (const p of params) {
    const v = weights.get(p.name);
    const n = p.shape.reduce((a, b) => a * b, 1);
    if (!v || v.length !== n)
      throw new LorakitError(
        'LK_SHAPE_MISMATCH',
        `memory ${cls.name}: weight ${p.name} needs ${n} values, got ${v?.length ?? 0}`,
      );
  }
  return {
    config,
    modules: () => modules.map((m) => ({ ...m })),
    parameters: () => params.map((p) => ({ ...p, shape: [...p.shape] })),
    context: (graph: Graph, opts: ContextOptions = {}): ModelContext<C> => {
      const overrides = new Map<string, Float32Array | Float64Array>(weights);
      for (const [k, v] of opts.overrides ?? []) overrides.set(k, v);
      const source = new WeightSource(graph, null, { ...opts, overrides });
      return createContext({ graph, weights: source, modules, config, hooks: opts.hooks });
    },
    base: (): AdaptableBase => ({
      modules,
      parameters: params.map((p) => p.name),
      readWeight: async (name) => Float32Array.from(weights.get(name)!),
      outputHead: null,
    }),
    read: async (name: string) => Float32Array.from(weights.get(name)!),
  };
}

/**
 * torch's default initialisation of the U-Net's modules, as a freshly constructed diffusers UNet2DModel has it:
 * Conv2d and Linear weights and biases U(±1/√fan_in) (kaiming_uniform_ with a = √5), GroupNorm weight 1, bias 0.
 */
export const initUNetWeights = (config: UNet2DConfig, rng: Rng) => initOf(UNET_2D, config, rng);

/** torch's default initialisation of a UNet2DConditionModel (as initUNetWeights; LayerNorm weight 1, bias 0). */
export const initUNetConditionWeights = (config: UNet2DConditionConfig, rng: Rng) =>
  initOf(UNET_2D_CONDITION, config, rng);

function initOf<C>(cls: UNetClass<C>, config: C, rng: Rng): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const m of cls.modules(config)) {
    if (m.kind === 'embedding') continue;
    const [fanIn, outC, shape] =
      m.kind === 'conv2d'
        ? [m.inChannels * m.kernel[0] * m.kernel[1], m.outChannels, conv2dWeightShape(m)]
        : [m.inFeatures, m.outFeatures, [m.outFeatures, m.inFeatures]];
    const b = 1 / Math.sqrt(fanIn);
    out.set(
      m.weightName,
      rng.uniformArray(
        shape.reduce((x, y) => x * y, 1),
        -b,
        b,
      ),
    );
    if (m.biasName) out.set(m.biasName, rng.uniformArray(outC, -b, b));
  }
  for (const p of cls.parameters(config))
    if (!out.has(p.name)) out.set(p.name, new Float32Array(p.shape[0]).fill(p.name.endsWith('.weight') ? 1 : 0));
  return out;
}

/** Writes a diffusers folder: config.json (with _class_name) and diffusion_pytorch_model.safetensors. */
export const saveUNet = (dir: string, config: UNet2DConfig, weights: ReadonlyMap<string, Float32Array>) =>
  saveOf(UNET_2D, dir, config, weights);

/** Writes a UNet2DConditionModel folder (as saveUNet). */
export const saveUNetCondition = (
  dir: string,
  config: UNet2DConditionConfig,
  weights: ReadonlyMap<string, Float32Array>,
) => saveOf(UNET_2D_CONDITION, dir, config, weights);

async function saveOf<C>(cls: UNetClass<C>, dir: string, config: C, weights: ReadonlyMap<string, Float32Array>) {
  await ensureFolder(dir, 'U-Net folder');
  const json = { _class_name: cls.name, ...config };
  await writeFileAtomic(join(dir, 'config.json'), `${JSON.stringify(json, null, 2)}\n`);
  const tensors = Object.fromEntries(
    cls.parameters(config).map((p) => [p.name, { dtype: 'F32' as const, shape: p.shape, data: weights.get(p.name)! }]),
  );
  await writeSafetensors(join(dir, `${DIFFUSERS_WEIGHTS}.safetensors`), tensors, { format: 'pt' });
}
