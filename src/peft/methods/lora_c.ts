/**
 * LoRA-C — "LoRA-C: Parameter-Efficient Fine-Tuning of Robust CNN for IoT Devices" (Ding et al., arXiv:2410.16954),
 * as named by the SAH U-Net paper (arXiv:2508.01772). One low-rank matrix per conv layer rather than per kernel:
 * ΔW = s·reshape(B·A) with B [out, r] (`lora_B.weight` [out, r, 1, 1]) and A [r, in·kh·kw] (`lora_A.weight`
 * [r, in, kh, kw]), run as a k×k conv in → r with the base stride, padding and dilation, then a 1×1 conv r → out.
 * PEFT's conv LoRA with the dilation passed on. The exact reshape of the paper is UNVERIFIED (spec §2.3).
 * Not here: the shared factorisations, forward and merge (../conv-family.ts).
 */
import { convFamilyMethod } from '../conv-family.ts';

export const loraC = convFamilyMethod({
  name: 'lora_c',
  paper: 'LoRA-C: Parameter-Efficient Fine-Tuning of Robust CNN for IoT Devices (arXiv:2410.16954)',
  factorisation: 'matrix',
  dora: false,
});
