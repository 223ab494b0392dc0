// adaptive/: merging recycled LoRAs with coefficients learned on a small target set (the Recycling study, spec
// methods-c §2): the coefficient-merged model and its objective, LoraHub (CMA-ES), AdaMerging, π-Tuning, Arrow
// routing and the study's own method, with the study's controls.
export {
  poolFromLoras,
  factorsOf,
  randomPool,
  subPool,
  lorahubMerge,
  totalRank,
  type PoolModule,
  type RecycledPool,
} from './pool.ts';
export {
  PHIS,
  applyPhi,
  coefficientGraph,
  coefficientShape,
  factorFeeds,
  type Phi,
  type CoefficientSpec,
  type CoefficientGraph,
} from './coefficients.ts';
export {
  CoefficientObjective,
  HostAdam,
  rowBatches,
  tokenBatchOfRows,
  type CoefficientValues,
  type ObjectiveOptions,
  type TokenBatch,
} from './objective.ts';
export { cmaes, type CmaEsOptions, type CmaEsResult } from './cmaes.ts';
export { effectiveCoefficients, mergedLora } from './export.ts';
export { SELECTIONS, selectTopK, selectedPool, type Selection, type SelectOptions } from './select.ts';
export {
  CLOSENESS_VARIANTS,
  closeness,
  embeddingCosine,
  fisherEmbedding,
  quasiFisher,
  quasiFisherSimilarity,
  windowsOf,
  type ClosenessVariant,
  type FisherDiagonal,
  type FisherOptions,
} from './similarity.ts';
export {
  fitCoefficients,
  runCoefficientMethod,
  type FitOptions,
  type FitResult,
  type MergeRun,
  type MethodContext,
  type TargetSet,
} from './fit.ts';
export { adaMerging, type AdaMergingOptions } from './adamerging.ts';
export { piTuning, type PiTuningOptions } from './pi-tuning.ts';
export { recycle, type RecycleOptions } from './recycle.ts';
export { loraHub, type LoraHubOptions } from './lorahub.ts';
export {
  arrow,
  arrowAdapter,
  arrowGraph,
  arrowLoss,
  arrowPrototypes,
  topRightSingular,
  type ArrowOptions,
} from './arrow.ts';
export {
  ADAPTIVE_METHODS,
  adaptiveMergeFolders,
  isArrowFolder,
  readArrowFolder,
  targetSet,
  writeArrowFolder,
  type AdaptiveMethod,
  type AdaptiveMergeOptions,
  type AdaptiveMergeResult,
} from './merge-folders.ts';
