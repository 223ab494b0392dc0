// peft/: the adapter-method interface, registry and composition, PeftModel (inject, activate, merge), PEFT folders.
export type {
  AdapterMethod,
  MethodVariant,
  RegistryEntry,
  LayerInfo,
  LayerKind,
  ConvGeometry,
  ParamSpec,
  TensorRole,
  InitContext,
  InitResult,
  ForwardContext,
  LayerValues,
  FileLayout,
  FileDType,
  FileData,
  StepInputSpec,
  LayerStepView,
  LayerUpdateRule,
  LossTerm,
  LossTermContext,
} from './method.ts';
export { REGISTRY } from './methods/index.ts';
export {
  methods,
  variantsOf,
  methodFor,
  resolveConfig,
  configSchema,
  savedType,
  canMerge,
  mergedWeight,
  type Resolved,
} from './registry.ts';
export { lora, loraFields, type LoraConfig, type LoraSettings } from './methods/lora.ts';
export { dora } from './methods/dora.ts';
export { loraGa, DEFAULT_LORA_GA_BATCHES, type LoraGaConfig } from './methods/lora_ga.ts';
export { dylora, type DyLoraConfig } from './methods/dylora.ts';
export { slora } from './methods/slora.ts';
export { nlora, type NLoraConfig } from './methods/nlora.ts';
export { inttune, type IntTuneConfig } from './methods/inttune.ts';
export { bdlora, blockDiagonal, type BdLoraConfig } from './methods/bdlora.ts';
export { ffaLora, ffaRng, type FfaLoraConfig } from './methods/ffa_lora.ts';
export {
  matryoshka,
  matryoshkaWeights,
  trainRanks,
  type MatryoshkaConfig,
} from './methods/matryoshka.ts';
export {
  loraprune,
  loraPruneOptions,
  pruneRole,
  prunedFraction,
  pruneGroups,
  stepMasks,
  MASK_INPUTS,
  type LoraPruneConfig,
  type LoraPruneOptions,
  type PruneRole,
} from './methods/loraprune.ts';
export { maskTarget, maskedKl, type MaskTargetConfig } from './methods/mask_target.ts';
export { vera, veraFields, type VeraConfig } from './methods/vera.ts';
export { tiedLora, tiedLoraFields, type TiedLoraConfig } from './methods/tied_lora.ts';
export { vblora, vbloraFields, vbloraFactors, type VbloraConfig } from './methods/vblora.ts';
export { unilora, uniloraFields, uniloraFactors, generateIndex, type UniloraConfig } from './methods/unilora.ts';
export { randlora, randloraFields, type RandloraConfig } from './methods/randlora.ts';
export { loraPro, loraProOptions, type LoraProConfig, type LoraProOptions } from './methods/lora_pro.ts';
export { paca, pacaFields, type PacaConfig, type PacaSettings } from './methods/paca.ts';
export { flylora, flyloraFields, flyloraScaling, nonZerosPerRow, type FlyLoraConfig } from './methods/flylora.ts';
export {
  PeftModel,
  paramKey,
  ruleStateKey,
  sharedKey,
  stepKey,
  type Adapter,
  type AdapterLayer,
  type AdaptableBase,
  type AddAdapterOptions,
} from './model.ts';
export {
  AdapterBinding,
  type BindOptions,
  type TrainableHandle,
  type UpdateRuleHandle,
  type LossTermHandle,
} from './binding.ts';
export { saveAdapter, loadAdapter, readAdapterConfig, type SaveAdapterOptions } from './format.ts';
export { addTruncated, saveTruncated } from './truncate.ts';
export {
  factorSpectrum,
  denseSpectrum,
  selectRank,
  retainedEnergy,
  truncatedFactors,
  truncatedDelta,
  type Spectrum,
  type RankSelection,
  type DenseSpectrumOptions,
} from './squeeze.ts';
export { squeezeAdapter, type SqueezeOptions, type SqueezeReport, type SqueezedLayer } from './squeeze-adapter.ts';
export { adaptable } from './base.ts';
export {
  EXPORT_MARKER,
  checkExportTarget,
  exportMerged,
  exportModel,
  exportResized,
  type ExportMergedOptions,
  type ExportMergedResult,
} from './export.ts';
export { isTargeted, matchesSpec, patternValue, layerIndexOf, projectionLoraConfig } from './config.ts';
export { layerInfo, matrixDims, toMatrix, fromMatrix, matrixOf } from './layers.ts';
export { methodCatalog, type CatalogRow } from './catalog.ts';
export { targetLayers } from './model.ts';
export {
  writeSliced,
  slicedGroups,
  readPlan,
  planMasks,
  planFromMasks,
  pruneSizes,
  checkPlan,
  lines,
  PROJECTIONS,
  PLAN_FILE,
  type PrunePlan,
  type PruneSizes,
  type Projection,
  type SliceResult,
} from './slice.ts';
export { taylorPlan, taylorScores, recoverAdapter, type LayerTensors } from './loram.ts';
export * as compose from './compose/index.ts';
