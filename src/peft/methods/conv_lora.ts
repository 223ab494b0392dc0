/**
 * convLoRA — ConvLoRA (Aleem et al., ISBI 2024; loralib's ConvLoRA), as named by the SAH U-Net paper
 * (arXiv:2508.01772). A [r·kh, in·kw] (`lora_A`), B [out·kh, r·kh] (`lora_B`), ΔW = s·reshape(B·A, [out, in, kh, kw])
 * row-major (loralib's square kernel k generalised with kh on the rows, kw on the columns); forward as loralib's:
 * one conv of the dropped input with ΔW added to the base output.
 * Not here: the shared factorisations, forward and merge (../conv-family.ts).
 */
import { convFamilyMethod } from '../conv-family.ts';

export const convLora = convFamilyMethod({
  name: 'conv_lora',
  paper: 'Aleem et al., ConvLoRA and AdaBN based Domain Adaptation via Self-Training (ISBI 2024, arXiv:2402.04964)',
  factorisation: 'loralib',
  dora: false,
});
