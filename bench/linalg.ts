/**
 * `npm run bench:linalg`: the host-side decompositions of adapter initialisations, timed on the shapes they meet.
 * Randomized SVD (PiSSA's pissa_niter_K, LoRA-GA) on 4096×4096 and 2048×8192 / 8192×2048 float32 weights, the exact
 * SVD on 256² and 768² (float64; SALT's init), LU with partial pivoting (LoLDU's first r pivots, and a full one on 768²),
 * and the measurement behind rsvd.ts's choice of feeding A as a graph input rather
 * than baking it in as an initializer. A script, not a test: it prints a table and writes nothing.
 *
 *   npm run bench:linalg [-- --repeat N] [-- --quick]   (best of N runs after one first, cold run; --quick: no 768²)
 */
import { loadavg } from 'node:os';
import { Graph } from '../src/graph/index.ts';
import { lu, Rng, svd, svdLowrank } from '../src/linalg/index.ts';
import { compile } from '../src/runtime/index.ts';
import { machine, table } from './common.ts';

interface Row {
  what: string;
  shape: string;
  first: number;
  best: number;
  note: string;
}

/** Milliseconds of the first call and the best of `repeat` further calls. */
async function time(fn: () => Promise<unknown> | unknown, repeat: number): Promise<{ first: number; best: number }> {
  let t = performance.now();
  await fn();
  const first = performance.now() - t;
  let best = Number.POSITIVE_INFINITY;
  for (let i = 0; i < repeat; i++) {
    t = performance.now();
    await fn();
    best = Math.min(best, performance.now() - t);
  }
  return { first, best };
}

async function rsvdRows(repeat: number): Promise<Row[]> {
  const rows: Row[] = [];
  const cases: [number, number, number][] = [
    [4096, 4096, 4],
    [4096, 4096, 16],
    [2048, 8192, 4],
    [8192, 2048, 4],
  ];
  for (const [m, n, niter] of cases) {
    const a = new Rng(1).normalArray(m * n, 0.02);
    const q = 16;
    let s0 = 0;
    const t = await time(async () => {
      s0 = (await svdLowrank(a, m, n, { q, niter, rng: new Rng(2) })).s[0];
    }, repeat);
    const gflop = ((2 * niter + 2) * 2 * m * n * q) / 1e9;
    rows.push({
      what: `svdLowrank q ${q} niter ${niter}`,
      shape: `${m}×${n} f32`,
      ...t,
      note: `${(gflop / (t.best / 1e3)).toFixed(1)} GFLOP/s overall (products + host QRs); σ₁ ${s0.toFixed(3)}`,
    });
  }
  return rows;
}

async function svdRows(quick: boolean, repeat: number): Promise<Row[]> {
  const rows: Row[] = [];
  for (const n of quick ? [256] : [256, 768]) {
    const a = Float64Array.from(new Rng(3).normalArray(n * n));
    let err = 0;
    const t = await time(
      () => {
        const f = svd(a, n, n);
        // max |A − U·S·Vᵀ| on the first row only (the full check is the test suite's job).
        for (let j = 0; j < n; j++) {
          let s = 0;
          for (let c = 0; c < n; c++) s += f.u[c] * f.s[c] * f.v[j * n + c];
          err = Math.max(err, Math.abs(s - a[j]));
        }
      },
      n > 256 ? 0 : repeat,
    );
    rows.push({
      what: 'svd (exact)',
      shape: `${n}×${n} f64`,
      ...t,
      note: `row-0 reconstruction error ${err.toExponential(1)}`,
    });
  }
  return rows;
}

/** LoLDU's init: the first r elimination steps (O(m·n·r)) on the large shapes, and a full LU (O(n³)) on 768². */
async function luRows(quick: boolean, repeat: number): Promise<Row[]> {
  const rows: Row[] = [];
  const cases: [number, number, number | undefined][] = [
    [4096, 4096, 16],
    [2048, 8192, 16],
    [768, 768, undefined],
  ];
  for (const [m, n, steps] of quick ? cases.slice(0, 1) : cases) {
    const a = new Rng(6).normalArray(m * n, 0.02);
    let d0 = 0;
    const t = await time(() => {
      const f = lu(a, m, n, { steps });
      d0 = f.u[0];
    }, repeat);
    rows.push({
      what: steps ? `lu, first ${steps} pivots` : 'lu (full)',
      shape: `${m}×${n} f32`,
      ...t,
      note: `U[0, 0] ${d0.toFixed(4)}`,
    });
  }
  return rows;
}

/** The two ways to give ORT the weight: compile + first run, and a later run, for A·X and Aᵀ·Y. */
async function feedRows(repeat: number): Promise<Row[]> {
  const [m, n, q] = [4096, 4096, 16];
  const a = new Rng(4).normalArray(m * n);
  const x = new Rng(5).normalArray(n * q);
  const rows: Row[] = [];
  for (const asInput of [true, false]) {
    for (const transA of [0, 1]) {
      const g = new Graph(`feed_${asInput}_${transA}`);
      const w = asInput ? g.input('a', 'f32', [m, n]) : g.initializer('a', 'f32', [m, n], a);
      const xi = g.input('x', 'f32', [n, q]);
      g.output('y', transA ? w.gemm(xi, null, { transA: 1 }) : w.matmul(xi));
      const feeds: Record<string, Float32Array> = asInput ? { a, x } : { x };
      const first = performance.now();
      const s = await compile(g, { worker: false });
      await s.run(feeds);
      const firstMs = performance.now() - first;
      const t = await time(() => s.run(feeds), repeat + 2);
      await s.dispose();
      rows.push({
        what: `ORT ${transA ? 'Aᵀ·Y (Gemm transA)' : 'A·X (MatMul)'}, A as ${asInput ? 'input' : 'initializer'}`,
        shape: `${m}×${n}·${q}`,
        first: firstMs,
        best: t.best,
        note: 'first = compile + first run',
      });
    }
  }
  return rows;
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const quick = argv.includes('--quick');
  const ri = argv.indexOf('--repeat');
  const repeat = ri >= 0 ? Math.max(1, Number(argv[ri + 1])) : 3;
  const mach = machine();
  console.log(
    `linalg bench on ${mach.cpu} (${mach.cores} cores), load ${mach.loadBefore.join(' ')}; best of ${repeat}`,
  );
  const rows = [
    ...(await feedRows(repeat)),
    ...(await rsvdRows(repeat)),
    ...(await svdRows(quick, repeat)),
    ...(await luRows(quick, repeat)),
  ];
  console.log(
    `\n${table([
      ['what', 'shape', 'first ms', 'best ms', 'note'],
      ...rows.map((r) => [r.what, r.shape, r.first, Number.isFinite(r.best) ? r.best : r.first, r.note]),
    ])}`,
  );
  console.log(
    `\nload after ${loadavg()
      .map((x) => x.toFixed(2))
      .join(' ')}`,
  );
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
