// The adapter a command runs with (`--adapter <dir>` of generate, eval and merge): loaded onto the model, with one
// note on stderr when the folder holds tensors lorakit does not use, so every command says what it ignored.
import type { LoadedModel } from '../models/index.ts';
import type { PeftModel } from '../peft/index.ts';

/** The note printed for an adapter folder's unused tensors (the first five named). */
export function unusedTensorsNote(dir: string, unused: readonly string[]): string {
  return (
    `lorakit: note: ${unused.length} tensor(s) of ${dir} are not used by lorakit and were ignored: ` +
    `${unused.slice(0, 5).join(', ')}${unused.length > 5 ? ', ...' : ''}`
  );
}

/** Loads the PEFT adapter folder `dir` onto `model` as "default", printing the unused-tensor note if any. */
export async function loadCliAdapter(model: LoadedModel, dir: string): Promise<PeftModel> {
  const { PeftModel, adaptable, loadAdapter } = await import('../peft/index.ts');
  const peft = new PeftModel(adaptable(model));
  const { unused } = await loadAdapter(peft, dir);
  if (unused.length) process.stderr.write(`${unusedTensorsNote(dir, unused)}\n`);
  return peft;
}
