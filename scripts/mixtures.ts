/**
 * The mixtures comparison on the composition pool's tasks (the four Brown fiction genres, demo base): ReMix on the
 * FFN and LoRA-Mixer on the attention projections, each against a single LoRA on the same modules with the same
 * activated parameter count (rank k·r), all trained on the same mixed-genre windows, then the held-out loss
 * (nats/byte) per genre, training time, and the routing's effective support size. Writes runs/mixtures/results.json
 * and prints the table as Markdown (docs/composition.md holds a copy).
 *
 *   node --import tsx scripts/mixtures.ts [--steps 24] [--batch 4] [--seq-len 128] [--eval-windows 8] [--seed 0]
 *   node --import tsx scripts/mixtures.ts --pool [--router-lr-ratio 1]   # the pool table: routers over frozen LoRAs
 *
 * With --pool it instead trains one rank-r FFN LoRA per genre (on that genre only, the pool of compose-pool.ts at
 * this size) and compares: their uniform mean (composition's `cat` merge with weights 1/n, as ReMix with k = n), the
 * best single genre LoRA per genre, and ReMix routing k of the n frozen genre LoRAs with a router trained by RLOO.
 *
 * A single LoRA is run as a one-expert LoRA-Mixer in its hard stage (every token to the one expert, scale α/rank):
 * the same graphs and loop as the mixtures, so times compare. LoRA-Mixer splits its steps between stage 1 (hard
 * routing by genre, experts train) and stage 2 (soft top-k, router trains, experts frozen).
 * Not here: the methods (src/peft/mixture/), the loop (src/demo/mixture.ts), the pool's merges (scripts/compose-pool.ts).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { readBrown, splitBrown } from '../src/demo/brown.ts';
import { DEMO_BASE_DIR } from '../src/demo/base.ts';
import { evalBatches, type LmBatch, tokenStream } from '../src/demo/data.ts';
import { type LoadedModel, loadModel } from '../src/models/index.ts';
import { evaluateMixture, type MixtureDomain, trainMixture } from '../src/demo/mixture.ts';
import { expertScale, MixtureModel, parseMixtureConfig } from '../src/peft/mixture/index.ts';
import { shutdownRuntime } from '../src/runtime/index.ts';

const GENRES = ['adventure', 'mystery', 'romance', 'science_fiction'] as const;
const { values: flags } = parseArgs({
  options: {
    steps: { type: 'string', default: '24' },
    batch: { type: 'string', default: '4' },
    'seq-len': { type: 'string', default: '128' },
    'eval-windows': { type: 'string', default: '8' },
    seed: { type: 'string', default: '0' },
    samples: { type: 'string', default: '2' },
    lr: { type: 'string', default: '2e-3' },
    out: { type: 'string', default: 'runs/mixtures' },
    pool: { type: 'boolean', default: false },
    'router-lr-ratio': { type: 'string', default: '1' },
  },
});
const steps = Number(flags.steps);
const B = Number(flags.batch);
const T = Number(flags['seq-len']);
const evalWindows = Number(flags['eval-windows']);
const seed = Number(flags.seed);
const lr = Number(flags.lr);
const [E, r, k] = [4, 4, 2];
const FFN = ['gate_proj', 'up_proj', 'down_proj'];
const ATTN = ['q_proj', 'k_proj', 'v_proj', 'o_proj'];

/** The runs: name, config, stage-2 steps and stage-1 steps. */
const RUNS: { name: string; config: Record<string, unknown>; steps: number; hardSteps: number }[] = [
  {
    name: `LoRA r${k * r} on FFN`,
    config: { method: 'lora_mixer', target_modules: FFN, num_experts: 1, r: k * r, top_k: 1, lora_alpha: 2 * k * r },
    steps: 0,
    hardSteps: steps,
  },
  {
    name: `ReMix n${E} r${r} k${k} M${flags.samples} on FFN`,
    config: { method: 'remix', num_experts: E, r, top_k: k, lora_alpha: 2 * k * r, samples: Number(flags.samples) },
    steps,
    hardSteps: 0,
  },
  {
    name: `LoRA r${k * r} on attention`,
    config: { method: 'lora_mixer', target_modules: ATTN, num_experts: 1, r: k * r, top_k: 1, lora_alpha: 2 * k * r },
    steps: 0,
    hardSteps: steps,
  },
  {
    name: `LoRA-Mixer E${E} r${r} K${k} on attention`,
    config: { method: 'lora_mixer', num_experts: E, r, top_k: k, lora_alpha: 2 * r },
    steps: steps - Math.floor(steps / 2),
    hardSteps: Math.floor(steps / 2),
  },
  {
    name: `LoRA-Mixer E${E} r${r} K${k} on attention, experts train in stage 2`,
    config: { method: 'lora_mixer', num_experts: E, r, top_k: k, lora_alpha: 2 * r, train_experts_stage2: true },
    steps: steps - Math.floor(steps / 2),
    hardSteps: Math.floor(steps / 2),
  },
];

