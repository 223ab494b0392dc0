/**
 * serve/: many adapters over one base model in one batch. `createEngine` sizes the KV pool and the adapter slots,
 * compiles the batched graph once and returns the Engine (continuous batching, S-LoRA admission, per-row LoRA
 * gathered from slots); the AdapterPool loads adapters by name, lazily, into an LRU bounded by bytes. The HTTP server
 * (server/) and `lorakit serve` are shells over this.
 */
import { join } from '../io/host.ts';
import { LorakitError } from '../errors.ts';
import { type GenerationConfig, type HfTokenizer, parseGenerationConfig, readJsonFile } from '../io/index.ts';
import type { LoadedModel } from '../models/index.ts';
import { adaptable } from '../peft/index.ts';
import { type CompileOptions, compile } from '../runtime/index.ts';
import { AdapterPool } from './adapter-pool.ts';
import { type LoraTarget, buildBatchGraph } from './batch-graph.ts';
import { Engine, type EngineLimits } from './engine.ts';
import { KvPool } from './kv-pool.ts';
import { LoraSlots } from './slots.ts';

export {
  Engine,
  type EngineRequest,
  type Completion,
  type Choice,
  type EngineLimits,
  type Submission,
} from './engine.ts';
export { AdapterPool, type ResidentAdapter, type AdapterPoolOptions } from './adapter-pool.ts';
export { toLoraForm, type LoraForm, type ServedLayer, type LoraFormOptions } from './lora-form.ts';
export { buildBatchGraph, names as batchGraphNames, type BatchGraphSpec, type LoraTarget } from './batch-graph.ts';
export { KvPool } from './kv-pool.ts';
export { LoraSlots } from './slots.ts';
export { Scheduler, worstCaseTokens, demandsOf, type CacheDemand, type Schedulable } from './scheduler.ts';
export type { FinishReason, SequenceEvent, TokenLogprob, TopLogprob } from './sequence.ts';
export { EngineMetrics, Histogram, prometheusText, type MetricsSnapshot } from './metrics.ts';

/** Options of `createEngine`; every bound has a default sized for a small CPU server. */
export interface EngineOptions extends Partial<EngineLimits> {
  model: LoadedModel;
  tokenizer: HfTokenizer;
  /** Folder of PEFT adapter folders, served by their relative paths; null or absent: the base model only. */
  adapterDir?: string | null;
  /** Bytes of adapters (in LoRA form) kept in memory (default 256 MiB). */
  adapterMemory?: number;
  /** Adapter slots of the batch: distinct adapters running at once (vLLM's max_loras; default 16). */
  maxLoras?: number;
  /** Largest adapter rank (vLLM's max_lora_rank; default 16); ranks below it are zero-padded. */
  maxLoraRank?: number;
  /** Module names adapters may target (`q_proj`, ...); default every Linear but the output head. */
  targetModules?: readonly string[] | null;
  /** Bytes of the KV cache (default 64 MiB); the pool holds this many bytes / bytes per token tokens. */
  kvCacheMemory?: number;
  /** Execution provider and threads for the batched graph. */
  compile?: CompileOptions;
}

