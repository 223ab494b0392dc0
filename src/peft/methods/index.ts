// The registered adapter methods, in order. Adding a method: one file in this folder, one line here.
import type { AdapterMethod } from '../method.ts';
import { lora } from './lora.ts';

export const METHODS: readonly AdapterMethod<any>[] = [lora];

/** The method whose PEFT peft_type (or lorakit name) is `type`. */
export function methodFor(type: string): AdapterMethod<any> | undefined {
  return METHODS.find((m) => m.peftType === type || m.name === type);
}