/** The pool runs: one LoRA per genre, then mixtures over them as frozen experts. */
async function poolRows(model: LoadedModel, domains: MixtureDomain[], held: Record<string, LmBatch[]>): Promise<Row[]> {
  const rows: Row[] = [];
  const evalAll = async (name: string, mixture: MixtureModel, seconds: number) => {
    const loss: Record<string, number> = {};
    let ess = 0,
      essRouter = 0;
    for (const g of GENRES) {
      const e = await evaluateMixture(model, mixture, held[g], B, T);
      loss[g] = e.loss;
      ess += e.essWeights / GENRES.length;
      essRouter += e.essRouter / GENRES.length;
    }
    const row = { name, activated: mixture.activatedParams(), seconds, loss, ess, essRouter };
    console.error(`${name}: ${GENRES.map((g) => loss[g].toFixed(4)).join(' ')} (${seconds.toFixed(0)} s)`);
    rows.push(row);
    return row;
  };
  const single = { method: 'lora_mixer', target_modules: FFN, num_experts: 1, r, top_k: 1, lora_alpha: 2 * r };
  const genreLoras: MixtureModel[] = [];
  for (const [i, g] of GENRES.entries()) {
    const m = MixtureModel.create(parseMixtureConfig(single, g), model.modules());
    const t = performance.now();
    await trainMixture({
      model,
      mixture: m,
      domains: [domains[i]],
      steps: 0,
      hardSteps: steps,
      batch: B,
      seqLen: T,
      lr,
      seed,
    });
    await evalAll(`LoRA r${r} ${g} (FFN)`, m, (performance.now() - t) / 1000);
    genreLoras.push(m);
  }
  const plug = (target: MixtureModel) => {
    for (const mod of target.modules)
      genreLoras.forEach((src, e) => {
        const A = src.values.get(`${mod.path}.experts_A`)!;
        const Bv = src.values.get(`${mod.path}.experts_B`)!;
        target.setExpert(mod.path, e, A, Bv, expertScale(src.config));
      });
  };
  const mean = MixtureModel.create(
    parseMixtureConfig({ method: 'remix', num_experts: E, r, top_k: E, lora_alpha: 2 * E * r }, 'mean'),
    model.modules(),
  );
  plug(mean);
  await evalAll(`mean of the ${E} genre LoRAs (cat merge)`, mean, 0);
  const remix = MixtureModel.create(
    parseMixtureConfig(
      {
        method: 'remix',
        num_experts: E,
        r,
        top_k: k,
        lora_alpha: 2 * k * r,
        samples: Number(flags.samples),
        train_experts: false,
      },
      'remix-pool',
    ),
    model.modules(),
  );
  plug(remix);
  // the control: the same experts routed by the untrained router (top-k of the initial q)
  await evalAll(`ReMix k${k} of the ${E} frozen genre LoRAs, untrained router`, remix, 0);
  const t = performance.now();
  const routerLrRatio = Number(flags['router-lr-ratio']);
  await trainMixture({ model, mixture: remix, domains, steps, batch: B, seqLen: T, lr, seed, routerLrRatio });
  const label = routerLrRatio === 1 ? '' : `, router lr ×${routerLrRatio}`;
  await evalAll(
    `ReMix k${k} of the ${E} frozen genre LoRAs, router only${label}`,
    remix,
    (performance.now() - t) / 1000,
  );
  return rows;
}

