// `lorakit squeeze`: maps flags to loadAdapter + `squeezeAdapter()` (LoRA-Squeeze's post-hoc compression) and prints
// the rank and kept energy of each layer.
import type { CommandModule } from './main.ts';
import { intFlag, numberFlag, requiredFlag } from './flags.ts';
import { LorakitError } from '../errors.ts';

interface Flags {
  adapter?: unknown;
  rank?: unknown;
  out?: unknown;
  model?: unknown;
  energy?: unknown;
  alpha?: unknown;
}

export const register: CommandModule['register'] = (cli) => {
  cli
    .command('squeeze', 'Compress a mergeable adapter to a lower-rank PEFT LoRA (truncated SVD of each ΔW)')
    .option('--adapter <dir>', 'PEFT adapter folder of any mergeable method (LoRA, DoRA, VeRA, ...)')
    .option('--rank <r>', 'Rank to keep (the most per layer, with --energy)')
    .option('--out <dir>', 'Folder to write the squeezed LoRA adapter to')
    .option('--model <dir>', "Base model folder (default: the adapter's base_model_name_or_path)")
    .option('--energy <f>', 'Per layer, keep the smallest rank holding this fraction of Σσ² (e.g. 0.95)')
    .option('--alpha <a>', "lora_alpha of the squeezed adapter (default: the source LoRA's, or the rank)")
    .action(async (flags: Flags) => {
      const adapterDir = requiredFlag('adapter', flags.adapter, 'the PEFT adapter folder to squeeze');
      const rank = intFlag('rank', flags.rank);
      if (rank === undefined)
        throw new LorakitError('LK_INVALID_ARGUMENT', '--rank <r> is required: the rank to keep', { option: 'rank' });
      const out = requiredFlag('out', flags.out, 'the folder to write the squeezed adapter to');
      const energy = numberFlag('energy', flags.energy);
      const alpha = numberFlag('alpha', flags.alpha);
      const { loadModel } = await import('../models/load.ts');
      const { PeftModel, adaptable, loadAdapter, readAdapterConfig, squeezeAdapter } = await import('../peft/index.ts');
      const { shutdownRuntime } = await import('../runtime/index.ts');
      const saved = await readAdapterConfig(adapterDir);
      const base = flags.model ?? saved.base_model_name_or_path;
      const modelDir = requiredFlag('model', base, `the base model (${adapterDir} names none)`);
      const model = await loadModel(modelDir);
      try {
        const peft = new PeftModel(adaptable(model));
        await loadAdapter(peft, adapterDir);
        const r = await squeezeAdapter(peft, 'default', out, {
          rank,
          energy,
          alpha,
          baseModel: (saved.base_model_name_or_path as string | undefined) ?? modelDir,
        });
        for (const l of r.layers)
          console.log(
            `${l.path}: rank ${l.sourceRank ?? '-'} -> ${l.rank}, ${(100 * l.energy).toFixed(2)} % of the energy kept ` +
              `(${l.via})`,
          );
        console.log(
          `squeezed ${adapterDir} to r ${r.r}${Object.keys(r.rankPattern).length ? ' (per-layer ranks in rank_pattern)' : ''}, ` +
            `lora_alpha ${r.loraAlpha}: ${r.sourceParams.toLocaleString('en-US')} -> ${r.params.toLocaleString('en-US')} ` +
            `adapter parameters, written to ${out}`,
        );
      } finally {
        await model.close();
        await shutdownRuntime();
      }
    });
};
