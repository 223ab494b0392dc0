// `lorakit loram --config run.yaml`: maps flags to `runLoram()` (LoRAM: prune the base, train the run's LoRA on the
// pruned model, recover it to the full base, evaluate there) and prints the kept structure, sizes and the full-base
// losses without adapter, with the LoRAM adapter and with a LoRA trained on the full base. With --adapter instead of
// --config it only recovers: an adapter trained on a pruned folder (`recoverAdapterFolder`), written for the full
// model.
import { join } from 'node:path';
import type { CommandModule } from './main.ts';
import { intFlag, numberFlag, requiredFlag } from './flags.ts';

interface Flags {
  config?: unknown;
  set?: unknown;
  ratio?: unknown;
  evalData?: unknown;
  calibrationBatches?: unknown;
  skipFirst?: unknown;
  skipLast?: unknown;
  baseline?: boolean;
  adapter?: unknown;
  prunedModel?: unknown;
  model?: unknown;
  out?: unknown;
}

export const register: CommandModule['register'] = (cli) => {
  cli
    .command('loram', 'LoRAM: train a LoRA on a pruned base, recover it to the full base and evaluate it there')
    .usage(
      'loram --config run.yaml [--ratio 0.5] [--eval-data file] [--no-baseline] [--set key=value ...]\n' +
        '       loram --adapter <dir> --pruned-model <dir> --model <dir> --out <dir>\n\n' +
        '  Prunes KV-head groups and MLP channels of every decoder layer by first-order Taylor scores, trains the run\n' +
        "  config's LoRA on the pruned model, writes it recovered for the full model (zero rows/columns where pruned)\n" +
        '  to <output_dir>/recovered, and compares full-model losses with a LoRA trained on the full model.\n' +
        '  With --adapter: only recover that adapter, trained on the pruned folder --pruned-model (written by lorakit,\n' +
        '  with its plan), for the full model --model, into --out.',
    )
    .option('--config <file>', 'the run config (YAML; docs/config.md)')
    .option('--ratio <f>', 'fraction of the attention groups and MLP channels of each layer to remove (default 0.5)')
    .option('--eval-data <file>', 'text or JSONL file to measure the losses on (default: data.validation_file)')
    .option('--calibration-batches <n>', 'training batches whose mean gradient scores the groups (default 8)')
    .option('--skip-first <n>', 'decoder layers left unpruned at the start (default 0)')
    .option('--skip-last <n>', 'decoder layers left unpruned at the end (default 0)')
    .option('--no-baseline', 'do not train the LoRA on the full model for comparison')
    .option('--set <key=value>', 'override a config value by dotted path (repeatable)')
    .option('--adapter <dir>', 'recover only: a PEFT adapter folder trained on --pruned-model')
    .option('--pruned-model <dir>', 'recover only: the pruned model folder the adapter was trained on')
    .option('--model <dir>', 'recover only: the full model the pruned folder was cut from')
    .option('--out <dir>', 'recover only: the folder to write the recovered adapter to')
    .action(async (flags: Flags) => {
      if (flags.adapter !== undefined && flags.config === undefined) return recoverOnly(flags);
      const config = requiredFlag('config', flags.config, 'the run config', '<file>');
      const ratio = numberFlag('ratio', flags.ratio) ?? 0.5;
      const evalData =
        flags.evalData === undefined ? undefined : requiredFlag('eval-data', flags.evalData, 'a text file', '<file>');
      const calibrationBatches = intFlag('calibration-batches', flags.calibrationBatches);
      const skipFirst = intFlag('skip-first', flags.skipFirst, 0);
      const skipLast = intFlag('skip-last', flags.skipLast, 0);
      const sets =
        flags.set === undefined ? [] : Array.isArray(flags.set) ? flags.set.map(String) : [String(flags.set)];
      const { loadRunConfig, runLoram } = await import('../train/index.ts');
      const { shutdownRuntime } = await import('../runtime/index.ts');
      try {
        const c = loadRunConfig(config, sets);
        const r = await runLoram(
          c,
          { ratio, evalData, calibrationBatches, skipFirst, skipLast, baseline: flags.baseline !== false },
          {
            onNotice: (n) => (n.level === 'warning' ? console.error(`warning: ${n.message}`) : console.log(n.message)),
          },
        );
        const o = r.plan.original;
        console.log(
          `kept per layer: ${r.plan.layers.map((l) => l.heads.length).join('/')} of ${o.num_key_value_heads} ` +
            `KV-head groups, ${r.plan.layers.map((l) => l.channels.length).join('/')} of ${o.intermediate_size} ` +
            'MLP channels',
        );
        const n = (x: number) => x.toLocaleString('en-US');
        console.log(`parameters: ${n(r.parameters.full)} full, ${n(r.parameters.pruned)} pruned`);
        const t = (what: string, trainable: number, s: number) =>
          console.log(`${what.padEnd(22)} ${n(trainable)} trainable values, ${s.toFixed(1)} s`);
        t('LoRAM (pruned base):', r.trainable.loram, r.seconds.loram);
        if (r.trainable.lora !== null) t('LoRA (full base):', r.trainable.lora, r.seconds.lora!);
        if (r.eval) {
          const row = (what: string, loss: number) => console.log(`${what.padEnd(30)} loss ${loss.toFixed(4)}`);
          row('full base, no adapter:', r.eval.fullBase);
          row('full base + LoRAM (recovered):', r.eval.loram);
          if (r.eval.lora !== null) row('full base + LoRA:', r.eval.lora);
          row('pruned base, no adapter:', r.eval.prunedBase);
          row('pruned base + LoRAM adapter:', r.eval.prunedWithAdapter);
        }
        console.log(`pruned model: ${r.prunedModel}`);
        console.log(`recovered adapter (for ${c.model}): ${r.recoveredDir}`);
        console.log(`report: ${join(c.output_dir, 'loram_report.json')}`);
      } finally {
        await shutdownRuntime();
      }
    });
};

/** `lorakit loram --adapter ...`: recovers one adapter folder and says where it went. */
async function recoverOnly(flags: Flags): Promise<void> {
  const adapter = requiredFlag('adapter', flags.adapter, 'the adapter trained on the pruned model');
  const prunedModel = requiredFlag('pruned-model', flags.prunedModel, 'the pruned model the adapter was trained on');
  const model = requiredFlag('model', flags.model, 'the full model to recover the adapter for');
  const out = requiredFlag('out', flags.out, 'the folder to write the recovered adapter to');
  const { recoverAdapterFolder } = await import('../train/index.ts');
  const { shutdownRuntime } = await import('../runtime/index.ts');
  try {
    await recoverAdapterFolder({ prunedModel, adapter, model, out });
    console.log(`recovered adapter (for ${model}): ${out}`);
  } finally {
    await shutdownRuntime();
  }
}
