/**
 * `npm run bench:quant`: the quantized-base comparison of issue 11 in one command, one table. For each training
 * workload (GPT-2-small and SmolLM-135M shapes with random weights, and the real SmolLM2-135M-Instruct from the
 * shared GGUF where ../shared is present, which both sides load from the file; attention and all-linear targets,
 * batch 4 × 256, r 16) it runs five
 * settings, each in a fresh process, interleaved (the order rotates every round, so a change in the machine's load
 * hits every setting): lorakit with a float32 base, lorakit with an int8 base (docs/quantization.md), the same with
 * the output head quantized too (`quantize_head`), PEFT float32, PEFT under torch.autocast(cpu, bfloat16). Round 0 of each lorakit setting runs on an empty cache folder of its own
 * (cold: the session cache and the quantized-weight cache are built), later rounds on the same folder (warm: what a
 * user's second run sees). Throughput and peak RSS are the best over rounds; time to first step is reported cold and
 * warm. Prints the machine (CPU, its SIMD flags, cores), the load average around every run, the table, and which of
 * the issue's floors hold; writes bench/results/quant.json. Both sides run with glibc's malloc told to keep freed
 * memory (`--malloc retain`, the default; workloads.ts Malloc says why), and each run's page faults per step are logged.
 *   npm run bench:quant                         # --repeat 2 (1 cold + 1 warm round), --steps 3, --warmup 1
 *   npm run bench:quant -- --only smollm --steps 1 --warmup 0 --skip 'PEFT bf16'
 *   npm run bench:quant -- --only smollm2 --skip 'fp32'      # the real-weight rows, int8 and PEFT bf16
 * Not here: running one workload (lorakit.ts, interop/bench_peft.py), the suite of bench:peft (peft.ts).
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpuFeatures } from '../src/io/host.ts';
import { kernelsFor } from '../src/nn/index.ts';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { RESULTS, ensureVenv, fmt, machine, parseArgs, runLorakit, runPeft, table, type Result } from './common.ts';
import { ensureModel, type ModelName, SMOLLM2_GGUF } from './models.ts';
import type { Workload } from './workloads.ts';

/** The four settings compared, in the table's column order. */
const SETTINGS = ['lorakit fp32', 'lorakit int8', 'lorakit int8 head', 'PEFT fp32', 'PEFT bf16'] as const;
type Setting = (typeof SETTINGS)[number];

/** The SIMD and matrix-unit flags of the CPU that decide which kernels are fast (x86 /proc/cpuinfo names). */
function cpuFlags(): string {
  const want = ['avx2', 'fma', 'avx512f', 'avx512_vnni', 'avx_vnni', 'avx512_bf16', 'amx_tile', 'amx_int8', 'amx_bf16'];
  const have = cpuFeatures();
  if (have.size === 0) return '(no /proc/cpuinfo)';
  return `${want.map((f) => `${f}${have.has(f) ? '+' : '-'}`).join(' ')}; int8 kernels: ${JSON.stringify(kernelsFor(have))}`;
}

/** One run of `setting` for workload `w`; lorakit runs get `cache` as their LORAKIT_CACHE. */
function runSetting(setting: Setting, w: Workload, cache: string): Promise<Result> {
  if (setting === 'lorakit fp32') return runLorakit(w, { LORAKIT_CACHE: cache });
  if (setting === 'lorakit int8') return runLorakit({ ...w, quantize: 'int8' }, { LORAKIT_CACHE: cache });
  if (setting === 'lorakit int8 head')
    return runLorakit({ ...w, quantize: 'int8', quantizeHead: true }, { LORAKIT_CACHE: cache });
  return runPeft(setting === 'PEFT bf16' ? { ...w, peftAutocast: 'bf16' } : w);
}

interface Row {
  id: string;
  runs: Record<Setting, Result[]>;
}

/** The best value of `k` over runs, NaN when the setting did not run (skipped). */
const best = (rs: Result[], k: string, higher: boolean) =>
  rs.length === 0 ? Number.NaN : (higher ? Math.max : Math.min)(...rs.map((r) => r[k] as number));
