/**
 * CP-LoRA — new in "LoRA-based methods on Unet for transfer learning in Subarachnoid Hematoma Segmentation"
 * (Minoccheri, Hodgman et al., arXiv:2508.01772). A rank-R canonical-polyadic ΔW[o, i, h, w] =
 * s·Σ_j U_o[o, j]·U_i[i, j]·U_h[h, j]·U_w[w, j] (`cp_out`, `cp_in`, `cp_h`, `cp_w`, each [size, R]), run as the CP conv
 * pipeline 1×1 → depthwise kh×1 → depthwise 1×kw → 1×1. UNVERIFIED construction (spec §2.4): the paper body was not
 * readable.
 * Not here: the shared factorisations, forward and merge (../conv-family.ts).
 */
import { convFamilyMethod } from '../conv-family.ts';

export const cpLora = convFamilyMethod({
  name: 'cp_lora',
  paper: 'LoRA-based methods on Unet for transfer learning in Subarachnoid Hematoma Segmentation (arXiv:2508.01772)',
  factorisation: 'cp',
  dora: false,
});
