/**
 * The measurement phases of scripts/diffusion-compose.ts: the base's own digits (basecheck), each LoRA alone
 * (singles), every pair per composition method (table, report, grid) and where each LoRA alone puts its digit
 * (diagnose). Halves are read by the host classifier (src/train/digit-classifier.ts). "in place" is digit a in the
 * left half and b in the right (what a positional prompt [a, b] asks); "both" takes either order (all a set can ask).
 * Not here: training (train.ts), the methods (src/serve/diffusion-compose.ts, src/diffusion/clora.ts).
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cmloraFrequencyScore } from '../../src/serve/index.ts';
import { CANVAS, CANVAS_TOKENS, scoreCanvases } from '../../src/train/index.ts';
import { canvasGridPng } from '../../src/cli/png.ts';
import {
  BASE_DIGITS,
  CLIPPED_EPS,
  CONCEPTS,
  draw,
  drawPair,
  GUIDANCE,
  openBase,
  PAIRS,
  readClassifier,
  STEPS,
  TABLE_METHODS,
  type TableMethod,
  withLoras,
} from './common.ts';

const sum = (xs: number[]) => xs.reduce((p, q) => p + q, 0);

/** Each LoRA alone on [digit, empty]: how often its digit shows (anywhere, in place), and its amplitude score. */
export async function singles(out: string, n: number) {
  const m = await withLoras(out);
  const judge = readClassifier(out);
  const rows = [];
  for (const c of CONCEPTS) {
    const t0 = performance.now();
    const x = await draw(m, [`lora-${c}`], 'merge', c, CANVAS_TOKENS.empty, n, 1);
    const s = scoreCanvases(judge, x, c, CANVAS_TOKENS.empty);
    const row = {
      lora: c,
      present: s.a,
      asked: s.both,
      inPlace: s.inPlace,
      frequencyScore: cmloraFrequencyScore(x, [n, 1, CANVAS.height, CANVAS.width]),
      seconds: (performance.now() - t0) / 1000,
    };
    rows.push(row);
    console.log(JSON.stringify(row));
  }
  writeFileSync(join(out, 'singles.json'), `${JSON.stringify({ n, prompt: m.kind, rows }, null, 2)}\n`);
}

/**
 * The pairs of every method in DIFF_METHODS (default all), N canvases each → OUT/table-<methods>.json. DIFF_SEED (default
 * 2) draws another set of canvases (→ table-<methods>-seed<S>.json), which `report` pools with the first.
 */
export async function table(out: string, n: number) {
  const methods = (process.env.DIFF_METHODS?.split(',') ?? TABLE_METHODS) as TableMethod[];
  const seed = Number(process.env.DIFF_SEED ?? 2);
  const m = await withLoras(out);
  const judge = readClassifier(out);
  const single = JSON.parse(readFileSync(join(out, 'singles.json'), 'utf8')) as {
    rows: { lora: number; frequencyScore: number }[];
  };
  const scores = new Map(single.rows.map((r) => [r.lora, r.frequencyScore]));
  const rows: Record<string, unknown>[] = [];
  for (const method of methods)
    for (const [a, b] of PAIRS) {
      const t0 = performance.now();
      const x = await drawPair(m, method, a, b, n, seed, scores);
      if (seed === 2 && a === PAIRS[0][0] && b === PAIRS[0][1]) writeFileSync(join(out, `samples-${method}.f32`), x);
      const s = scoreCanvases(judge, x, a, b);
      const row = {
        method,
        a,
        b,
        presentA: s.a,
        presentB: s.b,
        both: s.both,
        inPlace: s.inPlace,
        seconds: (performance.now() - t0) / 1000,
      };
      rows.push(row);
      console.log(JSON.stringify(row));
    }
  const file = join(out, `table-${methods.join('+')}${seed === 2 ? '' : `-seed${seed}`}.json`);
  const json = { n, seed, prompt: m.kind, steps: STEPS, guidance: GUIDANCE, rows };
  writeFileSync(file, `${JSON.stringify(json, null, 2)}\n`);
}

interface Row {
  method: string;
  presentA: number;
  presentB: number;
  both: number;
  inPlace: number;
  seconds: number;
  /** Canvases behind the row (the file's N). */
  n: number;
}

/** The markdown table from every OUT/table-*.json (rates weighted by canvases, seeds pooled) and OUT/singles.json. */
export function report(out: string) {
  const all: Row[] = [];
  for (const f of readdirSync(out).filter((f) => /^table-.*\.json$/.test(f))) {
    const j = JSON.parse(readFileSync(join(out, f), 'utf8'));
    all.push(...j.rows.map((r: Row) => ({ ...r, n: j.n })));
  }
  console.log(
    '| method | A present | B present | both, one per half | in place | canvases per pair | s per 32 canvases |',
  );
  console.log('|---|---|---|---|---|---|---|');
  for (const m of TABLE_METHODS) {
    const rs = all.filter((r) => r.method === m);
    if (!rs.length) continue;
    const total = sum(rs.map((r) => r.n));
    const f = (k: 'presentA' | 'presentB' | 'both' | 'inPlace') =>
      (sum(rs.map((r) => (r[k] ?? Number.NaN) * r.n)) / total).toFixed(3);
    const secs = ((sum(rs.map((r) => r.seconds)) / total) * 32).toFixed(1);
    const perPair = total / PAIRS.length;
    console.log(
      `| ${m} | ${f('presentA')} | ${f('presentB')} | ${f('both')} | ${f('inPlace')} | ${perPair} | ${secs} |`,
    );
  }
  const single = JSON.parse(readFileSync(join(out, 'singles.json'), 'utf8'));
  for (const r of single.rows)
    console.log(
      `lora-${r.lora} alone: present ${r.present.toFixed(3)}, in place ${(r.inPlace ?? Number.NaN).toFixed(3)}, ` +
        `amplitude score ${r.frequencyScore.toFixed(4)}`,
    );
}

