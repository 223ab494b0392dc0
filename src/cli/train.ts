// `lorakit train --config run.yaml [--set key=value ...] [--print-config]`: fine-tune an adapter as the YAML says,
// then print where the adapter, checkpoints, metrics, plot and samples were written. Notices (data warnings,
// "resumed from") are printed as they come, before training starts. A YAML with `task: segmentation` is a U-Net
// segmentation run instead (train/segmentation-run.ts): adapter (or U-Net) folder, trainable count and Dice; one with
// `task: diffusion` trains a diffusion U-Net or a concept LoRA on it (train/diffusion-run.ts).
import { fileURLToPath } from 'node:url';
import type { CommandModule } from './main.ts';

/** The config reference shipped with lorakit (docs/config.md, generated from the run config schema). */
const CONFIG_REFERENCE = fileURLToPath(new URL('../../docs/config.md', import.meta.url));

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
        `  docs/config.md (${CONFIG_REFERENCE})\n\n` +
        '  With `task: segmentation` at the top, run.yaml adapts a diffusers UNet2DModel folder to binary\n' +
        '  segmentation instead (keys: base_model, output_dir, data.train / data.eval (safetensors with images and\n' +
        '  masks [n, 1, S, S]), adapter.method (lora, lora_c, conv_lora, cp_lora, dora_c, conv_dora, cp_dora, ... or\n' +
        '  full), adapter.r, adapter.lora_alpha, adapter.target_modules, training.steps / batch_size /\n' +
        '  learning_rate / schedule / seed; see docs/vision.md) and prints the adapter folder and the Dice.',
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
      const { loadRunConfig, runTraining, resolvedConfigYaml, runTaskOf } = await import('../train/index.ts');
      const task = runTaskOf(opts.config);
      if (task === 'diffusion') return trainDiffusion(opts.config, opts.printConfig === true);
      const sets = opts.set === undefined ? [] : Array.isArray(opts.set) ? opts.set.map(String) : [String(opts.set)];
      if (task === 'segmentation') return segmentation(opts.config, sets, !!opts.printConfig);
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
        if (r.evalOnStartLoss !== null) console.log(`eval loss at start ${r.evalOnStartLoss.toFixed(4)}`);
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

/** A `task: segmentation` run: print the resolved config, or run it and print its folder, size and Dice. */
async function segmentation(file: string, sets: string[], printConfig: boolean): Promise<void> {
  const { loadSegmentationConfig, runSegmentation } = await import('../train/index.ts');
  const config = loadSegmentationConfig(file, sets);
  if (printConfig) {
    const { stringify } = await import('yaml');
    process.stdout.write(stringify(config));
    return;
  }
  const { shutdownRuntime } = await import('../runtime/index.ts');
  try {
    const r = await runSegmentation(config);
    console.log(`${r.method === 'full' ? 'unet:   ' : 'adapter:'}     ${r.outputDir}`);
    console.log(`method:      ${r.method}${r.r !== null ? ` r=${r.r}` : ''}, ${r.trainable} trainable parameters`);
    console.log(`steps:       ${r.steps} in ${r.seconds.toFixed(1)} s`);
    console.log(`dice:        ${r.dice === null ? '(no data.eval)' : r.dice.toFixed(4)}`);
    console.log(`result:      ${r.resultFile}`);
  } finally {
    await shutdownRuntime();
  }
}
