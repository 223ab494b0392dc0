/**
 * Trans-LoRA's filter and NOT's organ placement on SmolLM2 (issue 16, part 5, second run; docs/composition.md, "On
 * SmolLM2"). Reuses what scripts/smollm2-transfer.ts cached in --from (the pruned base, both real-data LoRAs, the
 * old discriminator kits, the organ) and adds:
 * 1. a discriminator per base that stops early: the same rows, lr and 30-step schedule as the old one, evaluated
 *    every --every steps on held-out rows it never trains on (--val real windows of the first half of the held-out
 *    text, as many more synthetic rows of the source), keeping the evaluation of lowest held-out loss; both the old
 *    and the new discriminator measured on other held-out rows (--test real windows of the second half of the
 *    held-out text, as many synthetic rows of the source drawn with another seed);
 * 2. Trans-LoRA both ways with the new kit, and the control without a filter (the target's first --keep candidates,
 *    the same rows as the filtered run's first round), with the old run's schedule;
 * 3. with --organ, the old organ placed elsewhere in the full model (inserted at 3 and ⌊2L/3⌋, replacing its own
 *    layers 10..12) and an organ trained with --organ-lr inserted at ⌊L/3⌋.
 *
 *   node --import tsx scripts/smollm2-transfer-filter.ts [--organ] [--from runs/smollm2-transfer]
 *   node --import tsx scripts/smollm2-transfer-filter.ts --table      # the Markdown from the saved results
 *
 * Every step's output is cached under --out (results.json, the kits, the PEFT folders); a rerun skips what exists.
 */
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { adapterEvaluator } from '../src/demo/lm.ts';
import { HfTokenizer, type LlamaLikeConfig } from '../src/io/index.ts';
import { type LoadedModel, loadModel } from '../src/models/index.ts';
import { PeftModel, adaptable, loadAdapter } from '../src/peft/index.ts';
import { shutdownRuntime } from '../src/runtime/index.ts';
import { transfer } from '../src/train/index.ts';
import { MODEL } from './smollm2-pool-tasks.ts';
import { B, type Results, SEQ, shakespeare, stepCache, trainOrganOn } from './smollm2-shakespeare.ts';

const { values: flags } = parseArgs({
  options: {
    from: { type: 'string', default: 'runs/smollm2-transfer' },
    out: { type: 'string', default: 'runs/smollm2-transfer2' },
    steps: { type: 'string', default: '50' },
    'disc-steps': { type: 'string', default: '30' },
    every: { type: 'string', default: '3' },
    patience: { type: 'string', default: '3' },
    val: { type: 'string', default: '32' },
    test: { type: 'string', default: '64' },
    keep: { type: 'string', default: '32' },
    length: { type: 'string', default: '64' },
    lr: { type: 'string', default: '1e-3' },
    'organ-lr': { type: 'string', default: '1e-5' },
    'eval-windows': { type: 'string', default: '48' },
    seed: { type: 'string', default: '0' },
    organ: { type: 'boolean', default: false },
    table: { type: 'boolean', default: false },
  },
});
const STEPS = Number(flags.steps);
const KEEP = Number(flags.keep);
const L = Number(flags.length);
const LR = Number(flags.lr);
const SEED = Number(flags.seed);
const FROM = resolve(flags.from!);
const OUT = resolve(flags.out!);
const RESULTS = join(OUT, 'results.json');
const { results, cached, log, finish } = stepCache(RESULTS);
const before: Results = existsSync(join(FROM, 'results.json'))
  ? JSON.parse(readFileSync(join(FROM, 'results.json'), 'utf8'))
  : {};

const DIRS = [
  ['full', 'pruned'],
  ['pruned', 'full'],
] as const;

