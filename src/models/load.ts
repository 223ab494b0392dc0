/**
 * Opening a Hugging Face model folder: config.json (validated by io/config.ts), the safetensors weights (single
 * file or shards), and a check of every tensor the config implies (present, right shape, readable dtype) before
 * any graph is built. The result lists the model's modules and parameters and makes WeightSources and contexts
 * for graphs. Not here: the graphs themselves (the family files, index.ts).
 */
import { join } from '../io/host.ts';
import { LorakitError } from '../errors.ts';
import type { Graph } from '../graph/index.ts';
import {
  type ModelConfig,
  type WeightsReader,
  loadModelConfig,
  openWeights,
  requireFolder,
  resolveModelFolder,
} from '../io/index.ts';
import {
  type ComputeDType,
  type ModelContext,
  type ModuleHooks,
  type ModuleInfo,
  type QuantKernels,
  type QuantizedWeight,
  type WeightStore,
  WeightSource,
  checkStoredShape,
  createContext,
  missingWeightError,
  weightStore,
} from '../nn/index.ts';
import { bertFamily } from './bert.ts';
import type { CacheSpec } from './causal.ts';
import type { Family, FamilyName, ParamSpec } from './family.ts';
import { gpt2Family } from './gpt2.ts';
import { llamaFamily } from './llama.ts';
import type { QuantizedBase } from './quantize.ts';

/** Which family file builds each config model_type. */
const FAMILIES: Record<ModelConfig['model_type'], Family<any>> = {
  gpt2: gpt2Family,
  llama: llamaFamily,
  mistral: llamaFamily,
  qwen2: llamaFamily,
  bert: bertFamily,
};

/** Options of LoadedModel.context / weights. */
export interface ContextOptions {
  /** Adapter hooks called for every Linear/Conv1D/Embedding. */
  hooks?: ModuleHooks;
  /** HF weight names that become graph inputs (full fine-tuning, modules_to_save). */
  trainable?: Iterable<string>;
  /** In-memory weights by HF name (merged weights). */
  overrides?: ReadonlyMap<string, Float32Array | Float64Array>;
  /** Compute dtype; default f32. */
  dtype?: ComputeDType;
  /** Prefixes graph names of the weights (a second copy of the model in one graph). */
  namePrefix?: string;
  /** Quantized frozen Linear weights by HF name (models/quantize.ts): multiplied through integer kernels. */
  quantized?: ReadonlyMap<string, QuantizedWeight>;
  /** The integer kernels their products use (nn/quant-linear.ts QuantKernels; default float inputs, u8 codes). */
  quantKernels?: QuantKernels;
  /** The quantized output head's HF weight name: its input gradient runs over the vocabulary (VocabBackward). */
  vocabHead?: string;
}

/** An opened model folder. */
export interface LoadedModel {
  dir: string;
  config: ModelConfig;
  family: FamilyName;
  /** Every Linear/Conv1D/Embedding with its path and sizes, in forward order. */
  modules(): ModuleInfo[];
  /** Every tensor the model reads (tied ones once), with its shape. */
  parameters(): ParamSpec[];
  /** Number of parameter values the model reads (tied weights counted once). */
  paramCount: number;
  /** Parameter values by stored dtype (F32, BF16, ...). */
  dtypes: Record<string, number>;
  /** Optional parameters (a task head) that the file lacks: train them or give overrides. */
  missing: string[];
  /** KV cache sizes (causal LMs). */
  cache: CacheSpec | null;
  /** Set by quantizeModel: the quantized frozen weights every context of this model uses. */
  quantizedBase?: QuantizedBase;
  /** Set by quantizeModel: the integer kernels the quantized products use on this machine. */
  quantKernels?: QuantKernels;
  /** A WeightSource for `graph`: file-backed initializers, or inputs / overrides as asked. */
  weights(graph: Graph, opts?: ContextOptions): WeightSource;
  /** A ModelContext for `graph`, ready for buildCausalLM / buildSequenceClassifier. */
  context(graph: Graph, opts?: ContextOptions): ModelContext<ModelConfig>;
  /** The stored values of HF weight `name` as float32 (initial values of trainable weights). */
  read(name: string): Promise<Float32Array>;
  /** The dtype HF weight `name` is stored in, as safetensors names it (F32, F16, BF16, F64). */
  storedDtype(name: string): string;
  close(): Promise<void>;
}

/** Finds, for each HF name, the name the file stores it under (family aliases), or undefined. */
function resolver(family: Family<unknown>, reader: WeightsReader): (name: string) => string | undefined {
  const cache = new Map<string, string | undefined>();
  return (name) => {
    if (!cache.has(name))
      cache.set(
        name,
        family.fileNames(name).find((n) => reader.has(n)),
      );
    return cache.get(name);
  };
}

