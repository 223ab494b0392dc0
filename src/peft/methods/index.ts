// The registered adapter methods and their variants, in order: variants of one method compose in this order
// (an initialisation variant before DoRA, whose magnitude is taken from the initialised weights; variants of every
// method, '*', last). Adding a method or a variant: one file in this folder, one line here.
import type { RegistryEntry } from '../method.ts';
import { bdlora } from './bdlora.ts';
import { allora } from './allora.ts';
import { altlora } from './altlora.ts';
import { dora } from './dora.ts';
import { bone } from './bone.ts';
import { dylora } from './dylora.ts';
import { ffaLora } from './ffa_lora.ts';
import { flylora } from './flylora.ts';
import { loldu } from './loldu.ts';
import { inttune } from './inttune.ts';
import { lora } from './lora.ts';
import { loraprune } from './loraprune.ts';
import { loraPro } from './lora_pro.ts';
import { loraSb } from './lora_sb.ts';
import { loraXs } from './lora_xs.ts';
import { loraGa } from './lora_ga.ts';
import { maskTarget } from './mask_target.ts';
import { miss } from './miss.ts';
import { matryoshka } from './matryoshka.ts';
import { nlora } from './nlora.ts';
import { olora } from './olora.ts';
import { paca } from './paca.ts';
import { pissa } from './pissa.ts';
import { randlora } from './randlora.ts';
import { tiedLora } from './tied_lora.ts';
import { unilora } from './unilora.ts';
import { vblora } from './vblora.ts';
import { salt } from './salt.ts';
import { slora } from './slora.ts';
import { stableLora } from './stable_lora.ts';
import { vera } from './vera.ts';
import { loraC } from './lora_c.ts';
import { convLora } from './conv_lora.ts';
import { cpLora } from './cp_lora.ts';
import { doraC } from './dora_c.ts';
import { convDora } from './conv_dora.ts';
import { cpDora } from './cp_dora.ts';

export const REGISTRY: readonly RegistryEntry[] = [
  lora,
  pissa,
  olora,
  loraGa,
  slora,
  nlora,
  inttune,
  dora,
  dylora,
  matryoshka,
  bdlora,
  ffaLora,
  loraPro,
  altlora,
  allora,
  stableLora,
  maskTarget,
  loraprune,
  vera,
  tiedLora,
  vblora,
  unilora,
  randlora,
  flylora,
  loraXs,
  loraSb,
  miss,
  bone,
  loldu,
  salt,
  paca,
  loraC,
  convLora,
  cpLora,
  doraC,
  convDora,
  cpDora,
];
