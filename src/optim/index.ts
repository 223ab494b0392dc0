// optim/: optimizers as graph ops, gradient clipping, and the one-graph training step.
export type { Optimizer, UpdateContext } from './optimizer.ts';
export { adamw, adamwStep, type AdamWOptions } from './adamw.ts';
export { sgd, type SgdOptions } from './sgd.ts';
export { clipByGlobalNorm, clipScale, globalNorm } from './clip.ts';
export {
  addTrainStep,
  inputNamed,
  TrainStepRunner,
  stateName,
  newName,
  type ParamGroup,
  type TrainStepOptions,
  type TrainStepLayout,
  type CustomUpdate,
  type StepTensor,
} from './step.ts';
