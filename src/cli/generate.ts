// `lorakit generate`: maps flags to `generate()` and streams the text to stdout as tokens arrive.
import { LorakitError } from '../errors.ts';
import type { CommandModule } from './main.ts';
import { loadCliAdapter } from './adapter.ts';
import { requiredFlag, numberFlag, quantizeFlag } from './flags.ts';

interface Flags {
  model?: string;
  prompt?: string | number;
  maxNewTokens?: unknown;
  temperature?: unknown;
  topK?: unknown;
  topP?: unknown;
  repetitionPenalty?: unknown;
  seed?: unknown;
  stop?: string | number | (string | number)[];
  system?: string | number;
  chat?: boolean;
  adapter?: unknown;
  quantize?: unknown;
}

export const register: CommandModule['register'] = (cli) => {
  cli
    .command('generate', 'Generate text from a prompt with a causal LM folder, streaming it to stdout')
    .option('--model <dir>', 'Hugging Face model folder (config.json, model.safetensors, tokenizer) or a .gguf file')
    .option('--prompt <text>', 'The prompt')
    .option('--chat', "Render the prompt as a user message with the model's chat template")
    .option('--system <text>', 'With --chat: a system message before the prompt')
    .option('--max-new-tokens <n>', 'New tokens at most', { default: 64 })
    .option('--temperature <t>', 'Sampling temperature (0 = greedy, the default)')
    .option('--top-k <k>', 'Sample among the k most likely tokens')
    .option('--top-p <p>', 'Sample among the most likely tokens whose probability reaches p')
    .option('--repetition-penalty <r>', "transformers' repetition penalty (> 1 discourages repeats)")
    .option('--seed <n>', 'Seed for sampling (default: random)')
    .option('--stop <text>', 'Stop before this text (repeatable)')
    .option('--quantize <mode>', "Hold the base's frozen Linears quantized: none, int8 or q4 (default none)")
    .option('--adapter <dir>', "PEFT adapter folder to generate with (applied through the model's hooks, unmerged)")
    .action(async (flags: Flags) => {
      const modelDir = requiredFlag('model', flags.model, 'a Hugging Face model folder or a .gguf file');
      if (flags.prompt === undefined || typeof flags.prompt === 'boolean')
        throw new LorakitError('LK_INVALID_ARGUMENT', '--prompt <text> is required', { option: 'prompt' });
      const prompt = String(flags.prompt);
      const quantize = quantizeFlag(flags.quantize);
      const { loadModel, quantizeModel } = await import('../models/index.ts');
      const { generate } = await import('../models/generate.ts');
      const { HfTokenizer, loadChatTemplate } = await import('../io/index.ts');
      const { shutdownRuntime } = await import('../runtime/index.ts');
      const loaded = await loadModel(modelDir);
      try {
        const model = await quantizeModel(loaded, quantize);
        const tokenizer = await HfTokenizer.fromDir(model.dir);
        let input: { prompt: string } | { messages: { role: string; content: string }[]; chatTemplate: string };
        if (flags.chat) {
          const messages = [
            ...(flags.system !== undefined ? [{ role: 'system', content: String(flags.system) }] : []),
            { role: 'user', content: prompt },
          ];
          input = { messages, chatTemplate: await loadChatTemplate(model.dir) };
        } else {
          input = { prompt };
        }
        let adapter: ReturnType<import('../peft/index.ts').PeftModel['generationAdapter']> | undefined;
        if (flags.adapter !== undefined) {
          if (typeof flags.adapter !== 'string')
            throw new LorakitError('LK_INVALID_ARGUMENT', '--adapter <dir> expects a PEFT adapter folder', {
              option: 'adapter',
            });
          adapter = (await loadCliAdapter(model, flags.adapter)).generationAdapter();
        }
        const stop =
          flags.stop === undefined ? undefined : (Array.isArray(flags.stop) ? flags.stop : [flags.stop]).map(String);
        await generate(model, tokenizer, {
          ...input,
          adapter,
          maxNewTokens: numberFlag('max-new-tokens', flags.maxNewTokens),
          temperature: numberFlag('temperature', flags.temperature),
          topK: numberFlag('top-k', flags.topK),
          topP: numberFlag('top-p', flags.topP),
          repetitionPenalty: numberFlag('repetition-penalty', flags.repetitionPenalty),
          seed: numberFlag('seed', flags.seed),
          stop,
          onToken: (piece) => {
            if (piece) process.stdout.write(piece);
          },
        });
        process.stdout.write('\n');
      } finally {
        await loaded.close();
        await shutdownRuntime();
      }
    });
};