/**
 * Per pair [a, b]: each LoRA alone on the composed prompt [a, b] with the pair's seed (the other token is one it
 * never learned); where its digit lands (L, R, -); how often the two LoRAs put their digits in the same half from the
 * same noise (a Composite average then asks one half for two digits).
 */
export async function diagnose(out: string, n: number) {
  const m = await withLoras(out);
  const judge = readClassifier(out);
  for (const [a, b] of PAIRS) {
    const classes = async (d: number) =>
      scoreCanvases(judge, await draw(m, [`lora-${d}`], 'merge', a, b, n, 2), a, b).classes;
    const [ca, cb] = [await classes(a), await classes(b)];
    const sides = (cs: [number, number][], d: number) => cs.map(([l, r]) => (l === d ? 'L' : r === d ? 'R' : '-'));
    const [sa, sb] = [sides(ca, a), sides(cb, b)];
    // what the other token's half shows when one LoRA runs alone (the token it never learned): class → count
    const tally = (xs: number[]) =>
      Object.fromEntries(
        [...new Set(xs)]
          .sort((p, q) => p - q)
          .map((c) => [c === CANVAS_TOKENS.empty ? 'empty' : c, xs.filter((x) => x === c).length]),
      );
    const shown = (s: string[]) => s.filter((v) => v !== '-').length / n;
    const both = sa.filter((v, i) => v !== '-' && sb[i] !== '-').length;
    const same = sa.filter((v, i) => v !== '-' && v === sb[i]).length;
    console.log(
      JSON.stringify({
        a,
        b,
        [`lora-${a} shows ${a}`]: shown(sa),
        [`lora-${b} shows ${b}`]: shown(sb),
        bothShown: both / n,
        sameHalfWhenBoth: both ? same / both : null,
        sidesA: sa.join(''),
        sidesB: sb.join(''),
        [`right half with lora-${a} alone`]: tally(ca.map(([, r]) => r)),
        [`left half with lora-${b} alone`]: tally(cb.map(([l]) => l)),
      }),
    );
  }
}

/**
 * How well the base draws its own digits: every pair of base digits and every digit beside a blank half, N canvases
 * each. A half is right when the classifier reads the digit asked for: "halves" takes the better of the two ways to
 * seat the pair (all a set prompt asks), "halves in place" reads [a, b] as [left, right].
 */
export async function baseCheck(out: string, n: number) {
  const m = await openBase(out);
  const judge = readClassifier(out);
  const E = CANVAS_TOKENS.empty;
  const prompts = BASE_DIGITS.flatMap((a, i) => [...BASE_DIGITS.slice(i + 1), E].map((b) => [a, b]));
  const acc = { halves: 0, halvesInPlace: 0, both: 0, inPlace: 0 };
  const t0 = performance.now();
  for (const [a, b] of prompts) {
    const x = await draw(m, [], 'merge', a, b, n, 4);
    const s = scoreCanvases(judge, x, a, b);
    const seat = (l: number, r: number, p: number, q: number) => (l === p ? 1 : 0) + (r === q ? 1 : 0);
    const halves = sum(s.classes.map(([l, r]) => Math.max(seat(l, r, a, b), seat(l, r, b, a)))) / (2 * n);
    const inPlaceHalves = sum(s.classes.map(([l, r]) => seat(l, r, a, b))) / (2 * n);
    acc.halves += halves / prompts.length;
    acc.halvesInPlace += inPlaceHalves / prompts.length;
    acc.both += s.both / prompts.length;
    acc.inPlace += s.inPlace / prompts.length;
    const row = [a, b === E ? 'empty' : b, 'halves', halves.toFixed(3), 'in place', inPlaceHalves.toFixed(3)];
    console.log(...row, 'both', s.both.toFixed(3));
  }
  const result = {
    prompt: m.kind,
    clippedEps: CLIPPED_EPS,
    prompts: prompts.length,
    n,
    ...acc,
    seconds: (performance.now() - t0) / 1000,
  };
  writeFileSync(
    join(out, CLIPPED_EPS ? 'base-check.json' : 'base-check-unclipped-eps.json'),
    `${JSON.stringify(result, null, 2)}\n`,
  );
  console.log(JSON.stringify(result));
}

/**
 * One row of samples per table method for the first pair: the first 8 canvases the table drew (OUT/samples-<method>.f32,
 * the same seeds as the numbers), so the picture costs no extra sampling.
 */
export function grid(out: string, png: string) {
  const rows: Float32Array[] = [];
  const names: string[] = [];
  const per = CANVAS.height * CANVAS.width;
  for (const m of TABLE_METHODS) {
    const file = join(out, `samples-${m}.f32`);
    if (!existsSync(file)) continue;
    const b = readFileSync(file);
    rows.push(new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + Math.min(b.byteLength, 8 * per * 4))));
    names.push(m);
  }
  writeFileSync(png, canvasGridPng(rows, { height: CANVAS.height, width: CANVAS.width, scale: 4 }));
  console.log('wrote', png, 'rows:', names.join(', '));
}
