// `lorakit demo`: trains a LoRA adapter on Brown-corpus fiction over the byte-level base model that ships in
// models/demo-base/, with no download; prints progress, the adapter folder, a sample before/after, and as its last
// line `held-out loss <before> -> <after>`. The work is `runDemo` (src/demo/run.ts); this file maps flags onto it.
import type { CommandModule } from './main.ts';
import { intFlag, quantizeFlag } from './flags.ts';

interface DemoFlags {
  steps?: string | number;
  seed?: string | number;
  out?: string;
  model?: string;
  quantize?: string;
  quiet?: boolean;
}

export const register: CommandModule['register'] = (cli) => {
  cli
    .command(
      'demo',
      'Train a LoRA adapter on Brown-corpus fiction over the bundled byte-level Llama (no download, ~2 minutes on 2 ' +
        'cores)',
    )
    .option('--steps <n>', 'Training steps (default 100)')
    .option('--seed <n>', 'Seed of the adapter init, data order and sampling (default 0)')
    .option('--out <dir>', 'Run folder; the adapter is saved in <dir>/final (default: a new temp folder)')
    .option('--model <dir>', 'Base model folder (default: models/demo-base)')
    .option('--quantize <mode>', 'Quantize the frozen base: none, int8 or q4 (default none)')
    .option('--quiet', 'Print only the last line')
    .action(async (flags: DemoFlags) => {
      const steps = intFlag('steps', flags.steps, 1);
      const seed = intFlag('seed', flags.seed, 0);
      const quantize = quantizeFlag(flags.quantize);
      const { runDemo } = await import('../demo/index.ts');
      const { shutdownRuntime } = await import('../runtime/index.ts');
      const say = (line: string) => {
        if (!flags.quiet) console.log(line);
      };
      try {
        const r = await runDemo({
          ...(steps !== undefined ? { steps } : {}),
          ...(seed !== undefined ? { seed } : {}),
          ...(flags.out ? { outDir: flags.out } : {}),
          ...(flags.model ? { modelDir: flags.model } : {}),
          quantize,
          log: flags.quiet ? undefined : say,
        });
        say('');
        say(`prompt: ${JSON.stringify(r.prompt)}`);
        say(`sample before (base model):   ${JSON.stringify(r.prompt + r.sampleBefore)}`);
        say(`sample after (with adapter):  ${JSON.stringify(r.prompt + r.sampleAfter)}`);
        const drop = r.heldOutBefore - r.heldOutAfter;
        say(
          `held-out fiction loss fell by ${drop.toFixed(4)} nats/byte ` +
            `(${((100 * drop) / r.heldOutBefore).toFixed(1)} %; perplexity ${Math.exp(r.heldOutBefore).toFixed(3)} ` +
            `-> ${Math.exp(r.heldOutAfter).toFixed(3)}) in ${r.seconds.toFixed(0)} s`,
        );
        console.log(`held-out loss ${r.heldOutBefore.toFixed(4)} -> ${r.heldOutAfter.toFixed(4)}`);
      } finally {
        await shutdownRuntime();
      }
    });
};
