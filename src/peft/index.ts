// peft/: the adapter-method interface and registry, PeftModel (inject, activate, merge), PEFT folders.
export type {
  AdapterMethod,
  LayerInfo,
  LayerSettings,
  ParamSpec,
  ForwardContext,
  InitContext,
  LayerKind,
} from './method.ts';
export { METHODS, methodFor } from './methods/index.ts';
export { lora, loraConfigSchema, type LoraConfig, type LoraVariant } from './methods/lora.ts';
export { dora } from './methods/dora.ts';
export { PeftModel, paramKey, type Adapter, type AdapterLayer, type AdaptableBase, type HookOptions } from './model.ts';
export { saveAdapter, loadAdapter, readAdapterConfig } from './format.ts';
export { adaptable } from './base.ts';
export { exportMerged, exportModel, type ExportMergedOptions, type ExportMergedResult } from './export.ts';
export { isTargeted, matchesSpec, patternValue, layerIndexOf } from './config.ts';
