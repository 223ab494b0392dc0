// `lorakit eval`: maps flags to `evaluateText()` (optionally through a loaded adapter) and prints loss and perplexity.
import type { CommandModule } from './main.ts';
import { loadCliAdapter } from './adapter.ts';
import { requiredFlag, intFlag } from './flags.ts';

interface Flags {
  model?: unknown;
  adapter?: unknown;
  data?: unknown;
  seqLen?: unknown;
  batchSize?: unknown;
  json?: boolean;
}

export const register: CommandModule['register'] = (cli) => {
  cli
    .command(
      'eval',
      'Mean token loss and perplexity of a causal LM (optionally with an adapter) on a text or JSONL file',
    )
    .option('--model <dir>', 'Hugging Face model folder (config.json, model.safetensors, tokenizer) or a .gguf file')
    .option('--adapter <dir>', 'PEFT adapter folder to evaluate with')
    .option('--data <file>', 'Plain-text file (one document) or .jsonl with a "text" field per record')
    .option('--seq-len <n>', "Tokens per window (default 256, or the model's position limit if smaller)")
    .option('--batch-size <n>', 'Windows per graph run', { default: 8 })
    .option('--json', 'Print one JSON object: loss, perplexity, tokens, windows, documents, seq_len')
    .action(async (flags: Flags) => {
      const modelDir = requiredFlag('model', flags.model, 'a Hugging Face model folder or a .gguf file');
      const data = requiredFlag('data', flags.data, 'a text or JSONL file', '<file>');
      const adapterDir =
        flags.adapter === undefined ? undefined : requiredFlag('adapter', flags.adapter, 'a PEFT adapter folder');
      const seqLen = intFlag('seq-len', flags.seqLen),
        batchSize = intFlag('batch-size', flags.batchSize);
      const { loadModel } = await import('../models/load.ts');
      const { HfTokenizer } = await import('../io/tokenizer.ts');
      const { evaluateText } = await import('../train/text-eval.ts');
      const { shutdownRuntime } = await import('../runtime/index.ts');
      const model = await loadModel(modelDir);
      try {
        const tokenizer = await HfTokenizer.fromDir(model.dir);
        let adapter: ReturnType<import('../peft/index.ts').PeftModel['generationAdapter']> | undefined;
        if (adapterDir !== undefined) {
          adapter = (await loadCliAdapter(model, adapterDir)).generationAdapter();
        }
        const r = await evaluateText(model, tokenizer, { data, seqLen, batchSize, adapter });
        if (flags.json) {
          console.log(
            JSON.stringify({
              loss: r.loss,
              perplexity: r.perplexity,
              tokens: r.tokens,
              windows: r.windows,
              documents: r.documents,
              seq_len: r.seqLen,
            }),
          );
        } else {
          console.log(
            `loss ${r.loss.toFixed(4)}  perplexity ${r.perplexity.toFixed(3)}  (${r.tokens} predicted tokens, ` +
              `${r.windows} windows of ${r.seqLen}, ${r.documents} document${r.documents === 1 ? '' : 's'})`,
          );
        }
      } finally {
        await model.close();
        await shutdownRuntime();
      }
    });
};
