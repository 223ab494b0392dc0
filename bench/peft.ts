/**
 * `npm run bench:peft`: the same workloads through lorakit (bench/lorakit.ts) and through transformers + PEFT
 * (interop/bench_peft.py), alternating per workload (which side goes first alternates too, so drift in the machine's
 * load hits both), each run in a fresh process; with --repeat N each side runs N times and its best is reported. Writes
 * bench/results/compare.json:
 *   {machine: {cpu, cores}, date, rows: [{workload, lorakit, peft, unit, ratio}]}
 * ratio = lorakit/PEFT for throughput rows and PEFT/lorakit for memory and time rows: above 1 favours lorakit.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import {
  RESULTS,
  bestOf,
  ensureVenv,
  machine,
  metricsOf,
  parseArgs,
  runLorakit,
  runPeft,
  table,
  type Result,
} from './common.ts';
import { ensureModel } from './models.ts';
import { gemmShapes } from './gemm.ts';
import { gemmWorkload, matmulWorkload, modelDims, stepFlops, suite, type Workload } from './workloads.ts';

/** PEFT results carry no FLOP count: the same formula as lorakit's, with PEFT's own adapter size. */
function withFlops(w: Workload, r: Result): Result {
  if ((w.kind !== 'train' && w.kind !== 'eval') || r.gflops !== undefined) return r;
  const flops = stepFlops(w.kind, modelDims(w.model), w.batch, w.seq, r.adapterParams);
  return { ...r, flopsPerStep: flops, gflops: flops / r.msPerStep / 1e6 };
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  await ensureVenv();
  const m = machine();
  console.log(
    `lorakit vs PEFT on ${m.cpu} (${m.cores} cores), load ${m.loadBefore.join(' ')}; batch ${o.batch}, seq ` +
      `${o.seq}, r ${o.rank}, ${o.steps} steps`,
  );
  await ensureModel('gpt2');
  await ensureModel('smollm');
  const mm = matmulWorkload(o);
  const peaks = { lorakit: await runLorakit(mm), peft: await runPeft(mm) };
  for (let r = 1; r < o.repeat; r++) {
    peaks.lorakit = bestOf([peaks.lorakit, await runLorakit(mm)]);
    peaks.peft = bestOf([peaks.peft, await runPeft(mm)]);
  }
  console.log(
    `fp32 MatMul 2048³: ORT ${peaks.lorakit.gflops.toFixed(1)} GFLOP/s, torch ${peaks.peft.gflops.toFixed(1)} ` +
      `GFLOP/s (MFU is against ORT's, the machine's measured peak)`,
  );
  const peak = peaks.lorakit.gflops as number;
  const pairs: { w: Workload; lorakit: Result; peft: Result }[] = [{ w: mm, ...peaks }];
  // The step's own GEMMs alone, per model, on both engines (gemm.ts): what bounds a step when nothing else costs.
  const gemms = (['gpt2', 'smollm'] as const).map((model) => gemmWorkload(o, model, gemmShapes(model)));
  const work = [...gemms, ...suite(o)].filter((x) => !o.only || o.only.test(x.id));
  for (const [i, w] of work.entries()) {
    if (o.compile) w.compile = o.compile;
    const runs: Result[] = [];
    for (let r = 0; r < o.repeat; r++) {
      const lorakitFirst = (i + r) % 2 === 0; // ABBA: neither side always runs first
      runs.push(await (lorakitFirst ? runLorakit : runPeft)(w), await (lorakitFirst ? runPeft : runLorakit)(w));
    }
    const lk = bestOf(runs.filter((r) => r.side === 'lorakit'));
    const pf = bestOf(runs.filter((r) => r.side === 'peft').map((r) => withFlops(w, r)));
    pairs.push({ w, lorakit: lk, peft: pf });
    const ms = metricsOf(lk, peak),
      ps = metricsOf(pf, peak);
    console.log(
      `  ${w.id}: ` +
        `${ms.map((x, j) => `${x.name} ${x.value.toFixed(1)} vs ${ps[j].value.toFixed(1)} ${x.unit}`).join(', ')} ` +
        `(load ${lk.load1.toFixed(2)}/${pf.load1.toFixed(2)})`,
    );
  }
  const rows = pairs.flatMap(({ w, lorakit, peft }) => {
    const ls = metricsOf(lorakit, peak),
      ps = metricsOf(peft, peak);
    return ls.map((x, j) => ({
      workload: `${w.id}: ${x.name}`,
      lorakit: x.value,
      peft: ps[j].value,
      unit: x.unit,
      ratio: x.higher ? x.value / ps[j].value : ps[j].value / x.value,
    }));
  });
  console.log(
    `\n${table([['workload', 'lorakit', 'PEFT', 'unit', 'ratio'], ...rows.map((r) => [r.workload, r.lorakit, r.peft, r.unit, r.ratio])])}`,
  );
  const out = o.out ?? join(RESULTS, 'compare.json');
  mkdirSync(join(out, '..'), { recursive: true });
  const json = {
    machine: {
      cpu: m.cpu,
      cores: m.cores,
      loadBefore: m.loadBefore,
      loadAfter: loadavg().map((x) => Math.round(x * 100) / 100),
    },
    date: new Date().toISOString(),
    options: { ...o, only: o.only?.source ?? null },
    rows,
    raw: pairs.map((p) => ({ workload: p.w.id, lorakit: p.lorakit, peft: p.peft })),
  };
  writeFileSync(out, `${JSON.stringify(json, null, 2)}\n`);
  console.log(`\nwrote ${out}`);
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
