// `lorakit merge`: maps flags to loadAdapter + `exportMerged()` and prints what was written.
import type { CommandModule } from './main.ts';
import { loadCliAdapter } from './adapter.ts';
import { requiredFlag } from './flags.ts';

interface Flags {
  model?: unknown;
  adapter?: unknown;
  out?: unknown;
  force?: boolean;
}

export const register: CommandModule['register'] = (cli) => {
  cli
    .command('merge', 'Merge a PEFT adapter into its base model and write a Hugging Face model folder')
    .option('--model <dir>', 'Base model folder (config.json, model.safetensors, tokenizer) or a .gguf file')
    .option('--adapter <dir>', 'PEFT adapter folder (adapter_config.json, adapter_model.safetensors)')
    .option('--out <dir>', 'Folder to write the merged model to (created whole, or not at all)')
    .option('--force', 'Replace --out if it exists and holds only a model lorakit exported')
    .action(async (flags: Flags) => {
      const modelDir = requiredFlag('model', flags.model, 'the base Hugging Face model folder');
      const adapterDir = requiredFlag('adapter', flags.adapter, 'a PEFT adapter folder');
      const out = requiredFlag('out', flags.out, 'the folder to write the merged model to');
      const { loadModel } = await import('../models/load.ts');
      const { checkExportTarget, exportMerged } = await import('../peft/export.ts');
      // before the model loads: an --out that is or holds an input, or that --force may not replace, fails at once
      await checkExportTarget(out, [modelDir, adapterDir], flags.force === true);
      const model = await loadModel(modelDir);
      try {
        const peft = await loadCliAdapter(model, adapterDir);
        const r = await exportMerged(model, peft, out, { overwrite: flags.force === true, inputs: [adapterDir] });
        console.log(
          `merged ${adapterDir} into ${modelDir}: ${r.merged.length} of ${r.tensors} tensors changed, written to ` +
            `${out} (model.safetensors, ${r.files.join(', ')})`,
        );
      } finally {
        await model.close();
      }
    });
};
