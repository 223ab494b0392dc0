/**
 * LoRA-SB — "Initialization using Update Approximation is a Silver Bullet for Extreme Efficiency Low-Rank
 * Fine-Tuning" (Ponkshe, Singhal et al., arXiv:2411.19557); an initialisation of LoRA-XS (lora_xs.ts), claiming
 * `init_lora_weights: "lora_sb"`, with `lora_sb_config`. Same structure ΔW = s·B·R·A with frozen A, B and a
 * trainable r×r R, but started from the rank-r approximation of an estimated first full fine-tuning step, so ΔW ≠ 0
 * at init by design (spec methods-a §10). Following the official code (RaghavSinghal10/lora-sb@37b33d4,
 * utils/gradient_utils.py `estimate_and_process_grads_torch`, utils/initialization_utils.py
 * `find_and_initialize_grad`, utils/svd_utils.py `get_svd_grad`):
 *   G = the gradient of the loss w.r.t. W0 over the first `batches` training batches (the platform's calibration,
 *       train/calibrate.ts: a token-weighted mean where the official code sums per-batch means; only sign(G) is used,
 *       and the two agree wherever batches count equally many tokens),
 *   Δ = −η·sign(G), η = `step_size` (the official code passes learning_rate / (warmup_ratio·total_steps), the rate
 *       of the first warm-up step: Δ is what a first Adam-like step would do),
 *   Δ ≈ U·diag(S)·Vᵀ by torch.svd_lowrank's algorithm with q = r and `svd_niter` iterations (the official
 *       svd_lowrank(Δᵀ, q=r, niter=10), its U and V swapped back), factors rounded to bfloat16 as the official code
 *       does (`bf16_factors`; false keeps float32),
 *   B = U [out, r], A = Vᵀ [r, in], R = diag(S): the model at step 0 is W0 + s·(rank-r approximation of Δ).
 * W0 is not modified. The sketch comes from the layer's seeded generator (the official code seeds torch with 42).
 * A saved LoRA-SB folder holds A, B and R, so loading it needs no calibration (calibration returns null then).
 * Not here: computing G (train/calibrate.ts), the forward and merge (lora_xs.ts).
 */
import { z } from 'zod';
import { LorakitError } from '../../errors.ts';
import { bf16ToF32, f32ToBf16 } from '../../io/index.ts';
import { svdLowrank } from '../../linalg/index.ts';
import { matrixDims, toMatrix } from '../layers.ts';
import type { InitResult, MethodVariant } from '../method.ts';
import { type LoraXsConfig, type LoraXsSettings, XS_A, XS_B, XS_R } from './lora_xs.ts';

const loraSbConfigField = z
  .strictObject({
    /** η of the estimated update −η·sign(G); the official code uses learning_rate / warmup_steps. */
    step_size: z.number().positive(),
    /** Training batches the gradient estimate averages (the official scripts: 50–170 examples). */
    batches: z.number().int().positive().default(16),
    /** Round U, S and V to bfloat16 before setting B, R and A, as the official get_svd_grad does. */
    bf16_factors: z.boolean().default(true),
  })
  .optional();

/** A LoRA-XS config with LoRA-SB's field. */
export type LoraSbConfig = LoraXsConfig & { lora_sb_config?: z.output<typeof loraSbConfigField> };

/** x rounded to the nearest bfloat16 (ties to even), as torch's .to(torch.bfloat16). */
const toBf16 = (x: Float32Array) => bf16ToF32(f32ToBf16(x));

export const loraSb: MethodVariant<LoraSbConfig, LoraXsSettings> = {
  name: 'lora_sb',
  paper:
    'Initialization using Update Approximation is a Silver Bullet for Extreme Efficiency Low-Rank Fine-Tuning ' +
    '(arXiv:2411.19557)',
  of: ['lora_xs'],
  applies: (c) => c.init_lora_weights === 'lora_sb',
  selectedBy: { peft_type: 'LORA_XS', init_lora_weights: 'lora_sb', lora_sb_config: { step_size: 1e-3 } },
  claims: { field: 'init_lora_weights', describe: '"lora_sb" (with lora_sb_config)' },
  fields: { lora_sb_config: loraSbConfigField },

  check(c, source) {
    if (!c.lora_sb_config) {
      throw new LorakitError(
        'LK_CONFIG_INVALID',
        `${source}: init_lora_weights "lora_sb" needs lora_sb_config with step_size, the η of the estimated first ` +
          'update −η·sign(G) (the official code uses learning_rate / warmup_steps)',
        { field: 'lora_sb_config' },
      );
    }
  },

  // a saved folder holds A, B and R: the gradients are needed only to make them
  calibration: (c, loading) => (loading ? null : { batches: c.lora_sb_config!.batches }),

  async init({ layer, settings: s, config: c, rng, calibrationGrad, loading }): Promise<InitResult> {
    if (loading) return { values: {} };
    if (!calibrationGrad) throw new Error(`internal: lora_sb on ${layer.path} got no calibration gradient`);
    const { step_size: eta, bf16_factors: bf16 } = c.lora_sb_config!;
    const [o, i] = matrixDims(layer);
    const r = s.r;
    const g = toMatrix(layer, calibrationGrad); // [out, in]
    const delta = Float32Array.from(g, (x) => -eta * Math.sign(x)); // [out, in]: −η·sign(G), 0 where G = 0
    // u [out, r], sv [r], v [in, r]
    const { u, s: sv, v } = await svdLowrank(delta, o, i, { q: r, niter: c.svd_niter, rng });
    const round = (x: Float32Array): Float32Array => (bf16 ? toBf16(x) : x);
    const b = round(Float32Array.from(u)); // B = U [out, r]
    const a = new Float32Array(r * i); // A = Vᵀ [r, in]
    for (let j = 0; j < r; j++) for (let col = 0; col < i; col++) a[j * i + col] = v[col * r + j];
    const d = round(Float32Array.from(sv));
    const R = new Float32Array(r * r); // diag(S)
    for (let j = 0; j < r; j++) R[j * r + j] = d[j];
    return { values: { [XS_A]: round(a), [XS_B]: b, [XS_R]: R } };
  },
};
