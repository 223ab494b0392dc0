/**
 * FFA-LoRA — "Improving LoRA in Privacy-preserving Federated Learning" (Sun, Li, Li & Ding, ICLR 2024,
 * arXiv:2403.12313). A LoRA variant picked by the training-only field `ffa_lora`: A stays at its random
 * initialisation (a frozen tensor, saved with the adapter) and only B trains, ΔW = s·B·A (spec methods-a §14). A is
 * drawn from `ffa_lora.seed` and the layer's path — not from the run's seed — so every federated client that starts
 * from the same config holds the same A, and averaging the clients' B is exact: mean_i(B_i)·A = mean_i(B_i·A).
 * Distribution as LoRA's (Kaiming-uniform a = √5, or N(0, 1/r) with "gaussian"); B = 0. Count r·out per layer.
 * Its centralised form is LoRA-FA (arXiv:2308.03303): the same parametrisation. PEFT has no config for it, only an
 * optimizer (peft.optimizers.create_lorafa_optimizer: freezes lora_A, and LoraFAOptimizer rescales B's gradient by
 * (AAᵀ)⁻¹/s² before AdamW); here B trains with the run's optimizer, as in the FFA paper. The saved folder is a plain
 * LoRA folder (lora_A, lora_B), which PEFT loads and can keep training with create_lorafa_optimizer.
 * Linear and GPT-2 Conv1D (LoRA's embedding A starts at zero, which a frozen A would keep).
 * Not here: LoRA itself (lora.ts), federated averaging (fed/).
 */
import { z } from 'zod';
import { LorakitError } from '../../errors.ts';
import { kaimingUniformBound, Rng, seedFrom } from '../../linalg/index.ts';
import type { MethodVariant } from '../method.ts';
import type { LoraConfig, LoraSettings } from './lora.ts';

/** The `ffa_lora` field. */
const ffaField = z
  .strictObject({
    /** Seeds the frozen A of every layer (with the layer path): clients sharing a config share A. */
    seed: z.number().int().min(0).default(0),
  })
  .optional();

/** A LoraConfig with the ffa_lora field. */
export type FfaLoraConfig = LoraConfig & { ffa_lora?: z.output<typeof ffaField> };

/** The generator of a layer's frozen A: the config's seed and the layer path, nothing of the run. */
export const ffaRng = (c: FfaLoraConfig, path: string) => new Rng(seedFrom(c.ffa_lora!.seed, `ffa_lora:${path}`));

export const ffaLora: MethodVariant<FfaLoraConfig, LoraSettings> = {
  name: 'ffa_lora',
  paper: 'Improving LoRA in Privacy-preserving Federated Learning (arXiv:2403.12313)',
  of: ['lora'],
  applies: (c) => c.ffa_lora !== undefined,
  selectedBy: { ffa_lora: {} },
  fields: { ffa_lora: ffaField },
  trainingOnly: ['ffa_lora'],
  layers: ['linear', 'conv1d'],

  check(c, source) {
    // BD-LoRA re-shapes A, LoRA-Pro's rule updates A and B together: neither fits a frozen dense A
    for (const [field, what] of [
      ['use_bdlora', 'BD-LoRA re-draws a block-diagonal A'],
      ['lora_pro', "LoRA-Pro's update rule moves A with B"],
    ] as const) {
      if (c[field] === null || c[field] === undefined) continue;
      throw new LorakitError('LK_UNSUPPORTED', `${source}: ffa_lora freezes A, but ${what}; use one of them`, {
        field,
      });
    }
    const init = c.init_lora_weights;
    if (init === true || init === false || init === 'gaussian') return;
    throw new LorakitError(
      'LK_UNSUPPORTED',
      `${source}: ffa_lora freezes a random A drawn from ffa_lora.seed, but init_lora_weights = ` +
        `${JSON.stringify(init)} computes A from the model; use true or "gaussian"`,
      { field: 'init_lora_weights' },
    );
  },

  adjustParams: (specs) => specs.map((p) => (p.role === 'a' ? { ...p, trainable: false } : p)),

  // A as LoRA draws it, from the shared stream; B keeps LoRA's init (zeros)
  async init({ layer, settings: s, config: c }) {
    const rng = ffaRng(c, layer.path);
    const n = s.r * layer.inFeatures;
    if (c.init_lora_weights === 'gaussian') return { values: { 'lora_A.weight': rng.normalArray(n, 1 / s.r) } };
    const b = kaimingUniformBound(layer.inFeatures);
    return { values: { 'lora_A.weight': rng.uniformArray(n, -b, b) } };
  },

  // r·out per layer: LoRA's r·(in + out) less the frozen A
  trainableCount: (_c, layers) => -layers.reduce((n, { layer, settings: s }) => n + s.r * layer.inFeatures, 0),
};
