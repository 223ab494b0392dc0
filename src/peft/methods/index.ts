// The registered adapter methods and their variants, in order: variants of one method compose in this order
// (an initialisation variant before DoRA, whose magnitude is taken from the initialised weights). Adding a method
// or a variant: one file in this folder, one line here.
import type { RegistryEntry } from '../method.ts';
import { dora } from './dora.ts';
import { lora } from './lora.ts';
import { loraPro } from './lora_pro.ts';

export const REGISTRY: readonly RegistryEntry[] = [lora, dora, loraPro];
