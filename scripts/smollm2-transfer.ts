/**
 * Trans-LoRA and NOT on the real SmolLM2-135M-Instruct (issue 16, part 5; docs/composition.md, "On SmolLM2"):
 * SmolLM2 (full, 30 layers) ⇄ SmolLM2 with the 8 layers of lowest ShortGPT block influence removed (22 layers, same
 * width and tokenizer, no healing), on Tiny Shakespeare (first 90 % of the characters train, the last 10 % held out).
 * For both directions the target's held-out loss (nats/token) with no adapter, with the source's real-data LoRA moved
 * by Trans-LoRA, with a NOT organ (3 layers from ⌊30/3⌋ of the full model, trained on the text, inserted at ⌊L/3⌋ of
 * the target), with a LoRA trained on the real data, and the source's own loss with its LoRA.
 *
 *   node --import tsx scripts/smollm2-transfer.ts [--steps 50] [--keep 32] [--out runs/smollm2-transfer]
 *   node --import tsx scripts/smollm2-transfer.ts --table        # the Markdown from the saved results
 *
 * Every step's output is cached under --out (results.json, the model folders, the PEFT folders); a rerun skips
 * what exists. Not here: the methods (src/train/transfer/), the demo-base report (scripts/transfer.ts).
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { adapterEvaluator } from '../src/demo/lm.ts';
import { Graph } from '../src/graph/index.ts';
import { HfTokenizer, type LlamaLikeConfig } from '../src/io/index.ts';
import { causalSetup } from '../src/models/causal.ts';
import { type LoadedModel, llamaDecoderLayer, llamaRope, loadModel } from '../src/models/index.ts';
import type { ModelContext } from '../src/nn/index.ts';
import { PeftModel, adaptable } from '../src/peft/index.ts';
import { compile, shutdownRuntime } from '../src/runtime/index.ts';
import { transfer } from '../src/train/index.ts';
import { causalLmLoss } from '../src/train/loss.ts';
import { MODEL } from './smollm2-pool-tasks.ts';
import { B, type Results, SEQ, shakespeare, stepCache, trainOrganOn } from './smollm2-shakespeare.ts';

const { values: flags } = parseArgs({
  options: {
    steps: { type: 'string', default: '50' },
    'disc-steps': { type: 'string', default: '30' },
    drop: { type: 'string', default: '8' },
    keep: { type: 'string', default: '32' },
    length: { type: 'string', default: '64' },
    rank: { type: 'string', default: '8' },
    lr: { type: 'string', default: '1e-3' },
    'organ-lr': { type: 'string', default: '1e-4' },
    'eval-windows': { type: 'string', default: '48' },
    seed: { type: 'string', default: '0' },
    out: { type: 'string', default: 'runs/smollm2-transfer' },
    table: { type: 'boolean', default: false },
  },
});
const STEPS = Number(flags.steps);
const KEEP = Number(flags.keep);
const L = Number(flags.length);
const RANK = Number(flags.rank);
const LR = Number(flags.lr);
const SEED = Number(flags.seed);
const OUT = resolve(flags.out!);
const RESULTS = join(OUT, 'results.json');
const { results, cached, log, finish } = stepCache(RESULTS);

/** ShortGPT's block influence of every layer: 1 − mean cos(h_in, h_out) over the tokens of `rows` (B × SEQ). */
async function blockInfluence(model: LoadedModel, ids: BigInt64Array, rows: number): Promise<number[]> {
  const c = model.config as LlamaLikeConfig;
  const g = new Graph('block-influence');
  const ctx = model.context(g) as ModelContext<LlamaLikeConfig>;
  const inputIds = g.input('input_ids', 'i64', [rows, SEQ]);
  const setup = causalSetup(ctx, { inputIds });
  const shared = { rope: llamaRope(ctx, setup.positionIds), mask: setup.mask };
  let x = ctx.embedding('model.embed_tokens', inputIds);
  g.output('h0', x);
  for (let i = 0; i < c.num_hidden_layers; i++) {
    x = llamaDecoderLayer(ctx, i, x, shared).hidden;
    g.output(`h${i + 1}`, x);
  }
  const s = await compile(g);
  const out = await s.run({ input_ids: ids });
  await s.dispose();
  const D = c.hidden_size;
  const bi: number[] = [];
  for (let i = 0; i < c.num_hidden_layers; i++) {
    const a = out[`h${i}`].data as Float32Array,
      b = out[`h${i + 1}`].data as Float32Array;
    let sum = 0;
    for (let t = 0; t < rows * SEQ; t++) {
      let ab = 0,
        aa = 0,
        bb = 0;
      for (let d = t * D; d < (t + 1) * D; d++) {
        ab += a[d] * b[d];
        aa += a[d] * a[d];
        bb += b[d] * b[d];
      }
      sum += ab / Math.sqrt(aa * bb);
    }
    bi.push(1 - sum / (rows * SEQ));
  }
  return bi;
}

