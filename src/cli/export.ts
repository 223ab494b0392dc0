// `lorakit export --format gguf`: a PEFT LoRA adapter as a llama.cpp adapter file (`llama-cli --lora`), or with
// --merge the base with the adapter merged (or the base alone without --adapter) as a GGUF model in F16 or Q8_0.
import { existsSync } from 'node:fs';
import { LorakitError } from '../errors.ts';
import { requiredFlag } from './flags.ts';
import type { CommandModule } from './main.ts';

interface Flags {
  format?: unknown;
  model?: unknown;
  adapter?: unknown;
  out?: unknown;
  merge?: boolean;
  type?: unknown;
  force?: boolean;
}

const bad = (flag: string, msg: string) => new LorakitError('LK_INVALID_ARGUMENT', msg, { option: flag });

export const register: CommandModule['register'] = (cli) => {
  cli
    .command('export', 'Write an adapter (or, with --merge, the merged model) in another format: gguf for llama.cpp')
    .option('--format <name>', 'Output format: gguf')
    .option('--model <dir>', 'Base model folder or .gguf file the adapter was trained on')
    .option('--adapter <dir>', 'PEFT LoRA adapter folder (adapter_config.json, adapter_model.safetensors)')
    .option('--out <file>', 'The .gguf file to write')
    .option('--merge', 'Write the model with the adapter merged (a GGUF base only) instead of the adapter')
    .option('--type <type>', 'With --merge: f16 (default) or q8_0 for the 2-D weights')
    .option('--force', 'Replace --out if it exists')
    .action(async (flags: Flags) => {
      const format = requiredFlag('format', flags.format, 'the output format (gguf)', '<name>');
      if (format !== 'gguf') throw bad('format', `--format expects gguf, got ${JSON.stringify(format)}`);
      const modelPath = requiredFlag('model', flags.model, 'the base model folder or .gguf file');
      const out = requiredFlag('out', flags.out, 'the .gguf file to write', '<file>');
      const type = flags.type === undefined ? 'f16' : String(flags.type).toLowerCase();
      if (type !== 'f16' && type !== 'q8_0')
        throw bad('type', `--type expects f16 or q8_0, got ${JSON.stringify(flags.type)}`);
      if (flags.type !== undefined && !flags.merge) throw bad('type', '--type applies to --merge only');
      if (!flags.merge && flags.adapter === undefined)
        throw bad('adapter', '--adapter <dir> is required: the PEFT LoRA adapter folder to export');
      if (existsSync(out) && !flags.force) throw bad('out', `--out ${out} exists; pass --force to replace it`);
      const { loadModel } = await import('../models/load.ts');
      const { exportAdapterGguf, exportMergedGguf } = await import('../peft/gguf-export.ts');
      const model = await loadModel(modelPath);
      try {
        const adapter = typeof flags.adapter === 'string' ? flags.adapter : undefined;
        if (!flags.merge) {
          const r = await exportAdapterGguf(model, adapter!, out);
          console.log(`wrote ${out}: llama.cpp LoRA adapter, ${r.modules.length} weights, alpha ${r.alpha}`);
          return;
        }
        const { loadCliAdapter } = await import('./adapter.ts');
        const peft = adapter ? await loadCliAdapter(model, adapter) : undefined;
        const r = await exportMergedGguf(model, peft, out, { type: type === 'q8_0' ? 'Q8_0' : 'F16' });
        console.log(`wrote ${out}: GGUF model (${type.toUpperCase()}), ${r.tensors} tensors`);
      } finally {
        await model.close();
      }
    });
};
