// `lorakit eval`: maps flags to `evaluateText()` (optionally through a loaded adapter) and prints loss and perplexity;
// with --ranks, to `evaluateRanks()`: the adapter truncated to each rank, and the AURAC of the losses. An Arrow router
// folder (arrow_config.json, written by `lorakit adaptive-merge --method arrow`) as --adapter routes every token among
// its adapters (adaptive.arrowAdapter).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { LorakitError } from '../errors.ts';
import type { CommandModule } from './main.ts';
import { loadCliAdapter } from './adapter.ts';
import { intFlag, intListFlag, requiredFlag } from './flags.ts';

interface Flags {
  model?: unknown;
  adapter?: unknown;
  data?: unknown;
  seqLen?: unknown;
  batchSize?: unknown;
  ranks?: unknown;
  json?: boolean;
}

export const register: CommandModule['register'] = (cli) => {
  cli
    .command(
      'eval',
      'Mean token loss and perplexity of a causal LM (optionally with an adapter) on a text or JSONL file',
    )
    .option('--model <dir>', 'Hugging Face model folder (config.json, model.safetensors, tokenizer) or a .gguf file')
    .option('--adapter <dir>', 'PEFT adapter folder to evaluate with, or an Arrow router folder (per-token routing)')
    .option('--data <file>', 'Plain-text file (one document) or .jsonl with a "text" field per record')
    .option('--seq-len <n>', "Tokens per window (default 256, or the model's position limit if smaller)")
    .option('--batch-size <n>', 'Windows per graph run', { default: 8 })
    .option(
      '--ranks <list>',
      'Evaluate the adapter truncated to each rank (e.g. 1,2,4,8: its first t components, lora_alpha kept) and ' +
        "report MatryoshkaLoRA's AURAC of the losses",
    )
    .option(
      '--json',
      'Print one JSON object: loss, perplexity, tokens, windows, documents, seq_len (with --ranks: per rank)',
    )
    .action(async (flags: Flags) => {
      const modelDir = requiredFlag('model', flags.model, 'a Hugging Face model folder or a .gguf file');
      const data = requiredFlag('data', flags.data, 'a text or JSONL file', '<file>');
      const adapterDir =
        flags.adapter === undefined ? undefined : requiredFlag('adapter', flags.adapter, 'a PEFT adapter folder');
      const seqLen = intFlag('seq-len', flags.seqLen),
        batchSize = intFlag('batch-size', flags.batchSize);
      const ranks = intListFlag('ranks', flags.ranks);
      if (ranks && adapterDir === undefined)
        requiredFlag('adapter', undefined, '--ranks truncates an adapter, so give the adapter folder');
      const arrow = adapterDir !== undefined && existsSync(join(adapterDir, 'arrow_config.json'));
      if (ranks && arrow)
        throw new LorakitError(
          'LK_INVALID_ARGUMENT',
          `--ranks truncates one LoRA; ${adapterDir} is an Arrow router folder (arrow_config.json)`,
          { option: 'ranks' },
        );
      const { loadModel } = await import('../models/load.ts');
      const { HfTokenizer } = await import('../io/tokenizer.ts');
      const { evaluateRanks, evaluateText } = await import('../train/text-eval.ts');
      const { shutdownRuntime } = await import('../runtime/index.ts');
      const model = await loadModel(modelDir);
      try {
        const tokenizer = await HfTokenizer.fromDir(model.dir);
        let adapter: { hooks: () => import('../nn/index.ts').ModuleHooks } | undefined;
        let peft: import('../peft/index.ts').PeftModel | undefined;
        if (arrow) {
          const { arrowAdapter, readArrowFolder } = await import('../adaptive/index.ts');
          const { pool, options } = await readArrowFolder(adapterDir!);
          adapter = arrowAdapter(pool, options);
        } else if (adapterDir !== undefined) {
          peft = await loadCliAdapter(model, adapterDir);
          adapter = peft.generationAdapter();
        }
        if (ranks) {
          const r = await evaluateRanks(model, tokenizer, peft!, 'default', ranks, { data, seqLen, batchSize });
          if (flags.json) {
            console.log(
              JSON.stringify({
                ranks: r.ranks,
                aurac_loss: r.aurac,
                tokens: r.tokens,
                windows: r.windows,
                documents: r.documents,
                seq_len: r.seqLen,
              }),
            );
          } else {
            for (const x of r.ranks)
              console.log(`rank ${x.rank}  loss ${x.loss.toFixed(4)}  perplexity ${x.perplexity.toFixed(3)}`);
            console.log(
              `AURAC of the loss over ranks ${r.ranks.map((x) => x.rank).join(', ')}: v1 ${r.aurac.v1.toFixed(4)} ` +
                `(linear ranks)  v2 ${r.aurac.v2.toFixed(4)} (log2 ranks)  (${r.tokens} predicted tokens)`,
            );
          }
          return;
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
