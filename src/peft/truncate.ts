/**
 * Rank truncation of a LoRA adapter: its first b components, B[:, :b]·A[:b, :], as a PEFT LoRA with r = b and the
 * same lora_alpha, so PEFT scales it by α/b (α/√b with rsLoRA) — in memory (addTruncated: `lorakit eval --ranks`)
 * or saved as a folder. For an adapter trained with the dylora or matryoshka variant this is exactly the nested
 * rank-b model it was trained to be; for a plain LoRA it is only the first b components (not the best rank-b
 * approximation, which needs an SVD of B·A).
 * Not here: the folder format (format.ts), DyLoRA's training rule (methods/dylora.ts).
 */
import { check, LorakitError } from '../errors.ts';
import { type SaveAdapterOptions, saveAdapter } from './format.ts';
import { truncateFactors } from './methods/dylora.ts';
import { type PeftModel, paramKey } from './model.ts';
import { resolveConfig, savedConfig } from './registry.ts';

/**
 * Adds adapter `name` of `peft` (a LoRA, possibly trained with dylora or matryoshka) cut to its first `rank` components
 * as a new plain-LoRA adapter — r = rank, lora_alpha unchanged, modules_to_save and trained biases as they are — and
 * returns its name; the active adapters stay as they were, and the caller deletes the new one when done.
 */
export async function addTruncated(peft: PeftModel, name: string, rank: number): Promise<string> {
  const a = peft.get(name);
  const config = savedConfig(a.resolved); // the training-only fields (dylora's, matryoshka's) are left out, as on save
  const plain = resolveConfig(config, `adapter "${name}" config`);
  if (plain.base.name !== 'lora' || plain.variants.length > 0) {
    const what = [plain.base.name, ...plain.variants.map((v) => v.name)].join('+');
    throw new LorakitError(
      'LK_UNSUPPORTED',
      `truncating adapter "${name}": it is a ${what} adapter; only a plain LoRA (trained with or without dylora or ` +
        'matryoshka) truncates to a lower-rank adapter of the same kind',
    );
  }
  check(
    Object.keys(plain.config.rank_pattern).length === 0,
    'LK_UNSUPPORTED',
    `truncating adapter "${name}": it has a rank_pattern; truncation cuts every layer to one rank`,
  );
  check(
    a.bases.size === 0,
    'LK_UNSUPPORTED',
    `truncating adapter "${name}": it replaced frozen weights at init; truncate its plain-LoRA conversion instead`,
  );
  const r = plain.config.r as number;
  check(
    Number.isInteger(rank) && rank >= 1 && rank <= r,
    'LK_INVALID_ARGUMENT',
    `truncating adapter "${name}": rank must be an integer in 1..${r} (the adapter has r = ${r}), got ${rank}`,
  );
  // a new adapter of rank `rank` on the same model gives the keys, shapes and saved modules
  const tmp = `${name}@rank${rank}`;
  const active = [...peft.activeAdapters];
  await peft.addAdapter(tmp, { ...config, r: rank }, { source: `adapter "${name}" truncated to rank ${rank}` });
  peft.setActive(...active);
  const values = new Map<string, Float32Array>(peft.trainableValues(name)); // whole trained weights by HF name
  for (const [path, l] of a.layers) {
    const spec = (role: string) => l.specs.find((s) => s.role === role)!;
    const [an, bn] = [spec('a').name, spec('b').name];
    const t = truncateFactors(l.values[an], l.values[bn], r, rank);
    values.set(paramKey(tmp, path, an), t.a);
    values.set(paramKey(tmp, path, bn), t.b);
  }
  peft.setValues(tmp, values);
  return tmp;
}

/**
 * Writes adapter `name` of `peft` cut to its first `rank` components (addTruncated) as a PEFT LoRA folder in `dir`.
 */
export async function saveTruncated(
  peft: PeftModel,
  name: string,
  dir: string,
  rank: number,
  opts: SaveAdapterOptions = {},
): Promise<void> {
  const tmp = await addTruncated(peft, name, rank);
  try {
    await saveAdapter(peft, tmp, dir, opts);
  } finally {
    peft.deleteAdapter(tmp);
  }
}