/** Builds an engine over a loaded causal LM: pools, slots, the compiled graph. */
export async function createEngine(o: EngineOptions): Promise<Engine> {
  const { model, tokenizer } = o;
  const c = model.config;
  if (!model.cache || c.model_type === 'bert') {
    throw new LorakitError('LK_UNSUPPORTED', `serve: ${model.dir} is a ${c.model_type} model, not a causal LM`);
  }
  const positions = c.model_type === 'gpt2' ? c.n_positions : c.max_position_embeddings;
  const maxModelLen = Math.min(o.maxModelLen ?? positions, positions);
  const targets = loraTargets(model, o.targetModules ?? null);
  const maxLoras = positive('maxLoras', o.maxLoras ?? 16);
  const rank = positive('maxLoraRank', o.maxLoraRank ?? 16);
  const bytesPerToken = model.cache.layers * 2 * model.cache.kvHeads * model.cache.headDim * 4;
  const tokens = Math.floor((o.kvCacheMemory ?? 64 * 2 ** 20) / bytesPerToken);
  if (tokens < maxModelLen + 1) {
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `kvCacheMemory holds ${tokens} tokens (${bytesPerToken} bytes each), fewer than one completion of the model ` +
        `length ${maxModelLen}; give at least ${(maxModelLen + 1) * bytesPerToken} bytes ` +
        `(${Math.ceil(((maxModelLen + 1) * bytesPerToken) / 2 ** 20)} MiB), or a smaller maxModelLen`,
      { option: 'kvCacheMemory' },
    );
  }
  const kv = new KvPool(model.cache, tokens + 1);
  const slots = new LoraSlots(targets, maxLoras + 1, rank);
  const base = adaptable(model);
  const adapters = new AdapterPool({
    dir: o.adapterDir ?? null,
    memoryBudget: o.adapterMemory ?? 256 * 2 ** 20,
    base,
    maxRank: rank,
    servedLayers: new Set(targets.map((t) => t.path)),
  });
  const graph = buildBatchGraph(model, { cache: model.cache, targets, slots: maxLoras + 1, rank, tokens: tokens + 1 });
  const session = await compile(graph, o.compile);
  const limits: EngineLimits = {
    maxRows: positive('maxRows', o.maxRows ?? 32),
    maxPrefillTokens: positive('maxPrefillTokens', o.maxPrefillTokens ?? Math.max(2048, maxModelLen)),
    maxModelLen,
    maxTokens: positive('maxTokens', o.maxTokens ?? maxModelLen),
    maxConcurrent: positive('maxConcurrent', o.maxConcurrent ?? 256),
    maxN: positive('maxN', o.maxN ?? 8),
  };
  return new Engine({ model, tokenizer, session, kv, slots, adapters, limits, eos: await eosOf(model) });
}

/** The Linear layers that get adapter slots: every Linear/Conv1D but the output head, or those named. */
export function loraTargets(model: LoadedModel, names: readonly string[] | null): LoraTarget[] {
  const linear = model.modules().filter((m) => (m.kind === 'linear' || m.kind === 'conv1d') && m.path !== 'lm_head');
  const picked =
    names === null ? linear : linear.filter((m) => names.some((n) => m.path === n || m.path.endsWith(`.${n}`)));
  if (picked.length === 0) {
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `targetModules ${JSON.stringify(names)} names no Linear layer of the model; its Linear layers end in ` +
        `${[...new Set(linear.map((m) => m.path.split('.').pop()))].join(', ')}`,
      { option: 'targetModules' },
    );
  }
  return picked.map((m) => ({
    path: m.path,
    inFeatures: (m as { inFeatures: number }).inFeatures,
    outFeatures: (m as { outFeatures: number }).outFeatures,
  }));
}

/** The eos ids generate() uses: generation_config.json's, else config.json's. */
async function eosOf(model: LoadedModel): Promise<number | number[] | null> {
  const path = join(model.dir, 'generation_config.json');
  const gen = await readJsonFile(path).then(
    (j) => parseGenerationConfig(j, path),
    (e): GenerationConfig => {
      if (e instanceof LorakitError && e.code === 'LK_FILE_NOT_FOUND') return {};
      throw e;
    },
  );
  const c = model.config;
  return gen.eos_token_id ?? (c.model_type === 'bert' ? null : c.eos_token_id) ?? null;
}

const positive = (option: string, v: number) => {
  if (!Number.isInteger(v) || v < 1)
    throw new LorakitError('LK_INVALID_ARGUMENT', `${option} must be a positive integer, got ${v}`, { option });
  return v;
};
export {
  COMPOSE_METHODS,
  cmloraWeights,
  composedPredictor,
  unetPass,
  sampleComposed,
  type ComposedSampleOptions,
  type ComposeMethod,
  type ComposeOptions,
  type LoraPass,
  type PassResult,
  type UNetPassOptions,
} from './diffusion-compose.ts';
export {
  cmloraRefreshSteps,
  cmloraSchedule,
  type CmloraPlan,
  type CmloraSplit,
  type CmloraStep,
} from './cmlora-schedule.ts';
export {
  cmloraFrequencyOrder,
  cmloraFrequencyScore,
  type CmloraOrder,
  HIGH_FROM_FRACTION,
  radialAmplitudeProfile,
} from './cmlora-frequency.ts';
