/**
 * PiSSA — "PiSSA: Principal Singular Values and Singular Vectors Adaptation of Large Language Models" (Meng, Wang
 * & Zhang, NeurIPS 2024, arXiv:2404.02948); in PEFT a LoRA initialisation, `init_lora_weights: "pissa"` or
 * `"pissa_niter_<K>"` (peft/tuners/lora/layer.py `pissa_init`). The adapter starts as W0's r principal singular
 * components and the frozen weight becomes the residual (spec methods-b §3):
 *   W0 = U·S·Vᵀ,  S_r = S[:r] / s,  A = diag(√S_r)·V[:, :r]ᵀ [r, in],  B = U[:, :r]·diag(√S_r) [out, r],
 *   W_res = W0 − s·B·A   (from the float32 A and B, so the output is unchanged at init),
 * on the [out, in] matrix view of the weight (GPT-2's Conv1D transposed, as PEFT's fan_in_fan_out does). Training is
 * plain LoRA on top of W_res; saveAdapter's convertToBase writes the rank-2r LoRA of the untouched base.
 *
 * "pissa" takes the exact SVD (linalg/svd.ts). "pissa_niter_K" takes torch.svd_lowrank's randomized SVD with q = r
 * and K power iterations (linalg/rsvd.ts, the same algorithm step for step), its Gaussian sketch drawn from the
 * layer's seeded generator rather than torch's: the same algorithm with different random numbers, so its factors
 * are as close to the exact ones as PEFT's are, not equal to PEFT's. Being random, a "pissa_niter_K" folder saved
 * as trained gets another residual when it is re-initialised at load (PEFT draws torch's numbers; loadAdapter seeds
 * 0), off by the randomized SVD's error; the converted folder (the Trainer's default) has no such dependence.
 * Not here: the residual and PEFT's dtype and rank rules (peft/residual.ts), the decompositions (linalg/).
 */
import { svd, svdLowrank } from '../../linalg/index.ts';
import { matrixDims, toMatrix } from '../layers.ts';
import type { MethodVariant } from '../method.ts';
import { checkDecomposable, residualWeight } from '../residual.ts';
import type { LoraConfig, LoraSettings } from './lora.ts';

/** PEFT's accepted spellings: "pissa" (exact SVD) and "pissa_niter_<K>" (randomized, K power iterations). */
const SPELLING = /^pissa(?:_niter_(\d+))?$/;

/** The power iterations an init_lora_weights value asks for: null for the exact SVD, undefined if not PiSSA. */
function niterOf(v: unknown): number | null | undefined {
  const m = typeof v === 'string' ? SPELLING.exec(v) : null;
  if (!m) return undefined;
  return m[1] === undefined ? null : Number(m[1]);
}

export const pissa: MethodVariant<LoraConfig, LoraSettings> = {
  name: 'pissa',
  paper: 'PiSSA: Principal Singular Values and Singular Vectors Adaptation of Large Language Models (arXiv:2404.02948)',
  of: ['lora'],
  applies: (c) => niterOf(c.init_lora_weights) !== undefined,
  selectedBy: { init_lora_weights: 'pissa' },
  claims: { field: 'init_lora_weights', describe: '"pissa", "pissa_niter_<K>" (K ≥ 0 power iterations)' },
  layers: ['linear', 'conv1d'],

  async init({ layer, settings: s, config: c, rng, readBase }) {
    checkDecomposable('pissa', layer, s.r);
    const [o, i] = matrixDims(layer);
    const r = s.r;
    const w = toMatrix(layer, await readBase()); // [out, in]
    const niter = niterOf(c.init_lora_weights)!;
    // u [out, k], sv [k] descending, v [in, k] (V, not Vᵀ); k = min(out, in) exact, r randomized (torch's q = r)
    const { u, s: sv, v, k } = niter === null ? svd(w, o, i) : await svdLowrank(w, o, i, { q: r, niter, rng });
    const a = new Float32Array(r * i);
    const b = new Float32Array(o * r);
    for (let j = 0; j < r; j++) {
      const root = Math.sqrt(sv[j] / s.scaling); // √(S_j / s): s·B·A is then U_r·S_r·V_rᵀ
      for (let col = 0; col < i; col++) a[j * i + col] = root * v[col * k + j];
      for (let row = 0; row < o; row++) b[row * r + j] = u[row * k + j] * root;
    }
    return {
      values: { 'lora_A.weight': a, 'lora_B.weight': b },
      base: residualWeight(layer, w, a, b, r, s.scaling),
    };
  },
};
