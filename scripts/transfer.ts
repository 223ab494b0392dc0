/**
 * The transfer report (docs/composition.md, "Transfer to another base"): for one Brown fiction genre and the two
 * demo-family bases (models/demo-base, 256 wide, and models/demo-base-128, 128 wide, both pretrained on Brown
 * non-fiction), in both directions source → target, the target's held-out loss (nats/byte) with no adapter, with the
 * source LoRA moved by Trans-LoRA (nearly data-free: 5 seeds + the discriminator kit), with a NOT organ (cut from the
 * target itself and trained on the genre data — NOT cannot cross widths), with a LoRA trained on the real data,
 * and the source's own loss with its LoRA. Every adapter is a PEFT folder under --out.
 *
 *   node --import tsx scripts/transfer.ts [--genre romance] [--steps 60] [--keep 64] [--out runs/transfer]
 *
 * Not here: the methods (src/train/transfer/), the second base's pretraining (scripts/pretrain-demo.ts).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { DEMO_BASE_DIR } from '../src/demo/base.ts';
import { type BrownSplit, readBrown, splitBrown } from '../src/demo/brown.ts';
import { WindowSampler, evalBatches, tokenStream } from '../src/demo/data.ts';
import { adapterEvaluator } from '../src/demo/lm.ts';
import { runDemo } from '../src/demo/run.ts';
import { HfTokenizer } from '../src/io/index.ts';
import { type LoadedModel, loadModel } from '../src/models/index.ts';
import { shutdownRuntime } from '../src/runtime/index.ts';
import { transfer } from '../src/train/index.ts';

const { values: flags } = parseArgs({
  options: {
    genre: { type: 'string', default: 'romance' },
    steps: { type: 'string', default: '60' },
    'disc-steps': { type: 'string', default: '40' },
    'disc-lr': { type: 'string', default: '2e-3' },
    keep: { type: 'string', default: '64' },
    length: { type: 'string', default: '96' },
    rank: { type: 'string', default: '8' },
    'organ-layers': { type: 'string', default: '1' },
    position: { type: 'string', default: '1' },
    'eval-windows': { type: 'string', default: '32' },
    seed: { type: 'string', default: '0' },
    out: { type: 'string', default: 'runs/transfer' },
  },
});
const GENRE = flags.genre!;
const STEPS = Number(flags.steps);
const KEEP = Number(flags.keep);
const L = Number(flags.length);
const RANK = Number(flags.rank);
const SEED = Number(flags.seed);
const OUT = resolve(flags.out!);
const B = 8,
  SEQ = 128,
  LR = 2e-3;
const TOKENS = { separator: 124, real: 89, synthetic: 78 }; // '|', 'Y', 'N' (bytes of the shared vocabulary)
const BASES = [DEMO_BASE_DIR, resolve(DEMO_BASE_DIR, '../demo-base-128')];
const t0 = performance.now();
const log = (s: string) => console.log(`[${((performance.now() - t0) / 1000).toFixed(0).padStart(5)} s] ${s}`);
const name = (dir: string) => dir.split('/').pop()!;

/** The genre's train / held-out split (splitBrown's whole-file split, restricted to the genre). */
function genreSplit(genre: string): BrownSplit {
  const all = splitBrown(readBrown({ side: 'fiction' }), 'fiction');
  return {
    side: 'fiction',
    train: all.train.filter((f) => f.genre === genre),
    heldOut: all.heldOut.filter((f) => f.genre === genre),
  };
}

const split = genreSplit(GENRE);
const trainStream = tokenStream(split.train);
const held = evalBatches(tokenStream(split.heldOut), SEQ, B, Number(flags['eval-windows']));

/** Held-out loss of `model` with the PEFT adapter in `adapterDir` (or none). */
async function heldOut(model: LoadedModel, adapterDir: string | null): Promise<number> {
  return (await adapterEvaluator(model, adapterDir, B, SEQ)).loss(held, new Map());
}

/** `n` real rows of `L` bytes: windows of the genre's train stream (seeded). */
function realRows(n: number): number[][] {
  const sampler = new WindowSampler(trainStream, L, SEED + 7);
  const b = sampler.batch(0, n);
  return Array.from({ length: n }, (_, i) => Array.from(b.inputIds.subarray(i * L, (i + 1) * L), Number));
}

/** The 5 seed examples: the first 80 characters of the first paragraph of five train files (the kit keeps them). */
function seeds(): string[] {
  return split.train.slice(0, 5).map((f) => f.text.slice(0, 80));
}

