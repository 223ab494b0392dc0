// peft/mixture/: mixtures of LoRAs with learned routing, ReMix and LoRA-Mixer (docs/composition.md, "Mixtures"); their
// training loop and evaluation are demo/mixture.ts.
export {
  defaultTargets,
  expertScale,
  type LoraMixerConfig,
  type MixtureConfig,
  mixtureSchema,
  parseMixtureConfig,
  type RemixConfig,
} from './config.ts';
export { expertTerm, initStack, selectionMask, STACK_TENSORS, type ExpertTensors, type StackDims } from './experts.ts';
export {
  mixerRoute,
  routingSpecialisationLoss,
  type MixerRoute,
  type RslParts,
  type RslSettings,
} from './lora-mixer.ts';
export { dimsOf, MixtureModel, type MixtureGraph, type MixtureModule, type RouteMode } from './model.ts';
export { remixRoute, remixSurrogate, type RemixRoute } from './remix.ts';
export {
  effectiveSupport,
  gradLogProbOrdered,
  gumbelArray,
  logProbOrdered,
  orderedSelections,
  rlooGradient,
  sampleWithoutReplacement,
  softmax,
  topK,
} from './routing.ts';