/** A table cell: the number, or a dash for a setting that did not run. */
const cell = (x: number): number | string => (Number.isFinite(x) ? x : '—');
const ratio = (x: number): string => (Number.isFinite(x) ? `${fmt(x)}x` : '—');

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  // --skip REGEX: settings left out (e.g. 'PEFT bf16' where the CPU has no bfloat16 units and a step takes minutes)
  const at = argv.indexOf('--skip');
  const skip = at >= 0 ? new RegExp(argv.splice(at, 2)[1]) : null;
  const settings = SETTINGS.filter((s) => !skip?.test(s));
  const o = parseArgs(argv);
  o.repeat = Math.max(2, o.repeat === 1 ? 2 : o.repeat); // at least one cold and one warm round
  await ensureVenv();
  const m = machine();
  const flags = cpuFlags();
  console.log(`quantized-base bench on ${m.cpu} (${m.cores} cores; ${flags}), load ${m.loadBefore.join(' ')}`);
  console.log(
    `batch ${o.batch} x ${o.seq}, r ${o.rank}, ${o.steps} timed steps after ${o.warmup} warm-up, ${o.repeat} rounds, ` +
      `malloc ${o.malloc}`,
  );
  await ensureModel('gpt2');
  await ensureModel('smollm');
  // the real SmolLM2 from the shared GGUF (both sides load the file) where ../shared is present
  const models: ModelName[] = existsSync(SMOLLM2_GGUF) ? ['gpt2', 'smollm', 'smollm2'] : ['gpt2', 'smollm'];
  if (models.length === 2) console.log(`note: ${SMOLLM2_GGUF} is absent; the real-weight smollm2 rows are skipped`);
  const work: Workload[] = [];
  for (const model of models)
    for (const targets of ['attn', 'all'] as const)
      work.push({
        id: `train ${model} ${targets}`,
        kind: 'train',
        model,
        targets,
        batch: o.batch,
        seq: o.seq,
        rank: o.rank,
        newTokens: o.newTokens,
        warmup: o.warmup,
        steps: o.steps,
        threads: o.threads,
        peftAttention: o.peftAttention,
        malloc: o.malloc,
      });
  const scratch = mkdtempSync(join(tmpdir(), 'lorakit-bench-quant-'));
  const rows: Row[] = [];
  const loads: number[] = [];
  try {
    for (const [i, w] of work.filter((x) => !o.only || o.only.test(x.id)).entries()) {
      const row: Row = { id: w.id, runs: Object.fromEntries(SETTINGS.map((s) => [s, [] as Result[]])) as Row['runs'] };
      for (let round = 0; round < o.repeat; round++) {
        const order = settings.map((_, j) => settings[(j + i + round) % settings.length]);
        for (const s of order) {
          const cache = join(scratch, `${w.id}-${s}`.replace(/\W+/g, '-'));
          if (round === 0) rmSync(cache, { recursive: true, force: true });
          const r = await runSetting(s, w, cache);
          r.cold = round === 0;
          loads.push(r.load1);
          row.runs[s].push(r);
          console.log(
            `  ${w.id} | ${s}${s.startsWith('lorakit') ? (round === 0 ? ' cold' : ' warm') : ''}: ` +
              `${fmt(r.tokensPerSec)} tok/s, first step ${fmt(r.timeToFirstStepMs / 1000)} s, ` +
              `peak RSS ${fmt(r.peakRssMb)} MB, ${fmt(r.minorFaultsPerStep)} faults/step (load ${r.load1.toFixed(1)})`,
          );
        }
      }
      rows.push(row);
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  report(rows, o, m, flags, loads, skip);
}

function report(
  rows: Row[],
  o: ReturnType<typeof parseArgs>,
  m: ReturnType<typeof machine>,
  flags: string,
  loads: number[],
  skip: RegExp | null,
) {
  const tps = (r: Row, s: Setting) => best(r.runs[s], 'tokensPerSec', true);
  const rss = (r: Row, s: Setting) => best(r.runs[s], 'peakRssMb', false);
  const ttfs = (r: Row, s: Setting, cold?: boolean) =>
    best(
      r.runs[s].filter((x) => cold === undefined || x.cold === cold),
      'timeToFirstStepMs',
      false,
    ) / 1000;
  // the faster PEFT setting of those that ran (a skipped one is NaN and never the best)
  const peftBest = (r: Row): Setting =>
    tps(r, 'PEFT bf16') > tps(r, 'PEFT fp32') || Number.isNaN(tps(r, 'PEFT fp32')) ? 'PEFT bf16' : 'PEFT fp32';
  const header = [
    'train, batch 4 x 256, r 16',
    ...SETTINGS.map((s) => `${s} tok/s`),
    'PEFT best',
    'int8 / best',
    'int8 head / best',
    'fp32 / PEFT fp32',
  ];
  const speed = rows.map((r) => [
    r.id.replace(/^train /, ''),
    ...SETTINGS.map((s) => cell(tps(r, s))),
    peftBest(r).replace('PEFT ', ''),
    ratio(tps(r, 'lorakit int8') / tps(r, peftBest(r))),
    ratio(tps(r, 'lorakit int8 head') / tps(r, peftBest(r))),
    ratio(tps(r, 'lorakit fp32') / tps(r, 'PEFT fp32')),
  ]);
  const memory = rows.map((r) => [
    r.id.replace(/^train /, ''),
    ...SETTINGS.map((s) => cell(rss(r, s))),
    ratio(rss(r, 'lorakit int8') / rss(r, peftBest(r))),
  ]);
  const first = rows.map((r) => [
    r.id.replace(/^train /, ''),
    cell(ttfs(r, 'lorakit fp32', true)),
    cell(ttfs(r, 'lorakit fp32', false)),
    cell(ttfs(r, 'lorakit int8', true)),
    cell(ttfs(r, 'lorakit int8', false)),
    cell(ttfs(r, 'PEFT fp32')),
    cell(ttfs(r, 'PEFT bf16')),
    ratio(ttfs(r, peftBest(r)) / ttfs(r, 'lorakit int8', false)),
  ]);
  const floors = rows.flatMap((r) => {
    const b = peftBest(r);
    const f = (what: string, x: number, ok: boolean) => [`${r.id}: ${what}`, ratio(x), ok ? 'yes' : 'no'];
    const int8 = tps(r, 'lorakit int8') / tps(r, b);
    const fp32 = tps(r, 'lorakit fp32') / tps(r, 'PEFT fp32');
    const mem = rss(r, 'lorakit int8') / rss(r, b);
    const t = ttfs(r, 'lorakit int8', false) / ttfs(r, b);
    const head = tps(r, 'lorakit int8 head') / tps(r, b);
    return [
      f('int8 tokens/s >= 1.2x PEFT best', int8, int8 >= 1.2),
      ...(Number.isFinite(head) ? [f('int8 + quantized head tokens/s >= 1.2x PEFT best', head, head >= 1.2)] : []),
      f('fp32 tokens/s >= 1.0x PEFT fp32', fp32, fp32 >= 1),
      f('int8 peak RSS <= PEFT best', mem, mem <= 1),
      f('int8 first step (warm) <= PEFT best', t, t <= 1),
    ].filter((x) => x[1] !== '—'); // a floor whose settings were skipped is not judged
  });
  const after = loadavg().map((x) => Math.round(x * 100) / 100);
  console.log(
    `\ntokens/s (best of ${o.repeat} rounds; PEFT best = the faster PEFT setting)\n${table([header, ...speed])}`,
  );
  console.log(
    `\npeak RSS, MB (lowest of the rounds)\n${table([['workload', ...SETTINGS, 'int8 / PEFT best'], ...memory])}`,
  );
  console.log(
    `\ntime to first step, s (load + build + compile + first step; lorakit cold = empty cache folder)\n${table([
      [
        'workload',
        'lk fp32 cold',
        'lk fp32 warm',
        'lk int8 cold',
        'lk int8 warm',
        'PEFT fp32',
        'PEFT bf16',
        'PEFT best / int8 warm',
      ],
      ...first,
    ])}`,
  );
  if (skip) console.log(`\nnot run: ${SETTINGS.filter((s) => skip.test(s)).join(', ')} (--skip)`);
  console.log(`\nfloors (issue 11, part 4)\n${table([['floor', 'ratio', 'holds'], ...floors])}`);
  console.log(
    `\nmachine: ${m.cpu}, ${m.cores} cores, ${flags}; load average before ${m.loadBefore.join(' ')}, after ` +
      `${after.join(' ')}, 1-minute load at the runs' starts ${fmt(Math.min(...loads))}–${fmt(Math.max(...loads))}`,
  );
  const out = o.out ?? join(RESULTS, 'quant.json');
  mkdirSync(join(out, '..'), { recursive: true });
  const json = {
    machine: { cpu: m.cpu, cores: m.cores, flags, loadBefore: m.loadBefore, loadAfter: after },
    date: new Date().toISOString(),
    options: { ...o, only: o.only?.source ?? null },
    speed,
    memory,
    firstStep: first,
    floors,
    raw: rows,
  };
  writeFileSync(out, `${JSON.stringify(json, null, 2)}\n`);
  console.log(`wrote ${out}`);
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
