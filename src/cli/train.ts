// `lorakit train --config run.yaml [--set key=value ...]`: fine-tune an adapter as the YAML says, then print where
// the adapter, checkpoints, metrics and plot were written.
import type { CommandModule } from './main.ts';

export const register: CommandModule['register'] = (cli) => {
  cli
    .command('train', 'Fine-tune an adapter from a YAML run config')
    .option('--config <file>', 'the run config (YAML)')
    .option(
      '--set <key=value>',
      'override a config value by dotted path, e.g. --set training.max_steps=10 (repeatable)',
    )
    .example('lorakit train --config run.yaml --set training.learning_rate=1e-4')
    .action(async (opts: { config?: string; set?: string | string[] }) => {
      const { LorakitError } = await import('../errors.ts');
      if (!opts.config) throw new LorakitError('LK_INVALID_ARGUMENT', 'train: --config <file> is required');
      const { loadRunConfig, runTraining } = await import('../train/index.ts');
      const { shutdownRuntime } = await import('../runtime/index.ts');
      const sets = opts.set === undefined ? [] : Array.isArray(opts.set) ? opts.set.map(String) : [String(opts.set)];
      const config = loadRunConfig(opts.config, sets);
      const abort = new AbortController();
      const onSigint = () => {
        console.error('\nlorakit: stopping after this step (a checkpoint is written)...');
        abort.abort();
      };
      process.once('SIGINT', onSigint);
      try {
        const out = await runTraining(config, { signal: abort.signal });
        for (const w of out.warnings) console.error(`warning: ${w}`);
        if (out.skippedRecords) console.error(`warning: ${out.skippedRecords} malformed records were skipped`);
        const r = out.result;
        console.log(
          `stopped: ${r.stopReason} after ${r.step} ` +
            `steps${r.bestEvalLoss !== null ? `; best eval loss ${r.bestEvalLoss.toFixed(4)} at step ${r.bestStep}` : ''}`,
        );
        console.log(`adapter:     ${out.adapterDir}`);
        console.log(`checkpoint:  ${out.checkpointDir}`);
        console.log(`metrics:     ${out.metricsFile}`);
        console.log(`plot:        ${out.plotFile}`);
      } finally {
        process.off('SIGINT', onSigint);
        await shutdownRuntime();
      }
    });
};
