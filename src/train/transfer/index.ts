// train/transfer/: moving what was trained on one base to another: Trans-LoRA (a discriminator-filtered synthetic set
// and logit distillation from the source base + LoRA into a LoRA on the target) and Neural Organ Transplantation
// (a trained block of decoder layers inserted into a recipient).
export { distillKl, distillKlHost, type DistillLoss } from './distill-loss.ts';
export { LogProbs, type LogProbsOptions, type ScoringAdapter } from './log-probs.ts';
export { fitAdapter, bestEval, type FitAdapterOptions, type HeldOutSettings } from './fit-adapter.ts';
export {
  Discriminator,
  trainDiscriminator,
  questionRow,
  separationStats,
  type SeparationStats,
  type DiscriminatorTokens,
  type TrainDiscriminatorOptions,
} from './discriminator.ts';
export { synthesize, filterByScore, describeFilter, type SynthesizeOptions, type Filtered } from './synthesize.ts';
export {
  buildTransferKit,
  readTransferKit,
  distillAdapter,
  transferLora,
  transferLoraConfig,
  TRANSFER_KIT_FILE,
  type TransferKit,
  type BuildKitOptions,
  type DistillOptions,
  type TransferLoraOptions,
  type TransferRunSettings,
  type TransferLoraResult,
} from './trans-lora.ts';
export {
  extractOrgan,
  transplant,
  trainOrgan,
  saveOrgan,
  loadOrgan,
  writeTransplant,
  dropLayers,
  writeDropped,
  readAllWeights,
  defaultOrganSpan,
  withLayers,
  type Organ,
  type TrainOrganOptions,
} from './organ.ts';
export { tokenWindows, windowBatch, seedExamples, questionTokens } from './text-data.ts';
