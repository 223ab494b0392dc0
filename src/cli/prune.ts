// `lorakit prune --config run.yaml --out <dir>`: maps flags to `runPrune()` (LoRAPrune: train a LoRA with masks on
// heads and channels, then merge and slice) and prints the kept structure, sizes, speed and losses.
import { join } from 'node:path';
import type { CommandModule } from './main.ts';
import { numberFlag, requiredFlag } from './flags.ts';

interface Flags {
  config?: unknown;
  out?: unknown;
  set?: unknown;
  ratio?: unknown;
  evalData?: unknown;
  force?: boolean;
}

export const register: CommandModule['register'] = (cli) => {
  cli
    .command('prune', 'LoRAPrune: train a LoRA while pruning heads and channels, then write the smaller merged model')
    .usage(
      'prune --config run.yaml --out <dir> [--ratio 0.5] [--eval-data file] [--set key=value ...]\n\n' +
        "  Trains the run config's adapter (LoRA on the Llama projections) with LoRAPrune's masks, merges it and\n" +
        "  writes the pruned model as a Hugging Face folder. training.max_steps is the pruning schedule's length.",
    )
    .option('--config <file>', 'the run config (YAML; docs/config.md)')
    .option('--out <dir>', 'the folder to write the pruned model to')
    .option('--ratio <f>', 'fraction of the attention groups and MLP channels of each layer to remove (default 0.5)')
    .option('--eval-data <file>', 'text or JSONL file to measure loss and speed on (default: data.validation_file)')
    .option('--set <key=value>', 'override a config value by dotted path (repeatable)')
    .option('--force', 'replace --out if it exists')
    .action(async (flags: Flags) => {
      const config = requiredFlag('config', flags.config, 'the run config', '<file>');
      const out = requiredFlag('out', flags.out, 'the folder to write the pruned model to');
      const ratio = numberFlag('ratio', flags.ratio);
      const evalData =
        flags.evalData === undefined ? undefined : requiredFlag('eval-data', flags.evalData, 'a text file', '<file>');
      const sets =
        flags.set === undefined ? [] : Array.isArray(flags.set) ? flags.set.map(String) : [String(flags.set)];
      const { loadRunConfig, runPrune } = await import('../train/index.ts');
      const { shutdownRuntime } = await import('../runtime/index.ts');
      try {
        const c = loadRunConfig(config, sets);
        const r = await runPrune(
          c,
          { out, evalData, overwrite: flags.force === true, loraprune: ratio === undefined ? {} : { ratio } },
          {
            onNotice: (n) => (n.level === 'warning' ? console.error(`warning: ${n.message}`) : console.log(n.message)),
          },
        );
        const p = r.report;
        const mb = (b: number) => `${(b / 2 ** 20).toFixed(2)} MiB`;
        console.log(
          `kept per layer: ${p.kept.heads.join('/')} of ${r.plan.original.num_key_value_heads} KV-head groups, ` +
            `${p.kept.channels.join('/')} of ${r.plan.original.intermediate_size} MLP channels`,
        );
        console.log(
          `size: ${mb(p.bytes.base)} -> ${mb(p.bytes.pruned)}; parameters ${p.parameters.base.toLocaleString('en-US')} ` +
            `-> ${p.parameters.pruned.toLocaleString('en-US')}`,
        );
        if (p.eval) {
          const row = (what: string, m: { loss: number; tokensPerSecond: number }) =>
            console.log(`${what.padEnd(22)} loss ${m.loss.toFixed(4)}  ${Math.round(m.tokensPerSecond)} tokens/s`);
          row('base:', p.eval.base);
          row('base + LoRA:', p.eval.adapted);
          row('pruned (LoRA merged):', p.eval.pruned);
        }
        console.log(`pruned model: ${p.dir}`);
        console.log(`adapter (on the unpruned base): ${r.run.adapterDir}`);
        console.log(`report: ${join(c.output_dir, 'prune_report.json')}`);
      } finally {
        await shutdownRuntime();
      }
    });
};