interface Row {
  name: string;
  activated: number;
  seconds: number;
  loss: Record<string, number>;
  ess: number;
  essRouter: number;
}

async function main() {
  const t0 = performance.now();
  const split = splitBrown(readBrown({ side: 'fiction' }), 'fiction');
  const domains = GENRES.map((g) => ({ name: g, stream: tokenStream(split.train.filter((f) => f.genre === g)) }));
  const held: Record<string, LmBatch[]> = {};
  for (const g of GENRES)
    held[g] = evalBatches(tokenStream(split.heldOut.filter((f) => f.genre === g)), T, B, evalWindows);
  const model = await loadModel(DEMO_BASE_DIR);
  const rows: Row[] = [];
  try {
    // the base: a fresh mixture (every B is zero) evaluates to the frozen model
    const base = MixtureModel.create(parseMixtureConfig(RUNS[0].config, 'base'), model.modules());
    const baseLoss: Record<string, number> = {};
    for (const g of GENRES) baseLoss[g] = (await evaluateMixture(model, base, held[g], B, T)).loss;
    rows.push({ name: 'base', activated: 0, seconds: 0, loss: baseLoss, ess: 0, essRouter: 0 });
    if (flags.pool) rows.push(...(await poolRows(model, domains, held)));
    for (const run of flags.pool ? [] : RUNS) {
      const mixture = MixtureModel.create(parseMixtureConfig(run.config, run.name), model.modules());
      const t = performance.now();
      await trainMixture({
        model,
        mixture,
        domains,
        steps: run.steps,
        hardSteps: run.hardSteps,
        batch: B,
        seqLen: T,
        lr,
        seed,
      });
      const seconds = (performance.now() - t) / 1000;
      await mixture.save(join(flags.out!, run.name.replace(/ /g, '-')), DEMO_BASE_DIR);
      const loss: Record<string, number> = {};
      let ess = 0,
        essRouter = 0;
      for (const g of GENRES) {
        const e = await evaluateMixture(model, mixture, held[g], B, T);
        loss[g] = e.loss;
        ess += e.essWeights / GENRES.length;
        essRouter += e.essRouter / GENRES.length;
      }
      rows.push({ name: run.name, activated: mixture.activatedParams(), seconds, loss, ess, essRouter });
      console.error(`${run.name}: ${GENRES.map((g) => loss[g].toFixed(4)).join(' ')} (${seconds.toFixed(0)} s)`);
    }
  } finally {
    await model.close();
  }
  const total = (performance.now() - t0) / 1000;
  await mkdir(flags.out!, { recursive: true });
  await writeFile(
    join(flags.out!, flags.pool ? 'results-pool.json' : 'results.json'),
    `${JSON.stringify({ steps, B, T, evalWindows, seed, lr, rows, seconds: total }, null, 2)}\n`,
  );
  const head = `| run | activated | ${GENRES.join(' | ')} | mean | train s | ESS weights | ESS router |`;
  const rule = `|---|---:|${GENRES.map(() => '---:').join('|')}|---:|---:|---:|---:|`;
  const lines = rows.map((row) => {
    const mean = GENRES.reduce((s, g) => s + row.loss[g], 0) / GENRES.length;
    const cells = [...GENRES.map((g) => row.loss[g].toFixed(4)), mean.toFixed(4)];
    return `| ${row.name} | ${row.activated} | ${cells.join(' | ')} | ${row.seconds.toFixed(0)} | ${row.ess ? row.ess.toFixed(2) : '—'} | ${row.essRouter ? row.essRouter.toFixed(2) : '—'} |`;
  });
  console.log([head, rule, ...lines].join('\n'));
  console.log(`\n(${total.toFixed(0)} s; ${steps} steps of ${B}×${T} bytes, lr ${lr}, seed ${seed})`);
}

try {
  await main();
} finally {
  await shutdownRuntime();
}