async function main() {
  await mkdir(OUT, { recursive: true });
  log(
    `genre ${GENRE}: ${split.train.length} train files, ${split.heldOut.length} held out; ${held.length * B} ` +
      `held-out windows of ${SEQ} bytes`,
  );
  // 1. per base: no adapter, a LoRA on the real data (the source adapter in one direction, the upper reference in the
  //    other), the discriminator kit, and a NOT organ cut from the base and inserted back at --position.
  const perBase = new Map<string, { none: number; real: number; adapterDir: string; kitDir: string; organ: number }>();
  for (const dir of BASES) {
    const n = name(dir);
    const run = await runDemo({
      modelDir: dir,
      split,
      steps: STEPS,
      batch: B,
      seqLen: SEQ,
      rank: RANK,
      alpha: 2 * RANK,
      seed: SEED,
      evalWindows: held.length * B,
      outDir: join(OUT, n, 'real-lora'),
      sampleBytes: 1,
    });
    const model = await loadModel(dir);
    const none = await heldOut(model, null);
    const real = await heldOut(model, run.adapterDir);
    log(`${n}: no adapter ${none.toFixed(4)}, real-data LoRA ${real.toFixed(4)} (${run.seconds.toFixed(0)} s)`);
    const kitDir = join(OUT, n, 'kit');
    const kit = await transfer.buildTransferKit({
      source: model,
      tokenizer: await HfTokenizer.fromDir(dir),
      real: realRows(128),
      seeds: seeds(),
      tokens: TOKENS,
      length: L,
      syntheticCount: 128,
      steps: Number(flags['disc-steps']),
      lr: Number(flags['disc-lr']),
      seed: SEED,
      outDir: kitDir,
    });
    const dl = kit.history.map((r) => r.loss);
    log(`${n}: discriminator trained, loss ${dl[0].toFixed(3)} → ${dl[dl.length - 1].toFixed(3)}`);
    const organ = await organLoss(model, n);
    perBase.set(dir, { none, real, adapterDir: run.adapterDir, kitDir, organ });
    await model.close();
  }
  // 2. both directions: Trans-LoRA from the source's real-data LoRA into the target
  const rows: string[] = [];
  const json: Record<string, unknown>[] = [];
  for (const [src, tgt] of [
    [BASES[0], BASES[1]],
    [BASES[1], BASES[0]],
  ]) {
    const source = await loadModel(src);
    const target = await loadModel(tgt);
    const s = perBase.get(src)!;
    const t = perBase.get(tgt)!;
    const tl = performance.now();
    const r = await transfer.transferLora({
      source,
      sourceAdapterDir: s.adapterDir,
      kitDir: s.kitDir,
      target,
      targetTokenizer: await HfTokenizer.fromDir(tgt),
      keep: KEEP,
      candidatesPerRound: KEEP,
      maxRounds: 3,
      steps: STEPS,
      lr: LR,
      batch: B,
      seed: SEED,
      outDir: join(OUT, `${name(src)}-to-${name(tgt)}`),
      log: (line) => log(`${name(src)} → ${name(tgt)}: ${line}`),
    });
    const moved = await heldOut(target, r.adapterDir);
    const secs = (performance.now() - tl) / 1000;
    log(
      `${name(src)} → ${name(tgt)}: Trans-LoRA ${moved.toFixed(4)} (candidates ${transfer.describeFilter(r.filter)}; ` +
        `${secs.toFixed(0)} s)`,
    );
    const f4 = (x: number) => x.toFixed(4);
    rows.push(
      `| ${name(src)} → ${name(tgt)} | ${f4(t.none)} | ${f4(moved)} | ${f4(t.organ)} | ${f4(t.real)} | ${f4(s.real)} | ` +
        `${r.filter ? `${r.filter.passed}/${r.filter.candidates}` : '—'} |`,
    );
    json.push({
      source: name(src),
      target: name(tgt),
      targetNone: t.none,
      transLora: moved,
      organ: t.organ,
      targetReal: t.real,
      sourceReal: s.real,
      filter: r.filter,
      seconds: secs,
    });
    await source.close();
    await target.close();
  }
  const table = [
    '| source → target | target, no adapter | target + Trans-LoRA | target + NOT organ | target + LoRA on real data | source + its LoRA | passed the filter |',
    '|---|---|---|---|---|---|---|',
    ...rows,
  ].join('\n');
  console.log(`\n${table}\n`);
  await writeFile(join(OUT, 'table.md'), `${table}\n`);
  await writeFile(join(OUT, 'results.json'), JSON.stringify({ flags, rows: json }, null, 1));
  log(`done; ${join(OUT, 'table.md')}`);
  await shutdownRuntime();
}

/** NOT on one base: cut --organ-layers layers from ⌊L/3⌋, train them in Embed∘O∘Head on the genre, insert at p. */
async function organLoss(model: LoadedModel, n: string): Promise<number> {
  const json = JSON.parse(await (await import('node:fs/promises')).readFile(join(model.dir, 'config.json'), 'utf8'));
  const span = transfer.defaultOrganSpan(json.num_hidden_layers);
  const organ = transfer.extractOrgan(
    json,
    await transfer.readAllWeights(model),
    span.start,
    Math.min(span.count, Number(flags['organ-layers'])),
  );
  const sampler = new WindowSampler(trainStream, SEQ, SEED);
  const trained = await transfer.trainOrgan({
    base: model,
    organ,
    batch: (i) => {
      const b = sampler.batch(i, B);
      return { input_ids: b.inputIds, labels: b.labels };
    },
    batchSize: B,
    seqLen: SEQ,
    steps: STEPS,
    lr: LR,
  });
  const dir = join(OUT, n, 'organ');
  await transfer.saveOrgan(dir, trained);
  await transfer.writeTransplant(model, trained, Number(flags.position), join(OUT, n, 'transplanted'));
  const m = await loadModel(join(OUT, n, 'transplanted'));
  const loss = await heldOut(m, null);
  await m.close();
  log(
    `${n}: NOT organ (layers ${organ.start}..${organ.start + organ.count - 1}, inserted at ${flags.position}) ${loss.toFixed(4)}`,
  );
  return loss;
}

await main();
