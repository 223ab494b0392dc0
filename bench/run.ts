/**
 * `npm run bench`: lorakit's workloads (LoRA training on a GPT-2-small and a SmolLM-135M shape, eval, generation),
 * each in a fresh process, then a table and bench/results/lorakit.json. `npm run bench -- --help` lists options.
 * The machine's fp32 MatMul peak (2048³ through ORT, same threads) is measured first; MFU is against it.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { RESULTS, bestOf, machine, metricsOf, parseArgs, runLorakit, table, type Result } from './common.ts';
import { ensureModel } from './models.ts';
import { matmulWorkload, suite, type Workload } from './workloads.ts';

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const m = machine();
  console.log(
    `lorakit bench on ${m.cpu} (${m.cores} cores), load ${m.loadBefore.join(' ')}; batch ${o.batch}, seq ${o.seq}, ` +
      `r ${o.rank}, ${o.steps} steps`,
  );
  await ensureModel('gpt2');
  await ensureModel('smollm');
  const repeat = async (w: Workload) => {
    const rs: Result[] = [];
    for (let r = 0; r < o.repeat; r++) rs.push(await runLorakit(w));
    return bestOf(rs);
  };
  const peak = await repeat(matmulWorkload(o));
  console.log(`fp32 MatMul 2048³ through ORT: ${peak.gflops.toFixed(1)} GFLOP/s`);
  const results: Result[] = [peak];
  for (const w of suite(o).filter((x) => !o.only || o.only.test(x.id))) {
    if (o.compile) w.compile = o.compile;
    const r = await repeat(w);
    results.push(r);
    console.log(
      `  ${w.id}: ${metricsOf(r, peak.gflops)
        .map((x) => `${x.name} ${x.value.toFixed(1)} ${x.unit}`)
        .join(', ')} (load ${r.load1.toFixed(2)})`,
    );
  }
  const rows = results.flatMap((r) =>
    metricsOf(r, peak.gflops).map((x) => ({ workload: r.id, metric: x.name, unit: x.unit, value: x.value })),
  );
  console.log(
    `\n${table([['workload', 'metric', 'value', 'unit'], ...rows.map((r) => [r.workload, r.metric, r.value, r.unit])])}`,
  );
  const out = o.out ?? join(RESULTS, 'lorakit.json');
  mkdirSync(join(out, '..'), { recursive: true });
  const json = {
    machine: { ...m, loadAfter: loadavg().map((x) => Math.round(x * 100) / 100) },
    date: new Date().toISOString(),
    options: { ...o, only: o.only?.source ?? null },
    matmulGflops: peak.gflops,
    rows,
    raw: results,
  };
  writeFileSync(out, `${JSON.stringify(json, null, 2)}\n`);
  console.log(`\nwrote ${out}`);
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