function tables(r: Results): string {
  const f4 = (x: unknown) => (typeof x === 'number' ? x.toFixed(4) : '—');
  const f2 = (x: unknown) => (typeof x === 'number' ? x.toFixed(2) : '—');
  const f3 = (x: unknown) => (typeof x === 'number' ? x.toFixed(3) : '—');
  const pct = (x: unknown) => (typeof x === 'number' ? `${Math.round(100 * x)} %` : '—');
  const filt = (f: unknown) => {
    const x = f as { passed: number; candidates: number; filled: number } | undefined;
    return x ? `${x.passed}/${x.candidates} (${x.filled} filled)` : '—';
  };
  const disc = ['full', 'pruned'].flatMap((n) =>
    (['old', 'new'] as const).map((v) => {
      const s = r[`${n} ${v} discriminator test`] as transfer.SeparationStats | undefined;
      const step =
        v === 'old' ? '30 (all)' : `${(r[`${n} new discriminator step`] as number | undefined) ?? '—'} of 30`;
      return (
        `| SmolLM2 ${n} | ${v === 'old' ? 'old: every step' : 'new: early-stopped'} | ${step} | ${pct(s?.accuracy)} | ` +
        `${pct(s?.realPassed)} | ${pct(s?.syntheticPassed)} | ${f3(s?.auc)} | ${f4(s?.logLoss)} | ${f2(s?.meanAbsScore)} |`
      );
    }),
  );
  const moved = DIRS.map(
    ([s, t]) =>
      `| SmolLM2 ${s} → ${t} | ${f4(before[`${t} none`])} | ${f4(before[`${t} trans-lora from ${s}`])} | ` +
      `${filt(before[`filter ${s}-to-${t}`])} | ${f4(r[`${t} trans-lora from ${s}`])} | ${filt(r[`filter ${s}-to-${t}`])} | ` +
      `${f4(r[`${t} unfiltered from ${s}`])} | ${f4(before[`${t} real`])} |`,
  );
  const organ = [
    ['inserted at 10 = ⌊L/3⌋ (the first run)', before['full organ']],
    ['inserted at 3', r['full organ at 3']],
    ['inserted at 20 = ⌊2L/3⌋', r['full organ at 20']],
    ['replacing its own layers 10..12', r['full organ replacing 10']],
    [`trained with lr ${flags['organ-lr']}, inserted at 10`, r['full low-lr organ at 10']],
  ].map(([what, v]) => `| ${what} | ${f4(v)} |`);
  return [
    '| discriminator (source base) | schedule | steps kept | held-out accuracy | real passed | synthetic passed | AUC | two-way log-loss | mean \\|score\\| |',
    '|---|---|---|---|---|---|---|---|---|',
    ...disc,
    '',
    '| source → target | target, no adapter | Trans-LoRA, old discriminator | passed (old) | Trans-LoRA, early-stopped discriminator | passed (new) | same distillation, no filter (first 32) | target + LoRA on real data |',
    '|---|---|---|---|---|---|---|---|',
    ...moved,
    '',
    `| NOT organ in the full model (no adapter ${f4(before['full none'])}) | held-out loss |`,
    '|---|---|',
    ...organ,
  ].join('\n');
}