/**
 * Opens a model folder (config.json + model.safetensors or shards), a hub id found in the local Hugging Face cache,
 * or a GGUF file (as its cached float32 folder: io/gguf-model.ts), and checks its weights against the config. `dir`
 * of the result is the folder opened.
 */
export async function loadModel(pathOrHubId: string): Promise<LoadedModel> {
  const dir = await resolveModelFolder(pathOrHubId);
  await requireFolder(
    dir,
    'model folder',
    'a Hugging Face folder with config.json and model.safetensors, or a .gguf file',
  );
  const config = await loadModelConfig(join(dir, 'config.json'));
  const family = FAMILIES[config.model_type] as Family<ModelConfig>;
  const reader = await openWeights(dir);
  try {
    checkLayerCount(config, reader, dir);
    const resolve = resolver(family, reader);
    const store: WeightStore = weightStore(reader, (n) => resolve(n) ?? n);
    const params = family.parameters(config);
    const dtypes: Record<string, number> = {};
    const missing: string[] = [];
    let paramCount = 0;
    for (const p of params) {
      const fileName = resolve(p.name);
      if (fileName === undefined) {
        if (p.optional) {
          missing.push(p.name);
          continue;
        }
        throw missingWeightError(p.name, store);
      }
      const info = reader.info(fileName);
      checkStoredShape(p.name, info, p.shape, store.fileOf(fileName));
      const n = p.shape.reduce((a, b) => a * b, 1);
      paramCount += n;
      dtypes[info.dtype] = (dtypes[info.dtype] ?? 0) + n;
    }
    const modules = family.modules(config);
    const weights = (graph: Graph, opts: ContextOptions = {}) => new WeightSource(graph, store, opts);
    return {
      dir,
      config,
      family: family.name,
      paramCount,
      dtypes,
      missing,
      cache: family.cache ? family.cache(config) : null,
      modules: () => modules.map((m) => ({ ...m })),
      parameters: () => params.map((p) => ({ ...p, shape: [...p.shape] })),
      weights,
      context: (graph, opts = {}) =>
        createContext({
          graph,
          weights: weights(graph, opts),
          modules,
          config,
          hooks: opts.hooks,
          quantized: opts.quantized,
          quantKernels: opts.quantKernels,
          vocabHead: opts.vocabHead,
        }),
      read: async (name) => {
        const fileName = resolve(name);
        if (fileName === undefined) throw missingWeightError(name, store);
        return reader.readAs(fileName, 'f32');
      },
      storedDtype: (name) => {
        const fileName = resolve(name);
        if (fileName === undefined) throw missingWeightError(name, store);
        return reader.info(fileName).dtype;
      },
      close: () => reader.close(),
    };
  } catch (e) {
    await reader.close();
    throw e;
  }
}

/**
 * Refuses a config that claims more transformer blocks than the weights hold, before the parameter list (one entry
 * per tensor per block) is built: `num_hidden_layers: 1e9` would otherwise exhaust memory instead of failing.
 */
function checkLayerCount(config: ModelConfig, reader: WeightsReader, dir: string): void {
  const [key, layers] =
    config.model_type === 'gpt2' ? ['n_layer', config.n_layer] : ['num_hidden_layers', config.num_hidden_layers];
  let stored = 0; // blocks present in the weights: one more than the highest block index in a tensor name
  for (const n of reader.names()) {
    const m = /(?:^|\.)(?:layers|h|layer|blocks)\.(\d+)\./.exec(n);
    if (m) stored = Math.max(stored, Number(m[1]) + 1);
  }
  if (layers > stored)
    throw new LorakitError(
      'LK_CONFIG_INVALID',
      `${join(dir, 'config.json')}: ${key} is ${layers}, but the weights in ${dir} hold ${stored} block` +
        `${stored === 1 ? '' : 's'}${stored ? ` (0..${stored - 1})` : ''}; set ${key} to ${stored} or use the ` +
        `weights ` +
        `this config belongs to`,
      { file: join(dir, 'config.json'), field: key },
    );
}

/** The family that builds a config's model_type. */
export function familyOf(config: ModelConfig): Family<ModelConfig> {
  const f = FAMILIES[config.model_type];
  if (!f)
    throw new LorakitError(
      'LK_UNSUPPORTED',
      `model_type "${(config as { model_type: string }).model_type}" has no model family; supported: ` +
        `${Object.keys(FAMILIES).join(', ')}`,
    );
  return f;
}
