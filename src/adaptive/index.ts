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
  type CoefficientValues,
  type ObjectiveOptions,
  type TokenBatch,
} from './objective.ts';
