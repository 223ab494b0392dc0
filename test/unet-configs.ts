// The tiny U-Net configs the U-Net tests build on (models, segmentation, diffusion, the compose server, the CLI):
// two levels, one resnet per level, one input and one output channel, so that a graph compiles and runs in well
// under a second. Each test changes only the fields it is about. Not here: the scripts' models (their own CONFIG
// exports, sized for real runs), the weights (initUNetWeights / initUNetConditionWeights with the test's seed).
import {
  parseUNet2DConditionConfig,
  parseUNet2DConfig,
  type UNet2DConditionConfig,
  type UNet2DConfig,
} from '../src/models/index.ts';

/** The tiny UNet2DModel as config.json fields: 8 → 16 channels, resnet blocks only (the mid block's attention on). */
export const TINY_UNET = {
  in_channels: 1,
  out_channels: 1,
  block_out_channels: [8, 16],
  layers_per_block: 1,
  down_block_types: ['DownBlock2D', 'DownBlock2D'],
  up_block_types: ['UpBlock2D', 'UpBlock2D'],
  norm_num_groups: 4,
};

/** The tiny UNet2DConditionModel as config.json fields: cross-attention at the second level to 12-wide states. */
export const TINY_UNET_CONDITION = {
  in_channels: 1,
  out_channels: 1,
  block_out_channels: [8, 16],
  layers_per_block: 1,
  down_block_types: ['DownBlock2D', 'CrossAttnDownBlock2D'],
  up_block_types: ['CrossAttnUpBlock2D', 'UpBlock2D'],
  norm_num_groups: 4,
  cross_attention_dim: 12,
  attention_head_dim: 2,
};

/** The parsed tiny UNet2DModel config, with `over` replacing fields. */
export function tinyUNetConfig(over: Record<string, unknown> = {}): UNet2DConfig {
  return parseUNet2DConfig({ ...TINY_UNET, ...over }, 'test config');
}

/** The parsed tiny UNet2DConditionModel config, with `over` replacing fields. */
export function tinyUNetConditionConfig(over: Record<string, unknown> = {}): UNet2DConditionConfig {
  return parseUNet2DConditionConfig({ ...TINY_UNET_CONDITION, ...over }, 'test config');
}
