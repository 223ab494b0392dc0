/**
 * Makes the LoRAM interop fixtures: for each structured-pruning case of scripts/make-pruned-fixtures.ts, a LoRA with
 * seeded non-zero factors on the sliced folder (test/fixtures/loram/<case>/pruned-adapter) and lorakit's recovery of
 * it to the full fixture model (test/fixtures/loram/<case>/recovered); both small PEFT folders, committed.
 * interop/check_loram.py recovers the pruned adapter itself (torch, from the plan) and compares, loads the recovered
 * folder with PEFT on the full model and records its logits; test/peft/loram.test.ts recovers again and compares
 * the files, and compares lorakit's logits with PEFT's.
 *
 *   node --import tsx scripts/make-loram-fixtures.ts [case ...]
 */
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Rng } from '../src/linalg/index.ts';
import { loadModel } from '../src/models/index.ts';
import { PeftModel, adaptable, paramKey, saveAdapter } from '../src/peft/index.ts';
import { recoverAdapterFolder } from '../src/train/index.ts';
import { CASES, OUT_REL, ROOT, makeCase } from './make-pruned-fixtures.ts';

export const LORAM_REL = 'test/fixtures/loram';
const TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

/** The seeded LoRA of the pruned folder `prunedDir`, saved to `dir` (r = 2, α = 6; every factor N(0, 0.1²)). */
export async function makePrunedAdapter(prunedDir: string, dir: string, seed: number, baseModel: string) {
  const model = await loadModel(prunedDir);
  try {
    const peft = new PeftModel(adaptable(model));
    const a = await peft.addAdapter('default', { r: 2, lora_alpha: 6, target_modules: TARGETS });
    const rng = new Rng(seed);
    const values = new Map<string, Float32Array>();
    for (const [path, l] of a.layers)
      for (const s of l.specs)
        values.set(paramKey('default', path, s.name), rng.normalArray(l.values[s.name].length, 0.1));
    peft.setValues('default', values);
    await saveAdapter(peft, 'default', dir, { baseModel });
  } finally {
    await model.close();
  }
}

/** Writes one case's fixtures (the sliced folder goes where make-pruned-fixtures puts it, git-ignored). */
export async function makeLoramCase(name: string): Promise<string> {
  const prunedDir = await makeCase(name);
  const out = join(ROOT, LORAM_REL, name);
  const base = `test/fixtures/models/${CASES[name].base}`;
  await makePrunedAdapter(prunedDir, join(out, 'pruned-adapter'), CASES[name].seed + 100, `${OUT_REL}/${name}/model`);
  await recoverAdapterFolder({
    prunedModel: prunedDir,
    adapter: join(out, 'pruned-adapter'),
    model: join(ROOT, base),
    out: join(out, 'recovered'),
    baseModel: base,
  });
  return out;
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const names = process.argv.slice(2);
  for (const n of names.length ? names : Object.keys(CASES)) console.log(await makeLoramCase(n));
}