function table(r: Results): string {
  const f4 = (x: unknown) => (typeof x === 'number' ? x.toFixed(4) : '—');
  const rows = [
    ['full', 'pruned'],
    ['pruned', 'full'],
  ].map(([s, t]) => {
    const f = r[`filter ${s}-to-${t}`] as { passed: number; candidates: number; filled: number } | undefined;
    return (
      `| SmolLM2 ${s} → ${t} | ${f4(r[`${t} none`])} | ${f4(r[`${t} trans-lora from ${s}`])} | ` +
      `${f4(r[`${t} organ`])} | ${f4(r[`${t} real`])} | ${f4(r[`${s} real`])} | ` +
      `${f ? `${f.passed}/${f.candidates} (${f.filled} filled)` : '—'} |`
    );
  });
  return [
    '| source → target | target, no adapter | target + Trans-LoRA | target + NOT organ | target + LoRA on real data | source + its LoRA | passed the filter |',
    '|---|---|---|---|---|---|---|',
    ...rows,
  ].join('\n');
}

async function main() {
  if (flags.table) {
    console.log(table(results));
    return;
  }
  await mkdir(OUT, { recursive: true });
  const full = await loadModel(MODEL);
  const tokenizer = await HfTokenizer.fromDir(full.dir);
  const { text, cut, trainIds, heldIds, held } = await shakespeare(tokenizer, Number(flags['eval-windows']));
  log(`Tiny Shakespeare: ${trainIds.length} train tokens, ${heldIds.length} held out; ${held.length * B} windows`);

  // 1. the pruned base: drop the --drop layers of lowest block influence (8 windows of the train text)
  const prunedDir = join(OUT, 'smollm2-pruned');
  const bi = await cached('block influence', async () => {
    const rows = transfer.tokenWindows(trainIds, SEQ, 8, SEED + 11);
    return blockInfluence(full, BigInt64Array.from(rows.flat().map(BigInt)), 8);
  });
  const drop = bi
    .map((v, i) => [v, i])
    .sort((a, b) => a[0] - b[0])
    .slice(0, Number(flags.drop))
    .map((p) => p[1])
    .sort((a, b) => a - b);
  log(`block influence ${bi.map((v) => v.toFixed(3)).join(' ')}; dropping layers ${drop.join(', ')}`);
  results['dropped layers'] = drop;
  if (!existsSync(join(prunedDir, 'config.json'))) await transfer.writeDropped(full, drop, prunedDir);
  const pruned = await loadModel(prunedDir);
  const bases = { full, pruned } as const;
  type Base = keyof typeof bases;

  const heldOut = async (model: LoadedModel, adapterDir: string | null): Promise<number> =>
    (await adapterEvaluator(model, adapterDir, B, SEQ)).loss(held, new Map());

  // 2. per base: no adapter, a LoRA on the real text (source adapter / upper reference), the discriminator kit
  for (const n of ['full', 'pruned'] as Base[]) {
    const model = bases[n];
    log(`${n}: no adapter ${(await cached(`${n} none`, () => heldOut(model, null))).toFixed(4)}`);
    const loraRun = join(OUT, n, 'real-lora');
    if (!existsSync(join(loraRun, 'final', 'adapter_config.json'))) {
      const peft = new PeftModel(adaptable(model));
      await peft.addAdapter('real', transfer.transferLoraConfig(RANK, 2 * RANK), { seed: SEED });
      const h = await transfer.fitAdapter({
        model,
        peft,
        adapter: 'real',
        loss: (ctx, g) =>
          causalLmLoss({
            ctx,
            inputIds: g.input('input_ids', 'i64', [B, SEQ]),
            labels: g.input('labels', 'i64', [B * SEQ]),
            labelsAre: 'next',
          }).loss,
        batch: (i) => ({ feeds: transfer.windowBatch(trainIds, B, SEQ, SEED, i), tokens: B * SEQ }),
        steps: STEPS,
        lr: LR,
        seed: SEED,
        outputDir: loraRun,
        baseModel: model.dir,
      });
      log(`${n}: real-data LoRA loss ${h[0].loss.toFixed(3)} → ${h[h.length - 1].loss.toFixed(3)}`);
    }
    log(`${n}: real-data LoRA ${(await cached(`${n} real`, () => heldOut(model, join(loraRun, 'final')))).toFixed(4)}`);
    const kitDir = join(OUT, n, 'kit');
    if (!existsSync(join(kitDir, transfer.TRANSFER_KIT_FILE))) {
      const k = await transfer.buildTransferKit({
        source: model,
        tokenizer,
        real: transfer.tokenWindows(trainIds, L, 64, SEED + 7),
        syntheticCount: 64,
        seeds: transfer.seedExamples(text.slice(0, cut), 5, 80),
        tokens: transfer.questionTokens(tokenizer),
        length: L,
        steps: Number(flags['disc-steps']),
        lr: LR,
        batch: 8,
        seed: SEED,
        outDir: kitDir,
      });
      const dl = k.history.map((r) => r.loss);
      results[`${n} discriminator loss`] = [dl[0], dl[dl.length - 1]];
      log(`${n}: discriminator loss ${dl[0].toFixed(3)} → ${dl[dl.length - 1].toFixed(3)}`);
    }
  }

  // 3. NOT: an organ of the full model (3 layers from ⌊30/3⌋) trained alone, inserted at ⌊L/3⌋ of each base
  const organDir = join(OUT, 'organ');
  if (!existsSync(join(organDir, 'organ.json'))) {
    const json = JSON.parse(await readFile(join(full.dir, 'config.json'), 'utf8'));
    const span = transfer.defaultOrganSpan(json.num_hidden_layers);
    const organ = transfer.extractOrgan(json, await transfer.readAllWeights(full), span.start, span.count);
    const { trained, first, last } = await trainOrganOn(full, organ, trainIds, {
      steps: STEPS,
      lr: Number(flags['organ-lr']),
      seed: SEED,
    });
    await transfer.saveOrgan(organDir, trained);
    results['organ loss'] = [first, last];
    log(`organ (layers ${span.start}..${span.start + span.count - 1}) loss ${first.toFixed(3)} → ${last.toFixed(3)}`);
  }
  const organ = await transfer.loadOrgan(organDir);
  for (const n of ['full', 'pruned'] as Base[]) {
    const layers = (bases[n].config as LlamaLikeConfig).num_hidden_layers;
    const dir = join(OUT, n, 'with-organ');
    if (!existsSync(join(dir, 'config.json')))
      await transfer.writeTransplant(bases[n], organ, Math.floor(layers / 3), dir);
    const loss = await cached(`${n} organ`, async () => {
      const m = await loadModel(dir);
      const l = await heldOut(m, null);
      await m.close();
      return l;
    });
    log(`${n}: NOT organ inserted at ${Math.floor(layers / 3)}: ${loss.toFixed(4)}`);
  }

  // 4. both directions: Trans-LoRA from the source's real-data LoRA into the target
  for (const [s, t] of [
    ['full', 'pruned'],
    ['pruned', 'full'],
  ] as [Base, Base][]) {
    const runDir = join(OUT, `${s}-to-${t}`);
    if (!existsSync(join(runDir, 'final', 'adapter_config.json'))) {
      const tl = performance.now();
      const r = await transfer.transferLora({
        source: bases[s],
        sourceAdapterDir: join(OUT, s, 'real-lora', 'final'),
        kitDir: join(OUT, s, 'kit'),
        target: bases[t],
        targetTokenizer: tokenizer,
        keep: KEEP,
        candidatesPerRound: KEEP,
        maxRounds: 2,
        steps: STEPS,
        lr: LR,
        batch: 8,
        seed: SEED,
        outDir: runDir,
        log: (line) => log(`${s} → ${t}: ${line}`),
      });
      results[`filter ${s}-to-${t}`] = r.filter;
      const kl = r.history.map((h) => h.loss);
      results[`distill ${s}-to-${t}`] = { kl: [kl[0], kl[kl.length - 1]], seconds: (performance.now() - tl) / 1000 };
    }
    const moved = await cached(`${t} trans-lora from ${s}`, () => heldOut(bases[t], join(runDir, 'final')));
    log(`${s} → ${t}: Trans-LoRA ${moved.toFixed(4)}`);
  }
  await finish(flags, table(results));
  for (const m of Object.values(bases)) await m.close();
  await shutdownRuntime();
}

await main();
