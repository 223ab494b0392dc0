// peft/compose/: merging LoRA adapters into one, without a base model — PEFT's add_weighted_adapter combination
// types (task-arithmetic.ts, combine.ts), LoRA-LEGO (kmeans.ts, lego.ts), folders in and out (lora-folder.ts,
// merge.ts).
export {
  COMBINATION_TYPES,
  bernoulliSource,
  clampFactors,
  combineModule,
  isSvdType,
  quantile,
  type CombinationType,
  type CombineOptions,
  type CombinedModule,
  type ModuleShape,
  type ModuleSource,
} from './combine.ts';
export {
  combineTensors,
  disjointMerge,
  magnitudePrune,
  majoritySign,
  randomPrune,
  weightedSum,
  type KeepMask,
  type RuleOptions,
  type SignMethod,
  type TensorRule,
} from './task-arithmetic.ts';
export { kmeans, assignNearest, type Kmeans, type KmeansOptions } from './kmeans.ts';
export { lego, disassemble, type LegoOptions } from './lego.ts';
export { readLora, writeLora, type LoraAdapter, type LoraModule, type LoraToWrite } from './lora-folder.ts';
export {
  MERGE_TYPES,
  mergeAdapterFolders,
  mergeLoras,
  type MergeFoldersOptions,
  type MergeOptions,
  type MergeResult,
  type MergeType,
} from './merge.ts';
