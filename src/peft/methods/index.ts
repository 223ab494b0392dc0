// The registered adapter methods and their variants, in order: variants of one method compose in this order
// (an initialisation variant before DoRA, whose magnitude is taken from the initialised weights; variants of every
// method, '*', last). Adding a method or a variant: one file in this folder, one line here.
import type { RegistryEntry } from '../method.ts';
import { dora } from './dora.ts';
import { dylora } from './dylora.ts';
import { flylora } from './flylora.ts';
import { lora } from './lora.ts';
import { loraprune } from './loraprune.ts';
import { loraPro } from './lora_pro.ts';
import { loraGa } from './lora_ga.ts';
import { maskTarget } from './mask_target.ts';
import { olora } from './olora.ts';
import { pissa } from './pissa.ts';
import { vera } from './vera.ts';

export const REGISTRY: readonly RegistryEntry[] = [
  lora,
  pissa,
  olora,
  loraGa,
  dora,
  dylora,
  loraPro,
  maskTarget,
  loraprune,
  vera,
  flylora,
];