async function main() {
  if (flags.table) {
    console.log(tables(results));
    return;
  }
  const prunedDir = join(FROM, 'smollm2-pruned');
  for (const p of [prunedDir, join(FROM, 'full', 'real-lora', 'final'), join(FROM, 'full', 'kit')])
    if (!existsSync(p)) throw new Error(`${p} is missing: run scripts/smollm2-transfer.ts --out ${flags.from} first`);
  await mkdir(OUT, { recursive: true });
  const full = await loadModel(MODEL);
  const pruned = await loadModel(prunedDir);
  const bases = { full, pruned } as const;
  type Base = keyof typeof bases;
  const tokenizer = await HfTokenizer.fromDir(full.dir);
  const { text, cut, trainIds, heldIds, held } = await shakespeare(tokenizer, Number(flags['eval-windows']));
  const half = Math.floor(heldIds.length / 2);
  // the discriminators' held-out rows: validation (early stopping) and test (the reported numbers), disjoint
  const valReal = transfer.tokenWindows(heldIds.slice(0, half), L, Number(flags.val), SEED + 21);
  const testReal = transfer.tokenWindows(heldIds.slice(half), L, Number(flags.test), SEED + 22);
  const seeds = transfer.seedExamples(text.slice(0, cut), 5, 80);
  const heldOut = async (model: LoadedModel, adapterDir: string | null): Promise<number> =>
    (await adapterEvaluator(model, adapterDir, B, SEQ)).loss(held, new Map());
  const testStats = async (model: LoadedModel, kitDir: string, synthetic: number[][]) => {
    const kit = await transfer.readTransferKit(kitDir);
    const peft = new PeftModel(adaptable(model));
    await loadAdapter(peft, kitDir, 'discriminator');
    const d = await transfer.Discriminator.create(model, peft.generationAdapter(), kit.tokens, kit.length);
    const s = transfer.separationStats(await d.score(testReal), await d.score(synthetic));
    await d.dispose();
    return s;
  };

  // 1. per base: the old discriminator on the test rows, the early-stopped one, and it on the test rows
  for (const n of ['full', 'pruned'] as Base[]) {
    const model = bases[n];
    const testSynthetic = await cached(`${n} test synthetic`, () =>
      transfer.synthesize(model, tokenizer, { seeds, count: testReal.length, newTokens: L, seed: SEED + 5000 }),
    );
    const old = await cached(`${n} old discriminator test`, () =>
      testStats(model, join(FROM, n, 'kit'), testSynthetic),
    );
    log(`${n}: old discriminator on test rows ${JSON.stringify(old)}`);
    const kitDir = join(OUT, n, 'kit');
    if (!existsSync(join(kitDir, transfer.TRANSFER_KIT_FILE))) {
      const k = await transfer.buildTransferKit({
        source: model,
        tokenizer,
        real: transfer.tokenWindows(trainIds, L, 64, SEED + 7), // the old kit's rows, lr and schedule
        syntheticCount: 64,
        seeds,
        tokens: transfer.questionTokens(tokenizer),
        length: L,
        steps: Number(flags['disc-steps']),
        lr: LR,
        batch: 8,
        seed: SEED,
        outDir: kitDir,
        heldOut: { real: valReal, every: Number(flags.every), patience: Number(flags.patience) },
      });
      const best = transfer.bestEval(k.history)!;
      results[`${n} new discriminator step`] = best.step;
      results[`${n} new discriminator curve`] = k.history.map((h) => [h.step, h.loss, h.eval_loss ?? null]);
      log(`${n}: discriminator kept step ${best.step} of ${k.history.length} (held-out loss ${best.eval_loss})`);
    }
    const neu = await cached(`${n} new discriminator test`, () => testStats(model, kitDir, testSynthetic));
    log(`${n}: new discriminator on test rows ${JSON.stringify(neu)}`);
  }

  // 2. both directions: Trans-LoRA with the new kit, and the same distillation on unfiltered candidates
  for (const [s, t] of DIRS as readonly (readonly [Base, Base])[]) {
    for (const filter of [true, false]) {
      const runDir = join(OUT, `${s}-to-${t}${filter ? '' : '-unfiltered'}`);
      if (!existsSync(join(runDir, 'final', 'adapter_config.json'))) {
        const tl = performance.now();
        const r = await transfer.transferLora({
          source: bases[s],
          sourceAdapterDir: join(FROM, s, 'real-lora', 'final'),
          kitDir: join(OUT, s, 'kit'),
          target: bases[t],
          targetTokenizer: tokenizer,
          keep: KEEP,
          candidatesPerRound: KEEP,
          maxRounds: 2,
          filter,
          steps: STEPS,
          lr: LR,
          batch: 8,
          seed: SEED,
          outDir: runDir,
          log: (line) => log(`${s} → ${t}: ${line}`),
        });
        if (r.filter) results[`filter ${s}-to-${t}`] = r.filter;
        const kl = r.history.map((h) => h.loss);
        results[`distill ${s}-to-${t}${filter ? '' : ' unfiltered'}`] = {
          kl: [kl[0], kl[kl.length - 1]],
          seconds: (performance.now() - tl) / 1000,
        };
      }
      const key = `${t} ${filter ? 'trans-lora' : 'unfiltered'} from ${s}`;
      const loss = await cached(key, () => heldOut(bases[t], join(runDir, 'final')));
      log(`${s} → ${t}: ${filter ? 'Trans-LoRA' : 'no filter'} ${loss.toFixed(4)}`);
    }
  }

  // 3. NOT: where the organ goes in the full model, and a lower lr
  if (flags.organ) {
    const organ = await transfer.loadOrgan(join(FROM, 'organ'));
    const Lf = (full.config as LlamaLikeConfig).num_hidden_layers;
    const evalModel = async (dir: string) => {
      const m = await loadModel(dir);
      const l = await heldOut(m, null);
      await m.close();
      return l;
    };
    for (const p of [3, Math.floor((2 * Lf) / 3)]) {
      const dir = join(OUT, 'organ-models', `at-${p}`);
      if (!existsSync(join(dir, 'config.json'))) await transfer.writeTransplant(full, organ, p, dir);
      log(`full: organ inserted at ${p}: ${(await cached(`full organ at ${p}`, () => evalModel(dir))).toFixed(4)}`);
    }
    // replacement: the donor's own layers removed, the trained organ put in their place
    const start = organ.start;
    const own = Array.from({ length: organ.count }, (_, i) => start + i);
    const withoutDir = join(OUT, 'organ-models', `without-${start}`);
    const replacedDir = join(OUT, 'organ-models', `replacing-${start}`);
    if (!existsSync(join(replacedDir, 'config.json'))) {
      if (!existsSync(join(withoutDir, 'config.json'))) await transfer.writeDropped(full, own, withoutDir);
      const without = await loadModel(withoutDir);
      await transfer.writeTransplant(without, organ, start, replacedDir);
      await without.close();
    }
    const rep = await cached(`full organ replacing ${start}`, () => evalModel(replacedDir));
    log(`full: organ replacing layers ${own.join(', ')}: ${rep.toFixed(4)}`);
    const lowDir = join(OUT, 'organ-low-lr');
    if (!existsSync(join(lowDir, 'organ.json'))) {
      const json = JSON.parse(await readFile(join(full.dir, 'config.json'), 'utf8'));
      const cut = transfer.extractOrgan(json, await transfer.readAllWeights(full), start, organ.count);
      const { trained, first, last } = await trainOrganOn(full, cut, trainIds, {
        steps: STEPS,
        lr: Number(flags['organ-lr']),
        seed: SEED,
      });
      await transfer.saveOrgan(lowDir, trained);
      results['low-lr organ loss'] = [first, last];
      log(`organ with lr ${flags['organ-lr']}: loss ${first.toFixed(3)} → ${last.toFixed(3)}`);
    }
    const lowModel = join(OUT, 'organ-models', `low-lr-at-${start}`);
    if (!existsSync(join(lowModel, 'config.json')))
      await transfer.writeTransplant(full, await transfer.loadOrgan(lowDir), start, lowModel);
    const low = await cached(`full low-lr organ at ${start}`, () => evalModel(lowModel));
    log(`full: low-lr organ inserted at ${start}: ${low.toFixed(4)}`);
  }
  await finish(flags, tables(results));
  for (const m of Object.values(bases)) await m.close();
  await shutdownRuntime();
}

await main();
