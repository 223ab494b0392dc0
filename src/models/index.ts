// models/: Hugging Face model families built as graphs (gpt2.ts, llama.ts, bert.ts), the loader (load.ts) and the
// causal-LM cache/mask contract (causal.ts). Generation loops and sampling live in generate.ts / sampling.ts.
import { LorakitError } from '../errors.ts';
import type { Graph, Tensor } from '../graph/index.ts';
import type { BertConfig, Gpt2Config, LlamaLikeConfig, ModelConfig } from '../io/index.ts';
import { type ModelContext, WeightSource, createContext } from '../nn/index.ts';
import { type BertInputs, bertSequenceClassifier } from './bert.ts';
import type { CausalLMInputs, CausalLMOutputs } from './causal.ts';
import { gpt2CausalLM } from './gpt2.ts';
import { llamaCausalLM } from './llama.ts';
import { type ContextOptions, familyOf } from './load.ts';

export { loadModel, familyOf, type LoadedModel, type ContextOptions } from './load.ts';
export {
  type QuantizedBase,
  type QuantizeOptions,
  type QuantizeScope,
  cachedQuantizeBase,
  quantizable,
  quantizeBase,
  quantizeModel,
  quantKernels,
  quantizedModules,
  refuseTrainedHead,
} from './quantize.ts';
export type { Family, FamilyName, ParamSpec } from './family.ts';
export {
  type KV,
  type CausalLMInputs,
  type CausalLMOutputs,
  type FrozenHead,
  type CacheSpec,
  type CausalGraphInputs,
  causalGraphInputs,
  outputCausalLM,
  leftPaddedPositions,
  causalSetup,
} from './causal.ts';
export { gpt2CausalLM, gpt2Block, gpt2Attention, gpt2Mlp, gpt2Family } from './gpt2.ts';
export {
  llamaCausalLM,
  llamaDecoderLayer,
  llamaAttention,
  llamaMlp,
  llamaRope,
  llamaFamily,
  type LayerShared,
} from './llama.ts';
export { bertSequenceClassifier, bertEncoder, bertEmbeddings, bertLayer, bertFamily, type BertInputs } from './bert.ts';

/** The causal LM of `ctx.config` (GPT-2 or the Llama family): logits [B, T, V], hidden [B, T, D], present per layer. */
export function buildCausalLM(ctx: ModelContext<ModelConfig>, inputs: CausalLMInputs): CausalLMOutputs {
  const c = ctx.config;
  if (c.model_type === 'gpt2') return gpt2CausalLM(ctx as ModelContext<Gpt2Config>, inputs);
  if (c.model_type === 'llama' || c.model_type === 'mistral' || c.model_type === 'qwen2')
    return llamaCausalLM(ctx as ModelContext<LlamaLikeConfig>, inputs);
  throw new LorakitError(
    'LK_UNSUPPORTED',
    `buildCausalLM: model_type "${c.model_type}" is not a causal LM; causal LMs: gpt2, llama, mistral, qwen2`,
  );
}

/** A sequence classifier (BERT): logits [B, num_labels] and the last hidden states [B, T, D]. */
export function buildSequenceClassifier(
  ctx: ModelContext<ModelConfig>,
  inputs: BertInputs,
): { logits: Tensor; pooled: Tensor; lastHidden: Tensor } {
  const c = ctx.config;
  if (c.model_type === 'bert') return bertSequenceClassifier(ctx as ModelContext<BertConfig>, inputs);
  throw new LorakitError(
    'LK_UNSUPPORTED',
    `buildSequenceClassifier: model_type "${c.model_type}" has no sequence-classification head in lorakit; ` +
      `supported: bert`,
  );
}

/**
 * A context over in-memory weights only (no folder): random or merged weights given as `overrides`, the rest
 * trainable. Used by tests (float64 gradient checks) and by tools that build a model from scratch.
 */
export function memoryContext(config: ModelConfig, graph: Graph, opts: ContextOptions = {}): ModelContext<ModelConfig> {
  const modules = familyOf(config).modules(config);
  const weights = new WeightSource(graph, null, opts);
  return createContext({
    graph,
    weights,
    modules,
    config,
    hooks: opts.hooks,
    quantized: opts.quantized,
    quantKernels: opts.quantKernels,
    vocabHead: opts.vocabHead,
  });
}

// Generation (prefill + KV-cache decode, batched, streaming) and the host-side logits processors.
export {
  generate,
  type GenerateOptions,
  type GenerateResult,
  type GeneratedRow,
  type GenerationAdapter,
} from './generate.ts';
export * as sampling from './sampling.ts';

// diffusers' UNet2DModel (config, graph, folders).
export { unet2d, groupNorm, timestepEmbedding, upsampleNearest2x } from './unet.ts';
export {
  type UNet2DConfig,
  type UNetPlan,
  parseUNet2DConfig,
  unetPlan,
  unetModules,
  unetParameters,
} from './unet-config.ts';
export {
  loadUNet,
  loadUNetConfig,
  loadUNetCondition,
  type LoadedUNet,
  DIFFUSERS_WEIGHTS,
  memoryUNet,
  initUNetWeights,
  saveUNet,
  memoryUNetCondition,
  initUNetConditionWeights,
  saveUNetCondition,
  type UNetConditionSource,
} from './unet-load.ts';
export {
  unet2dCondition,
  unet2dConditionParts,
  unetCondPlan,
  unetCondModules,
  unetCondParameters,
  parseUNet2DConditionConfig,
  type UNet2DConditionConfig,
} from './unet-cond.ts';
export {
  type CrossAttentionLayer,
  type CrossAttentionProbe,
  crossAttentionLayers,
  sameCrossAttentionLayer,
} from './unet-cond.ts';
export {
  type CrossAttentionMap,
  type LayerSelection,
  averageMaps,
  selectLayers,
  unet2dConditionWithMaps,
} from './unet-attention-maps.ts';
export {
  DEFAULT_NOISE_SCHEDULE,
  addNoise,
  ddimStep,
  ddpmStep,
  inferenceTimesteps,
  noiseSchedule,
  type NoiseSchedule,
  type NoiseScheduleConfig,
  type StepResult,
} from './noise-schedule.ts';
export {
  guide,
  sampleDiffusion,
  type LatentHook,
  type PredictNoise,
  type SampleOptions,
  type SamplerName,
} from './diffusion-sampler.ts';
