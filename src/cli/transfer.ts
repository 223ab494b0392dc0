// `lorakit transfer <step>`: moves what was trained on one base to another. `kit` (Trans-LoRA phase A: seeds and a
// discriminator LoRA from the task text), `lora` (phase B: the source LoRA distilled into a LoRA on the target from
// filtered synthetic text), `organ` (NOT: train a block of layers of a base on a text) and `transplant` (insert an
// organ into a recipient, writing a model folder). Flags become the library calls of train/transfer/.
import type { CommandModule } from './main.ts';
import { intFlag, numberFlag, requiredFlag } from './flags.ts';
import { LorakitError } from '../errors.ts';

interface Flags {
  model?: unknown;
  data?: unknown;
  out?: unknown;
  source?: unknown;
  adapter?: unknown;
  kit?: unknown;
  target?: unknown;
  organ?: unknown;
  recipient?: unknown;
  position?: unknown;
  start?: unknown;
  layers?: unknown;
  length?: unknown;
  seeds?: unknown;
  rows?: unknown;
  keep?: unknown;
  rounds?: unknown;
  steps?: unknown;
  lr?: unknown;
  rank?: unknown;
  batch?: unknown;
  seqLen?: unknown;
  seed?: unknown;
  heldOut?: unknown;
  evalEvery?: unknown;
  patience?: unknown;
  unfiltered?: boolean;
}

const STEPS = ['kit', 'lora', 'organ', 'transplant'];

