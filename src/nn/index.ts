// nn/: modules (Linear, Embedding, Conv2d) with Hugging Face names and the adapter injection point (module.ts), weights
// as graph tensors
// (weights.ts), attention with masks and GQA (attention.ts), rotary embeddings (rope.ts).
export {
  type LinearModule,
  type EmbeddingModule,
  type Conv2dModule,
  type Conv2dInfo,
  type ModuleHooks,
  type ModuleInfo,
  type ModelContext,
  type ContextOptions,
  createContext,
  linearForward,
  conv2dForward,
  conv2dWeightShape,
} from './module.ts';
export {
  WeightSource,
  type WeightSourceOptions,
  type WeightStore,
  type ComputeDType,
  weightStore,
  closeNames,
  checkStoredShape,
  missingWeightError,
} from './weights.ts';
export {
  MASK_VALUE,
  type AttentionMask,
  type MaskOptions,
  attentionMask,
  attention,
  splitHeads,
  mergeHeads,
  dimOf,
} from './attention.ts';
export { type Rope, type RopeScalingSpec, ropeInvFreq, ropeTables, ropeAt, applyRope } from './rope.ts';
export {
  type QuantMode,
  type QuantizedWeight,
  type Int8Weight,
  type FileSpan,
  type StoredInt8,
  type Q4Weight,
  type Q8Weight,
  type BlockWeight,
  blockBits,
  quantizeQ8,
  blockWeight,
  Q4_BLOCK,
  INT8_LEVELS,
  INT8_ZERO,
  quantizeInt8,
  quantizeQ4,
  quantizeWeight,
  dequantize,
  quantizedBytes,
} from './quantize.ts';
export {
  type Int8Codes,
  type QuantInputs,
  type VocabGrad,
  type QuantKernels,
  type QuantizedTensors,
  int8Bytes,
  kernelsFor,
  OUTLIER_COLUMNS,
  quantizedTensors,
} from './quant-linear.ts';
