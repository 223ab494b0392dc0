/**
 * NLoRA — "NLoRA: Nyström-Initiated Low-Rank Adaptation for Large Language Models" (Guo, Wu & Chang, 2025,
 * arXiv:2502.14482); official code TracyGuo2001/NLoRA (`nlora_init` in its modified peft/tuners/lora/layer.py).
 * An initialisation of SLoRA's three matrices (slora.ts), picked by `init_lora_weights: "n_lora"`, from the Nyström
 * blocks of W0's [out, in] matrix (spec methods-b §5):
 *   A = W0[:r, :] [r, in],  B = W0[:, :r] [out, r],  N = W0[:r, :r] [r, r].
 * The paper's Nyström approximation is C·W11⁺·R; the released code has the pinv line commented out and copies W11
 * itself, and subtracts nothing from W0, so the model starts at W0 + s·W0[:, :r]·W11·W0[:r, :] — not the base model.
 * lorakit follows the code by default and offers the rest in `nlora_config`:
 *   - `nystrom_core: "pinv"`: N = W11⁺ (torch.linalg.pinv's cutoff, r·ε₃₂·σ₁ for float32 weights);
 *   - `subtract_init`: the frozen weight becomes W_res = W0 − s·B·N·A (from the float32 factors, so the model starts
 *     unchanged to float32 rounding); required with "pinv", where s·B·N·A ≈ s·W0 would otherwise add s times W0 again.
 * The fork slices the weight as stored, so on GPT-2's Conv1D ([in, out]) its copy fails (or, square, takes transposed
 * blocks); lorakit slices the [out, in] matrix. r ≤ min(out, in) is required (the blocks must exist).
 * `nlora_config` is saved in adapter_config.json only when given: loading a folder saved as trained re-runs this init
 * (deterministic: slices and an SVD), which rebuilds W_res; the Trainer's default save converts to a plain LoRA
 * instead.
 * Not here: the core N and its forward (slora.ts), training N alone (inttune.ts).
 */
import { z } from 'zod';
import { LorakitError } from '../../errors.ts';
import { pinv } from '../../linalg/index.ts';
import { matrixDims, toMatrix } from '../layers.ts';
import type { MethodVariant } from '../method.ts';
import { residualWeight } from '../residual.ts';
import type { LoraConfig, LoraSettings } from './lora.ts';
import { N_KEY, bTimesN } from './slora.ts';

/** The `nlora_config` field (lorakit's; absent = the official code's behaviour). */
const nloraConfigField = z
  .strictObject({
    /** N = W0[:r, :r] as the official code ("raw"), or its pseudo-inverse, the paper's Nyström core ("pinv"). */
    nystrom_core: z.enum(['raw', 'pinv']).default('raw'),
    /** Replace W0 by W0 − s·B·N·A so the model starts unchanged; default true with "pinv", false with "raw". */
    subtract_init: z.boolean().optional(),
  })
  .optional();

/** A LoraConfig with the nlora_config field. */
export type NLoraConfig = LoraConfig & { nlora_config?: z.output<typeof nloraConfigField> };

/** Whether the init subtracts s·B·N·A from W0. */
const subtracts = (c: NLoraConfig) => c.nlora_config?.subtract_init ?? c.nlora_config?.nystrom_core === 'pinv';

/** Machine epsilon of float32: torch.linalg.pinv's rtol for a float32 [r, r] block is r·ε₃₂. */
const EPS32 = 2 ** -23;

export const nlora: MethodVariant<NLoraConfig, LoraSettings> = {
  name: 'nlora',
  paper: 'NLoRA: Nyström-Initiated Low-Rank Adaptation for Large Language Models (arXiv:2502.14482)',
  of: ['lora'],
  applies: (c) => c.init_lora_weights === 'n_lora',
  selectedBy: { init_lora_weights: 'n_lora' },
  inPeft: false, // the official fork's value; released PEFT refuses it
  claims: { field: 'init_lora_weights', describe: '"n_lora" (NLoRA: A, N, B from the Nyström blocks of W0)' },
  fields: { nlora_config: nloraConfigField },
  layers: ['linear', 'conv1d'],

  check(c, source) {
    if (c.nlora_config?.nystrom_core === 'pinv' && c.nlora_config.subtract_init === false) {
      throw new LorakitError(
        'LK_CONFIG_INVALID',
        `${source}: nlora_config.nystrom_core "pinv" needs subtract_init: with N = W11⁺, s·B·N·A approximates s·W0, ` +
          'which the adapter would add to W0 again; remove subtract_init: false',
        { field: 'nlora_config.subtract_init' },
      );
    }
  },

  checkLayer(layer, s, _c, source) {
    const [o, i] = matrixDims(layer);
    if (s.r > Math.min(o, i)) {
      throw new LorakitError(
        'LK_CONFIG_INVALID',
        `${source}: n_lora takes W0[:r, :r], W0[:r, :] and W0[:, :r], so r must be ≤ min(out, in); ${layer.path} is ` +
          `[${o}, ${i}] as an [out, in] matrix and r = ${s.r}; lower r or give the layer a rank in rank_pattern`,
        { field: 'r', layer: layer.path },
      );
    }
  },

  async init({ layer, settings: s, config: c, readBase }) {
    const [o, i] = matrixDims(layer);
    const r = s.r;
    const w = toMatrix(layer, await readBase()); // [out, in]
    const a = w.slice(0, r * i); // W0[:r, :]: the first r rows
    const b = new Float32Array(o * r); // W0[:, :r]
    for (let row = 0; row < o; row++) b.set(w.subarray(row * i, row * i + r), row * r);
    const w11 = new Float32Array(r * r); // W0[:r, :r]
    for (let row = 0; row < r; row++) w11.set(w.subarray(row * i, row * i + r), row * r);
    const n = c.nlora_config?.nystrom_core === 'pinv' ? Float32Array.from(pinv(w11, r, r, r * EPS32)) : w11;
    const values = { 'lora_A.weight': a, 'lora_B.weight': b, [N_KEY]: n };
    if (!subtracts(c)) return { values };
    // W_res = W0 − s·(B·N)·A, with B·N rounded to float32 as the forward's products are
    return { values, base: residualWeight(layer, w, a, bTimesN(values, o, r), r, s.scaling) };
  },
};
