/**
 * `npm run bench:svd-merge`: one module's SVD merge per combination type (svd, ties_svd, dare_linear_svd,
 * dare_ties_svd, magnitude_prune_svd), the dense path (form ΔW, full Jacobi `svd`) against the factored one
 * (`svdOfProduct` of the stacked factors for svd, `svdTop` for the pruned types), on SmolLM2-135M's shapes: 576×576
 * (q_proj, o_proj) and 1536×576 (an MLP projection), four rank-8 sources, merged to rank 8 at density 0.5. Prints
 * the seconds of each and the largest difference of their B·A products relative to max |B·A|. Writes nothing.
 *
 * With --pool, the sources are instead the four SmolLM2 pool adapters' q_proj and k_proj of layer 0
 * (scripts/smollm2-pool.ts's runs/smollm2-pool/<task>/run/final), at the pool's weights.
 *
 *   npm run bench:svd-merge [-- --quick]   (--quick: 576×576 only)
 *   npm run bench:svd-merge -- --pool      (needs the pool's trained adapters)
 */
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { mm, Rng } from '../src/linalg/index.ts';
import {
  bernoulliSource,
  type CombinationType,
  type CombinedModule,
  combineModule,
  type ModuleSource,
  readLora,
} from '../src/peft/compose/index.ts';
import { machine, table } from './common.ts';

const TYPES: CombinationType[] = ['svd', 'ties_svd', 'dare_linear_svd', 'dare_ties_svd', 'magnitude_prune_svd'];
const R = 8;
const N_SOURCES = 4;

/** Four LoRAs of one module: A at kaiming scale 1/√in, B small (as after a short run), scaling α/r = 2. */
function sources(out: number, inF: number, weight: number): ModuleSource[] {
  const rng = new Rng(out * 7 + inF);
  return Array.from({ length: N_SOURCES }, () => ({
    a: Float64Array.from(rng.normalArray(R * inF, 1 / Math.sqrt(inF))),
    b: Float64Array.from(rng.normalArray(out * R, 0.01)),
    r: R,
    scaling: 2,
    weight,
  }));
}

const POOL = join(import.meta.dirname, '..', 'runs', 'smollm2-pool');
const POOL_TASKS = ['alpaca', 'gsm8k', 'code_alpaca', 'sst2'];

/** The pool adapters' sources at one module (path ending in `suffix`), with its shape. */
async function poolSources(suffix: string, weight: number) {
  const loras = await Promise.all(POOL_TASKS.map((t) => readLora(join(POOL, t, 'run', 'final'))));
  const path = [...loras[0].modules.keys()].find((k) => k.endsWith(suffix));
  if (path === undefined) throw new Error(`no module ending in ${suffix} in the pool adapters`);
  const ms = loras.map((l) => l.modules.get(path)!);
  return {
    path,
    out: ms[0].out,
    inF: ms[0].in,
    ss: ms.map((m) => ({ a: m.a, b: m.b, r: m.r, scaling: m.scaling, weight })),
  };
}

function seconds(fn: () => void): number {
  const t = performance.now();
  fn();
  return (performance.now() - t) / 1000;
}

const quick = process.argv.includes('--quick');
const pool = process.argv.includes('--pool');
const shapes: [number, number][] = quick
  ? [[576, 576]]
  : [
      [576, 576],
      [1536, 576],
    ];
const cases = pool ? ['layers.0.self_attn.q_proj', 'layers.0.self_attn.k_proj'] : shapes;
const m = machine();
const rows: (string | number)[][] = [
  ['type', 'shape', 'dense s', 'factored s (first)', 'factored s (best of 3)', 'speed-up', 'max |ΔBA|/max |BA|'],
];
for (const c of cases) {
  for (const type of TYPES) {
    // PEFT's weights as scripts/smollm2-pool.ts uses them: 1/n where the rule sums, 1 where TIES's mean averages
    const weight = type.includes('ties') ? 1 : 1 / N_SOURCES;
    const { out, inF, ss } =
      typeof c === 'string' ? await poolSources(c, weight) : { out: c[0], inF: c[1], ss: sources(c[0], c[1], weight) };
    const shape = { out, in: inF, transposed: false };
    const o = { rank: R, density: 0.5 };
    let fast: CombinedModule = { a: new Float64Array(), b: new Float64Array() };
    let dense = fast;
    // factored: best of 3 after a first (JIT warm-up) call, as in a merge of many modules; dense: one call (60 s)
    const runFast = () => {
      fast = combineModule(type, ss, shape, { ...o, keep: bernoulliSource(0) });
    };
    const tFirst = seconds(runFast);
    const tFast = Math.min(seconds(runFast), seconds(runFast), seconds(runFast));
    const tDense = seconds(() => {
      dense = combineModule(type, ss, shape, { ...o, keep: bernoulliSource(0), svdSolver: 'dense' });
    });
    const want = mm(dense.b, dense.a, out, R, inF);
    const got = mm(fast.b, fast.a, out, R, inF);
    let diff = 0;
    let big = 0;
    for (let e = 0; e < want.length; e++) {
      diff = Math.max(diff, Math.abs(got[e] - want[e]));
      big = Math.max(big, Math.abs(want[e]));
    }
    rows.push([
      type,
      typeof c === 'string' ? `${c.split('.').slice(-1)[0]} ${out}×${inF}` : `${out}×${inF}`,
      tDense.toFixed(2),
      tFirst.toFixed(3),
      tFast.toFixed(3),
      `${(tDense / tFast).toFixed(tDense < 10 * tFast ? 1 : 0)}×`,
      (diff / big).toExponential(1),
    ]);
    console.error(`${type} ${out}×${inF}: dense ${tDense.toFixed(2)} s, factored ${tFast.toFixed(3)} s`);
  }
}
console.log(
  `${m.cpu}, ${m.cores} cores; load before ${m.loadBefore.join(' ')}, after ${loadavg()
    .map((x) => x.toFixed(2))
    .join(' ')}`,
);
console.log(table(rows));
