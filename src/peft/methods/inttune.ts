/**
 * IntTune — the "IntermediateTune" of "NLoRA: Nyström-Initiated Low-Rank Adaptation for Large Language Models" (Guo,
 * Wu & Chang, 2025, arXiv:2502.14482); official script TracyGuo2001/NLoRA `inttune.py`, which builds an SLoRA/NLoRA
 * adapter and sets `requires_grad = False` on every lora_A and lora_B. A LoRA variant picked by the training-only
 * field `inttune: true` on an adapter with the core N (init_lora_weights "s_lora" or "n_lora"): A and B stay as
 * initialised (frozen tensors, saved with the adapter), only N [r, r] trains — r² parameters per layer (spec
 * methods-a §5). The saved folder is the SLoRA/NLoRA folder; nothing in it says A and B were frozen.
 * Not here: the core and its forward (slora.ts), the Nyström values (nlora.ts).
 */
import { z } from 'zod';
import { LorakitError } from '../../errors.ts';
import type { MethodVariant } from '../method.ts';
import type { LoraConfig, LoraSettings } from './lora.ts';
import { usesCore } from './slora.ts';

/** A LoraConfig with the inttune field. */
export type IntTuneConfig = LoraConfig & { inttune: boolean };

export const inttune: MethodVariant<IntTuneConfig, LoraSettings> = {
  name: 'inttune',
  paper: 'NLoRA: Nyström-Initiated Low-Rank Adaptation for Large Language Models (arXiv:2502.14482), IntermediateTune',
  of: ['lora'],
  applies: (c) => c.inttune === true,
  selectedBy: { init_lora_weights: 'n_lora', inttune: true },
  inPeft: false, // a training setting of the official fork's script
  fields: {
    /** Train only the core N of an SLoRA/NLoRA adapter (A and B frozen). */
    inttune: z.boolean().default(false),
  },
  trainingOnly: ['inttune'],

  check(c, source) {
    if (usesCore(c)) return;
    throw new LorakitError(
      'LK_CONFIG_INVALID',
      `${source}: inttune trains the r×r core N of SLoRA/NLoRA, but init_lora_weights = ` +
        `${JSON.stringify(c.init_lora_weights)} gives the adapter no core; use "n_lora" (the paper's IntTune) or ` +
        '"s_lora"',
      { field: 'inttune' },
    );
  },

  adjustParams: (specs) => specs.map((p) => (p.role === 'a' || p.role === 'b' ? { ...p, trainable: false } : p)),

  // r² per layer: LoRA's r·(in + out) no longer trains
  trainableCount: (_c, layers) =>
    -layers.reduce((n, { layer, settings: s }) => n + s.r * (layer.inFeatures + layer.outFeatures), 0),
};
