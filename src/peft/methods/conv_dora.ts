/**
 * convDoRA — new in the SAH U-Net paper (arXiv:2508.01772): DoRA's magnitude/direction split over convLoRA's
 * ΔW = s·reshape(B·A), W' = m ⊙ (W0 + ΔW)/‖W0 + ΔW‖ per output channel (m = `lora_magnitude_vector` [out], the norm
 * detached). UNVERIFIED construction (spec §2.5).
 * Not here: the shared factorisations, forward and merge (../conv-family.ts).
 */
import { convFamilyMethod } from '../conv-family.ts';

export const convDora = convFamilyMethod({
  name: 'conv_dora',
  paper: 'LoRA-based methods on Unet for transfer learning in Subarachnoid Hematoma Segmentation (arXiv:2508.01772)',
  factorisation: 'loralib',
  dora: true,
});
