// `lorakit train --config run.yaml [--set key=value ...] [--print-config]`: fine-tune an adapter as the YAML says,
// then print where the adapter, checkpoints, metrics, plot and samples were written. A run.yaml with `task: diffusion`
// trains a diffusion U-Net or a concept LoRA on it instead (src/train/diffusion-run.ts). Notices (data warnings,
// "resumed from") are printed as they come, before training starts.
import { fileURLToPath } from 'node:url';
import type { CommandModule } from './main.ts';

/** The config reference shipped with lorakit (docs/config.md, generated from the run config schema). */
const CONFIG_REFERENCE = fileURLToPath(new URL('../../docs/config.md', import.meta.url));

/** Whether run.yaml says `task: diffusion` (read before the causal-LM schema, which has no task key). */
async function diffusionYaml(file: string): Promise<boolean> {
  const { existsSync, readFileSync } = await import('node:fs');
  if (!existsSync(file)) return false; // the causal-LM path reports the missing file
  const { parse } = await import('yaml');
  try {
    const { isDiffusionRun } = await import('../train/diffusion-run.ts');
    return isDiffusionRun(parse(readFileSync(file, 'utf8')));
  } catch {
    return false; // malformed YAML: the causal-LM path reports it with its position
  }
}

/** A diffusion run: a U-Net from scratch or a concept LoRA on one (src/train/diffusion-run.ts). */
async function trainDiffusion(file: string, print: boolean): Promise<void> {
  const { loadDiffusionRun, runDiffusionTraining } = await import('../train/diffusion-run.ts');
  const config = loadDiffusionRun(file);
  if (print) {
    const { stringify } = await import('yaml');
    process.stdout.write(stringify(config));
    return;
  }
  const { shutdownRuntime } = await import('../runtime/index.ts');
  try {
    const out = await runDiffusionTraining(config);
    console.log(`stopped: ${out.result.stopReason} after ${out.result.step} steps`);
    console.log(`${config.adapter ? 'adapter' : 'unet'}:        ${out.outDir}`);
  } finally {
    await shutdownRuntime();
  }
}

export const register: CommandModule['register'] = (cli) => {
  cli
    .command('train', 'Fine-tune an adapter from a YAML run config')
    .usage(
      'train --config run.yaml [--set key=value ...] [--print-config]\n\n' +
        '  Fine-tunes an adapter as run.yaml says. Every key of run.yaml, with its type, default and meaning:\n' +
        `  docs/config.md (${CONFIG_REFERENCE})`,
    )
    .option('--config <file>', 'the run config (YAML); its keys: docs/config.md')
    .option(
      '--set <key=value>',
      'override a config value by dotted path, e.g. --set training.max_steps=10 (repeatable)',
    )
    .option('--print-config', 'print the resolved config (every default filled in) as YAML and exit')
    .example('lorakit train --config run.yaml --set training.learning_rate=1e-4')
    .example('lorakit train --config run.yaml --print-config')
    .action(async (opts: { config?: string; set?: string | string[]; printConfig?: boolean }) => {
      const { LorakitError } = await import('../errors.ts');
      if (!opts.config) throw new LorakitError('LK_INVALID_ARGUMENT', 'train: --config <file> is required');
      const { loadRunConfig, runTraining, resolvedConfigYaml } = await import('../train/index.ts');
      if (await diffusionYaml(opts.config)) return trainDiffusion(opts.config, opts.printConfig === true);
      const sets = opts.set === undefined ? [] : Array.isArray(opts.set) ? opts.set.map(String) : [String(opts.set)];
      const config = loadRunConfig(opts.config, sets);
      if (opts.printConfig) {
        process.stdout.write(resolvedConfigYaml(config));
        return;
      }
      const { shutdownRuntime } = await import('../runtime/index.ts');
      const abort = new AbortController();
      const onSigint = () => {
        console.error('\nlorakit: stopping after this step (a checkpoint is written)...');
        abort.abort();
      };
      process.once('SIGINT', onSigint);
      try {
        const out = await runTraining(config, {
          signal: abort.signal,
          onNotice: (n) => (n.level === 'warning' ? console.error(`warning: ${n.message}`) : console.log(n.message)),
        });
        const r = out.result;
        console.log(
          `stopped: ${r.stopReason} after ${r.step} ` +
            `steps${r.bestEvalLoss !== null ? `; best eval loss ${r.bestEvalLoss.toFixed(4)} at step ${r.bestStep}` : ''}`,
        );
        console.log(`adapter:     ${out.adapterDir}`);
        console.log(`checkpoint:  ${out.checkpointDir}`);
        console.log(`metrics:     ${out.metricsFile}`);
        console.log(`plot:        ${out.plotFile}`);
        if (out.samplesDir) console.log(`samples:     ${out.samplesDir}`);
      } finally {
        process.off('SIGINT', onSigint);
        await shutdownRuntime();
      }
    });
};
