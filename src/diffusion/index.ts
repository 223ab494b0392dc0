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
