/**
 * Writes the generated parts of bench/RESULTS.md from the JSON that runs left in bench/results/: the comparison table
 * (compare.json), the targets, the profile tables (profile-*.json) and the optimisation log (experiments.json, whose
 * measured columns are read from the result files it names). Text outside the `<!-- gen:NAME -->` … `<!-- /gen -->`
 * markers is left alone; no number in a generated block is typed by hand.
 *   node --import tsx bench/report.ts
 */
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { RESULTS, ROOT, fmt, readJson } from './common.ts';

const md = (rows: (string | number)[][]) => {
  const cells = rows.map((r) => r.map((c) => (typeof c === 'number' ? fmt(c) : c)));
  return [
    `| ${cells[0].join(' | ')} |`,
    `|${cells[0].map((_, j) => (j === 0 ? '---' : '--:')).join('|')}|`,
    ...cells.slice(1).map((r) => `| ${r.join(' | ')} |`),
  ].join('\n');
};

interface Row {
  workload: string;
  lorakit: number;
  peft: number;
  unit: string;
  ratio: number;
}

function compareBlock(c: any): string {
  const load = (xs: number[]) => xs.map((x) => x.toFixed(2)).join(' / ');
  const lines = [
    `Run ${c.date} on ${c.machine.cpu}, ${c.machine.cores} cores; load average (1/5/15 min) ` +
      `${load(c.machine.loadBefore)} before, ${load(c.machine.loadAfter)} after.`,
    `Options: batch ${c.options.batch}, seq ${c.options.seq}, r ${c.options.rank}, ${c.options.warmup} warm-up + ` +
      `${c.options.steps} timed steps (median), ${c.options.threads} ` +
      `threads${(c.options.repeat ?? 1) > 1 ? `, best of ${c.options.repeat} runs per side (ABBA order)` : ''}${c.options.compile ? `, compile ${JSON.stringify(c.options.compile)}` : ''}.`,
    'ratio > 1 favours lorakit (lorakit/PEFT for throughput and MFU, PEFT/lorakit for time and memory).',
    '',
    md([
      ['workload: metric', 'lorakit', 'PEFT', 'unit', 'ratio'],
      ...(c.rows as Row[]).map((r) => [r.workload, r.lorakit, r.peft, r.unit, r.ratio]),
    ]),
  ];
  const loads = (c.raw as any[]).map((p) => `${p.workload} ${p.lorakit.load1.toFixed(1)}/${p.peft.load1.toFixed(1)}`);
  lines.push(
    '',
    `Lowest 1-minute load average when a run started (lorakit/PEFT; our own runs raise it to about 2): ` +
      `${loads.join('; ')}.`,
  );
  return lines.join('\n');
}

function targetsBlock(c: any): string {
  const rows = c.rows as Row[];
  const find = (w: string) => rows.find((r) => r.workload === w);
  const out: (string | number)[][] = [['target', 'measured', 'met']];
  for (const m of ['gpt2', 'smollm']) {
    for (const t of ['attn', 'all']) {
      const r = find(`train ${m} ${t}: tokens/s`);
      if (r) out.push([`train ${m} ${t}: tokens/s ≥ 1.3× PEFT`, `${fmt(r.ratio)}×`, r.ratio >= 1.3 ? 'yes' : 'no']);
      const f = find(`train ${m} ${t}: MFU`);
      if (f) out.push([`train ${m} ${t}: MFU ≥ 60%`, `${fmt(f.lorakit)}%`, f.lorakit >= 60 ? 'yes' : 'no']);
      const p = find(`train ${m} ${t}: peak RSS`);
      if (p)
        out.push([
          `train ${m} ${t}: peak RSS ≤ PEFT`,
          `${fmt(p.lorakit)} vs ${fmt(p.peft)} MB`,
          p.ratio >= 1 ? 'yes' : 'no',
        ]);
    }
    for (const b of [1, 8]) {
      const r = find(`gen ${m} b${b}: decode tokens/s`);
      if (r) out.push([`gen ${m} b${b}: decode tokens/s ≥ PEFT`, `${fmt(r.ratio)}×`, r.ratio >= 1 ? 'yes' : 'no']);
    }
  }
  return md(out);
}

/**
 * How fast a step could be if nothing but its frozen GEMMs took time: per train row, each side's step time split into
 * the step's GEMMs measured alone (the `gemm <model>` rows: every Linear shape forward and backward) and the rest
 * (attention, norms, activations, loss, adapters, optimizer, framework), and the ratio over PEFT that lorakit would
 * reach with its GEMMs at their measured speed and everything else free.
 */
