// `lorakit merge-adapters`: maps flags to peft/compose's mergeAdapterFolders (PEFT's add_weighted_adapter types and
// LoRA-LEGO) and prints what was written. `--adapter DIR[:WEIGHT]` repeats; a weight defaults to 1.
import { LorakitError } from '../errors.ts';
import type { CommandModule } from './main.ts';
import { intFlag, numberFlag, requiredFlag } from './flags.ts';

interface Flags {
  adapter?: unknown;
  combination?: unknown;
  density?: unknown;
  rank?: unknown;
  svdClamp?: unknown;
  majoritySignMethod?: unknown;
  seed?: unknown;
  model?: unknown;
  legoOutputReweighting?: unknown;
  legoRestarts?: unknown;
  out?: unknown;
  force?: boolean;
}

const bad = (flag: string, msg: string) => new LorakitError('LK_INVALID_ARGUMENT', msg, { option: flag });

/** `DIR` or `DIR:WEIGHT` (the text after the last colon is the weight when it is a number; else all of it is DIR). */
export function parseAdapterFlag(v: string): { dir: string; weight: number } {
  const i = v.lastIndexOf(':');
  if (i > 0) {
    const w = v.slice(i + 1);
    if (w !== '' && Number.isFinite(Number(w))) return { dir: v.slice(0, i), weight: Number(w) };
  }
  return { dir: v, weight: 1 };
}

export const register: CommandModule['register'] = (cli) => {
  cli
    .command('merge-adapters', "Merge LoRA adapters into one PEFT LoRA folder (PEFT's add_weighted_adapter, LoRA-LEGO)")
    .option('--adapter <dir[:weight]>', 'A PEFT LoRA folder and its weight (default 1); repeat for each adapter')
    .option(
      '--combination <type>',
      'svd, linear, cat, ties, ties_svd, dare_ties, dare_linear, dare_ties_svd, dare_linear_svd, magnitude_prune, ' +
        'magnitude_prune_svd (PEFT) or lego (LoRA-LEGO)',
      { default: 'svd' },
    )
    .option('--density <d>', 'Kept fraction for ties, dare_*, magnitude_prune* (0..1)')
    .option('--rank <r>', 'Rank of the svd types and lego (default: the largest source rank)')
    .option('--svd-clamp <q>', 'Clamp the SVD factors to this quantile of their entries (PEFT svd_clamp)')
    .option('--majority-sign-method <m>', 'TIES sign election: total or frequency', { default: 'total' })
    .option('--seed <n>', "DARE: torch.manual_seed before PEFT's call (with --model: PEFT's exact masks)", {
      default: 0,
    })
    .option('--model <dir>', "Base model folder: only its module order is read (DARE's draw order, as PEFT's)")
    .option('--lego-output-reweighting <g>', 'lego: sqrt (√(mean source rank / rank)), none, or a number', {
      default: 'sqrt',
    })
    .option('--lego-restarts <n>', 'lego: k-means restarts', { default: 8 })
    .option('--out <dir>', 'Folder to write the merged adapter to (new or empty)')
    .option('--force', 'Replace the adapter files of an existing adapter folder at --out')
    .action(async (flags: Flags) => {
      const raw = flags.adapter === undefined ? [] : [flags.adapter].flat();
      if (raw.length === 0 || raw.some((v) => typeof v !== 'string'))
        throw bad('adapter', '--adapter <dir[:weight]> is required (repeat it for each adapter to merge)');
      const adapters = (raw as string[]).map(parseAdapterFlag);
      const out = requiredFlag('out', flags.out, 'the folder to write the merged adapter to');
      const combination = String(flags.combination);
      const { MERGE_TYPES, mergeAdapterFolders } = await import('../peft/compose/index.ts');
      if (!(MERGE_TYPES as readonly string[]).includes(combination))
        throw bad('combination', `--combination expects one of ${MERGE_TYPES.join(', ')}, got "${combination}"`);
      const sign = String(flags.majoritySignMethod);
      if (sign !== 'total' && sign !== 'frequency')
        throw bad('majority-sign-method', `--majority-sign-method expects total or frequency, got "${sign}"`);
      const rw = flags.legoOutputReweighting;
      const outputReweighting = rw === 'sqrt' || rw === 'none' ? rw : numberFlag('lego-output-reweighting', rw);
      let moduleOrder: string[] | undefined;
      if (flags.model !== undefined) {
        const dir = requiredFlag('model', flags.model, 'a base model folder');
        const { loadModel } = await import('../models/load.ts');
        const model = await loadModel(dir);
        try {
          moduleOrder = model.modules().map((m) => m.path);
        } finally {
          await model.close();
        }
      }
      const r = await mergeAdapterFolders({
        adapters,
        out,
        combination: combination as (typeof MERGE_TYPES)[number],
        density: numberFlag('density', flags.density),
        rank: intFlag('rank', flags.rank),
        svdClamp: numberFlag('svd-clamp', flags.svdClamp),
        majoritySignMethod: sign,
        seed: intFlag('seed', flags.seed, 0),
        moduleOrder,
        lego: { outputReweighting, restarts: intFlag('lego-restarts', flags.legoRestarts) },
        overwrite: flags.force === true,
      });
      console.log(
        `merged ${adapters.length} adapter(s) with ${r.combination}: ${r.modules.size} modules at rank ${r.rank} ` +
          `(lora_alpha ${r.rank}, scaling 1), written to ${out} (adapter_config.json, adapter_model.safetensors)`,
      );
    });
};
