/**
 * Bone — "Bone: Block-Affine Adaptation of Large Language Models" (Kang, arXiv:2409.15371 v1–v3; renamed DiSHA, then
 * MiSS); PEFT peft_type BONE, added in 0.14, deprecated for MiSS in 0.17 and removed in 0.19 (peft/tuners/bone in the
 * pinned 0.18.1, read: its layer is MiSS's without dropout and without the mini mode). Kept so that Bone folders made
 * by PEFT ≤ 0.18 load and merge, and so lorakit can write them for those versions; new adapters should use MiSS
 * (miss.ts), whose balance and bat modes compute the same function from the same block. Modes by `init_weights`:
 * true (block 0) or false (Kaiming-uniform): D [r, out], y = base(x) + (Σ shards of x)·D; "bat": T [out/r, r, r],
 * W'_{p,q} = W_{p,q} + W_{p,q}·T_p + T_p. Key `base_model.model.<path>.bone_block`. PEFT's `convert-bone-to-miss.py`
 * renames bone_block to miss_block and BONE to MISS; lorakit reads either.
 * Not here: the shard math (miss.ts).
 */
import { z } from 'zod';
import type { AdapterMethod, ParamSpec } from '../method.ts';
import { blockShape, checkShards, initialBlock, modeOf, noBias, shardForward, shardMerge } from './miss.ts';

export const boneFields = {
  /** Shard width along in, or the block size in the bat mode; PEFT's default 64. */
  r: z.number().int().positive().default(64),
  /** true: block 0; false: block Kaiming-uniform (tests); "bat": Block Affine Transformation. */
  init_weights: z.union([z.boolean(), z.literal('bat')]).default(true),
  /** Base biases to train: only "none". */
  bias: z.enum(['none', 'all', 'bone_only']).default('none'),
};

/** A BoneConfig with defaults filled (targeting fields included). */
export type BoneConfig = { [K in keyof typeof boneFields]: z.output<(typeof boneFields)[K]> } & {
  target_modules: string | string[] | null;
  [k: string]: unknown;
};

const BLOCK = 'bone_block';

export const bone: AdapterMethod<BoneConfig> = {
  name: 'bone',
  peftType: 'BONE',
  paper: 'Bone: Block-Affine Adaptation of Large Language Models (arXiv:2409.15371)',
  layers: ['linear'],
  fields: boneFields,

  check: (c, source) => noBias('Bone', c.bias, source),

  checkLayer: (layer, _s, c, source) => checkShards('bone', layer, modeOf(c.init_weights), c.r, 1, source),

  params: (layer, _s, c): ParamSpec[] => [
    { name: BLOCK, shape: blockShape(layer, modeOf(c.init_weights), c.r, 1), trainable: true, role: 'other' },
  ],

  async init({ layer, config: c, rng }) {
    const shape = blockShape(layer, modeOf(c.init_weights), c.r, 1);
    return { values: { [BLOCK]: initialBlock(shape, c.init_weights === false, rng) } };
  },

  forward: (ctx) => shardForward(ctx, ctx.p[BLOCK], modeOf(ctx.config.init_weights), ctx.config.r, 1),

  // r·out per layer in both modes ((out/r)·r·r in bat)
  trainableCount: (c, layers) => layers.reduce((n, { layer }) => n + c.r * layer.outFeatures, 0),

  merge: ({ layer, config: c, p }, w0) => shardMerge(layer, p[BLOCK], modeOf(c.init_weights), c.r, 1, w0),
};
