// `lorakit adaptive-merge`: maps flags to adaptive/'s adaptiveMergeFolders (LoraHub, AdaMerging, π-Tuning, the
// Recycling study's method, Arrow) and prints what was written. A sibling of merge-adapters, not one of its
// --combination values: these methods need a base model and target data and they train (docs/decisions.md).
import { readFile } from 'node:fs/promises';
import { LorakitError } from '../errors.ts';
import type { CommandModule } from './main.ts';
import { intFlag, numberFlag, requiredFlag } from './flags.ts';

interface Flags {
  model?: unknown;
  adapter?: unknown;
  data?: unknown;
  method?: unknown;
  out?: unknown;
  samples?: unknown;
  seqLen?: unknown;
  batch?: unknown;
  steps?: unknown;
  lr?: unknown;
  budget?: unknown;
  topK?: unknown;
  select?: unknown;
  targetAdapter?: unknown;
  closeness?: unknown;
  arrowTopK?: unknown;
  routerTemperature?: unknown;
  force?: boolean;
}

const bad = (flag: string, msg: string) => new LorakitError('LK_INVALID_ARGUMENT', msg, { option: flag });

export const register: CommandModule['register'] = (cli) => {
  cli
    .command(
      'adaptive-merge',
      'Merge recycled LoRAs with coefficients learned on a small target set ' +
        '(LoraHub, AdaMerging, π-Tuning, Arrow, ...)',
    )
    .option('--model <dir>', 'Base model folder the adapters were trained on')
    .option('--adapter <dir>', 'A PEFT LoRA folder of the pool; repeat for each adapter')
    .option('--data <file>', 'Target text (UTF-8), cut into --samples chunks; every fifth chunk is validation')
    .option('--method <m>', "lorahub, adamerging, adamerging-layer, pi-tuning, recycle (the study's method) or arrow", {
      default: 'recycle',
    })
    .option('--out <dir>', 'Folder to write to: a PEFT LoRA folder, or for arrow a router folder (new or empty)')
    .option('--samples <n>', 'Target samples (the study: 100 = 80 train + 20 validation)', { default: 100 })
    .option('--seq-len <n>', 'Tokens per sample window', { default: 128 })
    .option('--batch <n>', 'Windows per batch', { default: 4 })
    .option('--steps <n>', "Gradient methods: Adam steps (default: the method's, 100)")
    .option('--lr <x>', "Gradient methods: learning rate (default: the method's: 5e-2, π-Tuning 1e-4)")
    .option('--budget <n>', 'lorahub: loss evaluations of the CMA-ES search', { default: 100 })
    .option('--top-k <n>', 'LoRAs a selection keeps (default: pi-tuning 20, otherwise 30, as the study)')
    .option(
      '--select <s>',
      'Select the pool first: evaluation, random, quasi-fisher (π-Tuning) or closeness (needs --target-adapter); ' +
        'pi-tuning with --target-adapter defaults to quasi-fisher',
    )
    .option('--target-adapter <dir>', 'quasi-fisher, closeness: a LoRA trained on the target task to compare with')
    .option('--closeness <v>', "closeness: the study's variant: cosine, clamp, clamp_pm, abs or quasi_fim", {
      default: 'cosine',
    })
    .option('--arrow-top-k <n>', 'arrow: adapters routed per token (PEFT top_k)', { default: 3 })
    .option('--router-temperature <t>', 'arrow: softmax temperature (PEFT router_temperature)', { default: 1 })
    .option('--force', 'Replace the result in an existing output folder')
    .action(async (flags: Flags) => {
      const raw = flags.adapter === undefined ? [] : [flags.adapter].flat();
      if (raw.length === 0 || raw.some((v) => typeof v !== 'string'))
        throw bad('adapter', '--adapter <dir> is required (repeat it for each adapter of the pool)');
      const model = requiredFlag('model', flags.model, 'the base model folder');
      const data = requiredFlag('data', flags.data, 'the target text file', '<file>');
      const out = requiredFlag('out', flags.out, 'the folder to write the result to');
      const { ADAPTIVE_METHODS, adaptiveMergeFolders, CLOSENESS_VARIANTS, SELECTIONS } = await import(
        '../adaptive/index.ts'
      );
      const method = String(flags.method);
      if (!(ADAPTIVE_METHODS as readonly string[]).includes(method))
        throw bad('method', `--method expects one of ${ADAPTIVE_METHODS.join(', ')}, got "${method}"`);
      const select = flags.select === undefined ? undefined : String(flags.select);
      if (select !== undefined && !(SELECTIONS as readonly string[]).includes(select))
        throw bad('select', `--select expects one of ${SELECTIONS.join(', ')}, got "${select}"`);
      const variant = String(flags.closeness);
      if (!(CLOSENESS_VARIANTS as readonly string[]).includes(variant))
        throw bad('closeness', `--closeness expects one of ${CLOSENESS_VARIANTS.join(', ')}, got "${variant}"`);
      if (flags.targetAdapter !== undefined && typeof flags.targetAdapter !== 'string')
        throw bad('target-adapter', '--target-adapter expects one folder');
      const target = flags.targetAdapter as string | undefined;
      if ((select === 'quasi-fisher' || select === 'closeness') && target === undefined)
        throw bad(
          'target-adapter',
          `--select ${select} compares the pool with a target LoRA: add --target-adapter <dir>`,
        );
      const text = await readFile(data, 'utf8').catch(() => {
        throw new LorakitError('LK_FILE_NOT_FOUND', `--data ${data}: cannot read the file`, { option: 'data' });
      });
      const r = await adaptiveMergeFolders({
        model,
        adapters: raw as string[],
        text,
        method: method as (typeof ADAPTIVE_METHODS)[number],
        out,
        samples: intFlag('samples', flags.samples),
        seqLen: intFlag('seq-len', flags.seqLen),
        batch: intFlag('batch', flags.batch),
        steps: intFlag('steps', flags.steps, 0),
        lr: numberFlag('lr', flags.lr),
        budget: intFlag('budget', flags.budget),
        topK: intFlag('top-k', flags.topK),
        select: select as (typeof SELECTIONS)[number] | undefined,
        target,
        closeness: variant as (typeof CLOSENESS_VARIANTS)[number],
        arrow: {
          topK: intFlag('arrow-top-k', flags.arrowTopK),
          temperature: numberFlag('router-temperature', flags.routerTemperature),
        },
        overwrite: flags.force === true,
        log: (line) => console.error(line),
      });
      const what =
        r.method === 'arrow'
          ? 'an Arrow router folder (arrow_config.json + one subfolder per adapter)'
          : 'a PEFT LoRA folder (adapter_config.json, adapter_model.safetensors)';
      if (r.selected) console.log(`selected: ${r.selected.names.join(', ')}`);
      console.log(
        `${r.method}: validation loss ${r.valLoss.toFixed(4)} nats/token, ${r.seconds.toFixed(0)} s; ` +
          `wrote ${what} to ${out}`,
      );
    });
};