export const register: CommandModule['register'] = (cli) => {
  cli
    .command('transfer <step>', 'Move an adapter to another base: kit | lora (Trans-LoRA), organ | transplant (NOT)')
    .usage(
      'transfer <step> [flags]\n\n' +
        '  kit         --model S --data task.txt --out KIT        discriminator LoRA + seeds on the source base\n' +
        '  lora        --source S --adapter A --kit KIT --target T --out DIR   the transferred PEFT LoRA: DIR/final\n' +
        '  organ       --model M --data task.txt --out ORGAN      train layers of M alone (Embed∘O∘Head)\n' +
        '  transplant  --organ ORGAN --recipient R --position p --out MODEL   insert the organ: a model folder',
    )
    .option('--model <dir>', 'kit/organ: the base model folder')
    .option('--data <file>', 'kit/organ: the task text (UTF-8, paragraphs separated by blank lines)')
    .option('--out <dir>', 'Where to write the kit, the run (adapter in <out>/final), the organ or the model')
    .option('--source <dir>', 'lora: the source base')
    .option('--adapter <dir>', 'lora: the source PEFT LoRA folder (trained on --source)')
    .option('--kit <dir>', 'lora: the kit folder written by `transfer kit` on the source base')
    .option('--target <dir>', 'lora: the target base (same tokenizer, any width)')
    .option('--organ <dir>', 'transplant: the organ folder written by `transfer organ`')
    .option('--recipient <dir>', 'transplant: the recipient model (same architecture and width as the donor)')
    .option('--position <p>', 'transplant: insert before the recipient layer p (0 = first)')
    .option('--start <i>', 'organ: first donor layer (default ⌊L/3⌋)')
    .option('--layers <k>', 'organ: number of layers (default 3, fewer when the model is shallower)')
    .option('--length <n>', 'kit: tokens per discriminator row (default 96)')
    .option('--seeds <n>', 'kit: seed examples to keep (default 5)')
    .option('--rows <n>', 'kit: real windows, and as many synthetic rows, for the discriminator (default 256)')
    .option(
      '--held-out <n>',
      'kit: early stopping: n real windows of the last 10 % of the text (the discriminator trains on the first 90 %) ' +
        'and n more synthetic rows, never trained on; the kit keeps the evaluation of lowest held-out loss ' +
        '(n a multiple of batch/2; default: none, train every step)',
    )
    .option('--eval-every <n>', 'kit: with --held-out, evaluate every n steps (default 5)')
    .option('--patience <n>', 'kit: with --held-out, stop after n evaluations without improvement (default: none)')
    .option('--keep <n>', 'lora: filtered synthetic rows to distil on (default 64)')
    .option('--rounds <n>', 'lora: generation rounds at most (default 3)')
    .option('--unfiltered', 'lora: no discriminator; distil on the first --keep candidates (the filter ablation)')
    .option('--steps <n>', 'Optimizer steps (default 60)')
    .option('--lr <x>', 'Peak learning rate (default 2e-3)')
    .option('--rank <r>', 'kit: discriminator LoRA rank (default 8); lora: student rank (default: the source rank)')
    .option('--batch <n>', 'Rows per step (default 8)')
    .option('--seq-len <n>', 'organ: tokens per training window (default 128)')
    .option('--seed <n>', 'Seed of data order, init and sampling (default 0)')
    .action(async (step: string, flags: Flags) => {
      if (!STEPS.includes(step))
        throw new LorakitError('LK_INVALID_ARGUMENT', `transfer: unknown step "${step}"; steps: ${STEPS.join(', ')}`);
      const out = requiredFlag('out', flags.out, 'the folder to write to');
      const steps = intFlag('steps', flags.steps) ?? 60;
      const lr = numberFlag('lr', flags.lr) ?? 2e-3;
      const batch = intFlag('batch', flags.batch) ?? 8;
      const seed = intFlag('seed', flags.seed, 0) ?? 0;
      // The run settings of the kit and lora steps (--rank is read only by them).
      const run = () => ({ rank: intFlag('rank', flags.rank), steps, lr, batch, seed, outDir: out });
      const { readFile } = await import('node:fs/promises');
      const { loadModel } = await import('../models/load.ts');
      const { HfTokenizer } = await import('../io/index.ts');
      const { transfer } = await import('../train/index.ts');
      const { shutdownRuntime } = await import('../runtime/index.ts');
      const opened: { close(): Promise<void> }[] = [];
      const open = async (flag: string, v: unknown, what: string) => {
        const m = await loadModel(requiredFlag(flag, v, what));
        opened.push(m);
        return m;
      };
      try {
        if (step === 'kit') {
          const model = await open('model', flags.model, 'the source base model');
          const text = await readFile(requiredFlag('data', flags.data, 'the task text', '<file>'), 'utf8');
          const tokenizer = await HfTokenizer.fromDir(model.dir);
          const length = intFlag('length', flags.length) ?? 96;
          const all = tokenizer.encode(text, { addSpecialTokens: false });
          const rows = intFlag('rows', flags.rows) ?? 256;
          const held = intFlag('held-out', flags.heldOut);
          // with held-out rows, the last 10 % of the tokens are theirs alone
          const cut = held ? Math.floor(all.length * 0.9) : all.length;
          const ids = all.slice(0, cut);
          const r = await transfer.buildTransferKit({
            source: model,
            tokenizer,
            real: transfer.tokenWindows(ids, length, rows, seed),
            heldOut: held
              ? {
                  real: transfer.tokenWindows(all.slice(cut), length, held, seed + 1),
                  every: intFlag('eval-every', flags.evalEvery) ?? 5,
                  patience: intFlag('patience', flags.patience),
                }
              : undefined,
            syntheticCount: rows,
            seeds: transfer.seedExamples(text, intFlag('seeds', flags.seeds) ?? 5, 80),
            tokens: transfer.questionTokens(tokenizer),
            length,
            ...run(),
          });
          const l = r.history.map((h) => h.loss);
          const best = transfer.bestEval(r.history);
          const kept = best ? `; kept step ${best.step} (held-out loss ${best.eval_loss!.toFixed(4)})` : '';
          console.log(
            `discriminator loss ${l[0].toFixed(4)} -> ${l[l.length - 1].toFixed(4)}${kept}; kit written to ${out}`,
          );
        } else if (step === 'lora') {
          const source = await open('source', flags.source, 'the source base model');
          const target = await open('target', flags.target, 'the target base model');
          const r = await transfer.transferLora({
            source,
            sourceAdapterDir: requiredFlag('adapter', flags.adapter, 'the source PEFT adapter'),
            kitDir: requiredFlag('kit', flags.kit, 'the kit folder of `transfer kit`'),
            target,
            targetTokenizer: await HfTokenizer.fromDir(target.dir),
            keep: intFlag('keep', flags.keep) ?? 64,
            maxRounds: intFlag('rounds', flags.rounds) ?? 3,
            filter: !flags.unfiltered,
            ...run(),
            log: (line) => console.log(line),
          });
          const l = r.history.map((h) => h.loss);
          console.log(
            `candidates: ${transfer.describeFilter(r.filter)}; ` +
              `distillation KL ${l[0].toFixed(4)} -> ${l[l.length - 1].toFixed(4)}; adapter written to ${r.adapterDir}`,
          );
        } else if (step === 'organ') {
          const model = await open('model', flags.model, 'the donor base model');
          const text = await readFile(requiredFlag('data', flags.data, 'the task text', '<file>'), 'utf8');
          const config = JSON.parse(await readFile(`${model.dir}/config.json`, 'utf8'));
          const span = transfer.defaultOrganSpan(Number(config.num_hidden_layers));
          const organ = transfer.extractOrgan(
            config,
            await transfer.readAllWeights(model),
            intFlag('start', flags.start, 0) ?? span.start,
            intFlag('layers', flags.layers) ?? span.count,
          );
          const ids = (await HfTokenizer.fromDir(model.dir)).encode(text, { addSpecialTokens: false });
          const T = intFlag('seq-len', flags.seqLen) ?? 128;
          let last = NaN;
          const trained = await transfer.trainOrgan({
            base: model,
            organ,
            batch: (i) => transfer.windowBatch(ids, batch, T, seed, i),
            batchSize: batch,
            seqLen: T,
            steps,
            lr,
            onStep: (s, loss) => {
              last = loss;
              if (s === 1 || s % 10 === 0) console.log(`step ${s}: loss ${loss.toFixed(4)}`);
            },
          });
          await transfer.saveOrgan(out, trained);
          console.log(
            `organ: layers ${organ.start}..${organ.start + organ.count - 1}, final loss ${last.toFixed(4)}; ` +
              `written to ${out}`,
          );
        } else {
          const recipient = await open('recipient', flags.recipient, 'the recipient model');
          const organ = await transfer.loadOrgan(requiredFlag('organ', flags.organ, 'the organ folder'));
          const position = intFlag('position', flags.position, 0);
          if (position === undefined)
            throw new LorakitError('LK_INVALID_ARGUMENT', '--position <p> is required: the insertion layer', {
              option: 'position',
            });
          await transfer.writeTransplant(recipient, organ, position, out);
          console.log(`inserted ${organ.count} layer(s) before layer ${position}; model written to ${out}`);
        }
      } finally {
        for (const m of opened) await m.close();
        await shutdownRuntime();
      }
    });
};
