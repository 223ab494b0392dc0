// Diffusion-time composition of LoRAs: CLoRA (contrastive latent update on cross-attention maps, masked fusion).
export {
  type ConceptToken,
  type ConceptGroups,
  ntXentLoss,
  minMaxRows,
  cloraEmbeddings,
  cloraLoss,
} from './clora-loss.ts';
export {
  type CondUNetSource,
  type PassAdapter,
  type CloraPass,
  type CloraGraphOptions,
  buildCloraGraph,
  passAdapter,
} from './clora-graph.ts';
export {
  type LatentHook,
  type PredictNoise,
  type MaskMorphology,
  type CloraOptions,
  type Clora,
  clora,
  cloraMasks,
  fuseNoise,
} from './clora.ts';
