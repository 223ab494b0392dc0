// Where the tests find the real SmolLM2 GGUF of ../shared, and the skip note when it is absent.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The shared SmolLM2-135M-Instruct Q4_1 GGUF (../shared/data/models/...). */
export const SMOLLM2_GGUF = fileURLToPath(
  new URL('../../../shared/data/models/smollm2-135m-instruct-q4_1/SmolLM2-135M-Instruct.Q4_1.gguf', import.meta.url),
);

/** A one-line skip note when the shared SmolLM2 GGUF is absent, else false. */
export function skipNote(): string | false {
  return existsSync(SMOLLM2_GGUF) ? false : `../shared SmolLM2 GGUF absent (${SMOLLM2_GGUF})`;
}