function ceilingBlock(c: any): string {
  const raw = c.raw as { workload: string; lorakit: any; peft: any }[];
  const out: (string | number)[][] = [
    [
      'train row',
      'lorakit ms/step',
      'of which GEMMs',
      'rest',
      'PEFT ms/step',
      'of which GEMMs',
      'rest',
      "ratio if lorakit's rest were 0",
      'rest lorakit may take for 1.3×',
    ],
  ];
  for (const p of raw.filter((x) => x.workload.startsWith('train '))) {
    const gemm = raw.find((x) => x.workload === `gemm ${p.workload.split(' ')[1]}`);
    if (!gemm) continue;
    const [lk, pf, lg, pg] = [p.lorakit.msPerStep, p.peft.msPerStep, gemm.lorakit.msPerStep, gemm.peft.msPerStep];
    out.push([p.workload, lk, lg, lk - lg, pf, pg, pf - pg, `${fmt(pf / lg)}×`, `${fmt(pf / 1.3 - lg)} ms`]);
  }
  return out.length > 1 ? md(out) : '(no gemm rows in compare.json: run npm run bench:peft)';
}

function profileBlock(): string {
  const files = existsSync(RESULTS)
    ? readdirSync(RESULTS)
        .filter((f) => /^profile-.*\.json$/.test(f))
        .sort()
    : [];
  return files
    .map((f) => {
      const p = readJson(join(RESULTS, f));
      const pct = (ms: number) => `${((100 * ms) / p.kernelMs).toFixed(1)}%`;
      return [
        `**${p.workload}** (batch ${p.batch}, seq ` +
          `${p.seq}${Object.keys(p.compile ?? {}).length ? `, ${JSON.stringify(p.compile)}` : ''}; ${p.date}): ` +
          `kernel time ${fmt(p.kernelMs)} ms per step (sum over nodes of each node's fastest of the profiled ` +
          `runs); wall ${p.wallMs.map(fmt).join(' / ')} ms.`,
        '',
        md([['part', 'ms', 'share'], ...p.byPart.map((r: any) => [r.key, r.ms, pct(r.ms)])]),
        '',
        md([
          ['op (top 10)', 'ms', 'share', 'nodes'],
          ...p.byOp.slice(0, 10).map((r: any) => [r.key, r.ms, pct(r.ms), String(r.count)]),
        ]),
        '',
        md([
          ['part / op (top 12)', 'ms', 'share', 'nodes'],
          ...p.byPartOp.slice(0, 12).map((r: any) => [r.key, r.ms, pct(r.ms), String(r.count)]),
        ]),
      ].join('\n');
    })
    .join('\n\n');
}

/**
 * experiments.json: [{name, change, predicted, metric, before, after}], before/after a result file or a list of them
 * (interleaved rounds of the two builds; the best round per build is reported), relative to bench/results.
 */
function experimentsBlock(): string {
  const path = join(RESULTS, 'experiments.json');
  if (!existsSync(path)) return '(none yet)';
  const one = (file: string, metric: string): { value: number; higher: boolean } | null => {
    if (!existsSync(join(RESULTS, file))) return null;
    const rows = readJson(join(RESULTS, file)).rows as (Row & { metric?: string; value?: number })[];
    const r = rows.find((x) => x.workload === metric || `${x.workload}: ${x.metric}` === metric);
    if (!r) throw new Error(`${file} has no row "${metric}"`);
    return { value: r.value ?? r.lorakit, higher: r.unit !== 'MB' && r.unit !== 'ms' && r.unit !== 's' };
  };
  const value = (files: string | string[], metric: string): number | null => {
    const vs = (Array.isArray(files) ? files : [files]).map((f) => one(f, metric));
    if (vs.some((v) => v === null)) return null;
    const xs = vs.map((v) => v!.value);
    return vs[0]!.higher ? Math.max(...xs) : Math.min(...xs);
  };
  const rows = (readJson(path) as any[]).map((e) => {
    const b = value(e.before, e.metric),
      a = value(e.after, e.metric);
    if (a === null || b === null) return [e.name, e.change, e.predicted, e.metric, '(not run)', '', ''];
    return [e.name, e.change, e.predicted, e.metric, b, a, `${a >= b ? '+' : ''}${fmt((100 * (a - b)) / b)}%`];
  });
  return md([['#', 'change', 'predicted', 'metric (lorakit)', 'before', 'after', 'measured'], ...rows]);
}

function main(): void {
  const file = join(ROOT, 'bench', 'RESULTS.md');
  let text = readFileSync(file, 'utf8');
  const compare = existsSync(join(RESULTS, 'compare.json')) ? readJson(join(RESULTS, 'compare.json')) : null;
  const blocks: Record<string, string> = {
    table: compare ? compareBlock(compare) : '(no compare.json yet: run npm run bench:peft)',
    targets: compare ? targetsBlock(compare) : '',
    ceiling: compare ? ceilingBlock(compare) : '',
    profile: profileBlock(),
    experiments: experimentsBlock(),
  };
  for (const [name, body] of Object.entries(blocks)) {
    const re = new RegExp(`(<!-- gen:${name} -->\\n)[\\s\\S]*?(<!-- /gen -->)`);
    if (!re.test(text)) throw new Error(`bench/RESULTS.md has no <!-- gen:${name} --> block`);
    text = text.replace(re, (_m, open, close) => `${open}${body}\n${close}`);
  }
  writeFileSync(file, text);
  console.log(`updated ${file}`);
}

main();
