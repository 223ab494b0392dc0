/**
 * Arrow routing (Ostapenko et al., "Towards Modular LLMs by Building and Reusing a Library of LoRAs", ICML 2024,
 * arXiv 2405.11157; PEFT's `ArrowConfig`): no coefficients are learned. Each adapter's prototype in a module is the
 * top right-singular vector vᵢ of its ΔWᵢ = BᵢAᵢ; each token x of that module's input is routed by |⟨x, vᵢ⟩|, the
 * top-k adapters get softmax(|⟨x, vᵢ⟩| / temperature) and the rest 0, and the module adds Σᵢ gᵢ(x)·sᵢ·Bᵢ(Aᵢx).
 * Defaults are PEFT's (top_k 3, router_temperature 1). Prototypes are computed without forming ΔW: with Bᵢ = Q_B·R_B
 * and Aᵢᵀ = Q_A·R_A (thin QR), ΔWᵢ = Q_B·(R_B·R_Aᵀ)·Q_Aᵀ, so vᵢ = Q_A·(top right-singular vector of the r×r core).
 * PEFT finds the same vector by power iteration on AᵀBᵀBA. Arrow is a router, not a static merge: it is saved as its
 * adapters plus the routing settings (cli/merge-adapters.ts) and evaluated through `arrowLoss`.
 * Not here: the coefficient-merged model (coefficients.ts), the causal-LM loss (train/loss.ts).
 */
import { LorakitError } from '../errors.ts';
import { Graph, type Tensor } from '../graph/index.ts';
import { qr, svd } from '../linalg/index.ts';
import type { LoadedModel } from '../models/index.ts';
import type { LinearModule, ModuleHooks } from '../nn/index.ts';
import { compile, type Feed } from '../runtime/index.ts';
import { causalLmLoss } from '../train/index.ts';
import type { MethodContext } from './fit.ts';
import type { TokenBatch } from './objective.ts';
import { factorsOf, type RecycledPool, totalRank } from './pool.ts';

/** Arrow's routing settings (PEFT's ArrowConfig names in the saved file: top_k, router_temperature). */
export interface ArrowOptions {
  topK?: number;
  temperature?: number;
}

/** The top right-singular vector [in] of B·A (A [r, in], B [out, r]), sign fixed so its largest entry is > 0. */
export function topRightSingular(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  r: number,
  inF: number,
  out: number,
): Float64Array {
  const at = new Float64Array(inF * r); // Aᵀ [in, r]
  for (let k = 0; k < r; k++) for (let j = 0; j < inF; j++) at[j * r + k] = a[k * inF + j];
  const qa = qr(at, inF, r); // Aᵀ = Q_A·R_A, Q_A [in, ka], R_A [ka, r]
  const qb = qr(Float64Array.from(b), out, r); // B = Q_B·R_B, R_B [kb, r]
  // core = R_B·R_Aᵀ [kb, ka]
  const core = new Float64Array(qb.k * qa.k);
  for (let i = 0; i < qb.k; i++)
    for (let j = 0; j < qa.k; j++) {
      let s = 0;
      for (let t = 0; t < r; t++) s += qb.r[i * r + t] * qa.r[j * r + t];
      core[i * qa.k + j] = s;
    }
  const small = svd(core, qb.k, qa.k); // V [ka, k'], column 0 the top
  const v = new Float64Array(inF);
  for (let j = 0; j < inF; j++) for (let t = 0; t < qa.k; t++) v[j] += qa.q[j * qa.k + t] * small.v[t * small.k];
  let big = 0;
  for (let j = 1; j < inF; j++) if (Math.abs(v[j]) > Math.abs(v[big])) big = j;
  if (v[big] < 0) for (let j = 0; j < inF; j++) v[j] = -v[j];
  return v;
}

/** Per pooled module, the prototypes [n, in] (row i: adapter i's vᵢ; zeros where it lacks the module). */
export function arrowPrototypes(pool: RecycledPool): Float64Array[] {
  return pool.modules.map((m) => {
    const p = new Float64Array(pool.names.length * m.in);
    for (let i = 0; i < pool.names.length; i++) {
      const f = factorsOf(m, i);
      if (f.r > 0) p.set(topRightSingular(f.a, f.b, f.r, m.in, m.out), i * m.in);
    }
    return p;
  });
}

/** Checked routing settings: top_k clamped to the pool size, PEFT's defaults (3, 1.0). */
function routing(pool: RecycledPool, o: ArrowOptions): { topK: number; temperature: number } {
  const topK = Math.min(o.topK ?? 3, pool.names.length);
  const temperature = o.temperature ?? 1;
  if (!Number.isInteger(topK) || topK < 1 || !(temperature > 0))
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `arrow: top_k must be a positive integer and router_temperature > 0, got ${o.topK} and ${o.temperature}`,
    );
  return { topK, temperature };
}

/** One module's factors and prototypes as graph tensors: A_cat [R, in], B_cat [out, R], P [n, in]. */
interface RoutedFactors {
  a: Tensor;
  b: Tensor;
  p: Tensor;
}

/**
 * Hooks that route every pooled Linear: `factors(g, k)` gives module k's tensors in graph g (inputs or constants);
 * other Linears pass through.
 */
function routedHooks(
  pool: RecycledPool,
  o: ArrowOptions,
  dtype: 'f32' | 'f64',
  factors: (g: Graph, k: number) => RoutedFactors,
): ModuleHooks {
  const n = pool.names.length;
  const { topK, temperature } = routing(pool, o);
  const byPath = new Map<string, number>(pool.modules.map((m, k) => [m.path, k]));
  const linear = (mod: LinearModule, x: Tensor): Tensor => {
    const k = byPath.get(mod.path);
    if (k === undefined) return mod.base(x);
    const m = pool.modules[k];
    if (mod.fanInFanOut || mod.inFeatures !== m.in || mod.outFeatures !== m.out)
      throw new LorakitError('LK_SHAPE_MISMATCH', `arrow: module ${m.path} of the pool does not fit the model's`);
    const g = x.graph;
    const f = factors(g, k);
    const sim = x.matmul(f.p.transpose([1, 0])).abs(); // [..., n]
    const [top] = sim.topk(topK, -1); // [..., k], descending
    const kth = top.slice([topK - 1], [topK], [-1]); // [..., 1]
    const logits = sim.less(kth).where(g.scalar(-Infinity, dtype), sim.div(temperature)); // [..., n]
    const gates = logits.softmax(-1); // [..., n]
    const block: number[] = [];
    const scale: number[] = [];
    for (let i = 0; i < n; i++)
      for (let j = m.offsets[i]; j < m.offsets[i + 1]; j++) {
        block.push(i);
        scale.push(m.scaling[i]);
      }
    const perRank = gates.gather(g.constInts(block), -1).mul(g.constant(scale, dtype, [block.length])); // [..., R]
    const z = x.matmul(f.a.transpose([1, 0])).mul(perRank); // [..., R]
    return mod.base(x).add(z.matmul(f.b.transpose([1, 0]))); // [..., out]
  };
  return { linear, adapts: (path) => byPath.has(path) };
}

/** Records Arrow-routed pooled modules into `g`: inputs per module `arrow.<k>.A`, `.B`, `.P` (prototypes). */
export function arrowGraph(g: Graph, pool: RecycledPool, o: ArrowOptions = {}, dtype: 'f32' | 'f64' = 'f32') {
  const n = pool.names.length;
  routing(pool, o);
  const inputs = pool.modules.map((m, k) => ({
    a: g.input(`arrow.${k}.A`, dtype, [totalRank(m), m.in]),
    b: g.input(`arrow.${k}.B`, dtype, [m.out, totalRank(m)]),
    p: g.input(`arrow.${k}.P`, dtype, [n, m.in]),
  }));
  const hooks = routedHooks(pool, o, dtype, (_, k) => inputs[k]);
  const feeds = (): Record<string, Feed> => {
    const protos = arrowPrototypes(pool);
    const f: Record<string, Feed> = {};
    pool.modules.forEach((m, k) => {
      const cast = (v: Float32Array | Float64Array) => (dtype === 'f64' ? Float64Array.from(v) : Float32Array.from(v));
      f[inputs[k].a.name] = cast(m.a);
      f[inputs[k].b.name] = cast(m.b);
      f[inputs[k].p.name] = cast(protos[k]);
    });
    return f;
  };
  return { hooks, feeds };
}

/**
 * The Arrow-routed pool as an adapter for any graph a command builds (`lorakit eval`, generation): the factors and
 * prototypes become f32 constants of the graph that calls the hooks, once per graph and module. Fits
 * train/text-eval.ts's `adapter` option.
 */
export function arrowAdapter(pool: RecycledPool, o: ArrowOptions = {}): { hooks: () => ModuleHooks } {
  routing(pool, o);
  const protos = arrowPrototypes(pool);
  return {
    hooks: () => {
      // per call of hooks(): one graph's constants (a new graph calls hooks() again)
      const made = new Map<Graph, RoutedFactors[]>();
      return routedHooks(pool, o, 'f32', (g, k) => {
        let all = made.get(g);
        if (!all) made.set(g, (all = []));
        const m = pool.modules[k];
        all[k] ??= {
          a: g.constant(m.a, 'f32', [totalRank(m), m.in]),
          b: g.constant(m.b, 'f32', [m.out, totalRank(m)]),
          p: g.constant(Float32Array.from(protos[k]), 'f32', [pool.names.length, m.in]),
        };
        return all[k];
      });
    },
  };
}

/** Mean NLL per target of the Arrow-routed model on each batch list (one compiled graph). */
export async function arrowLoss(
  model: LoadedModel,
  pool: RecycledPool,
  sets: readonly (readonly TokenBatch[])[],
  shape: { batch: number; seqLen: number },
  o: ArrowOptions = {},
): Promise<number[]> {
  const g = new Graph('arrow-eval');
  const ar = arrowGraph(g, pool, o);
  const ctx = model.context(g, { hooks: ar.hooks });
  const inputIds = g.input('input_ids', 'i64', [shape.batch, shape.seqLen]);
  const labels = g.input('labels', 'i64', [shape.batch * shape.seqLen]);
  const { nllSum, count } = causalLmLoss({ ctx, inputIds, labels, labelsAre: 'next' });
  g.output('nll_sum', nllSum);
  g.output('count', count);
  const session = await compile(g);
  try {
    const feeds = ar.feeds();
    const out: number[] = [];
    for (const set of sets) {
      let sum = 0,
        n = 0;
      for (const b of set) {
        const r = await session.run({ ...feeds, input_ids: b.inputIds, labels: b.labels });
        sum += Number(r.nll_sum.data[0]);
        n += Number(r.count.data[0]);
      }
      out.push(sum / Math.max(1, n));
    }
    return out;
  } finally {
    await session.dispose();
  }
}

/** Arrow on a method context: no training; validation and test loss of the routed pool. */
export async function arrow(
  ctx: MethodContext,
  o: ArrowOptions = {},
): Promise<{ method: string; valLoss: number; testLoss: number | null; seconds: number }> {
  const t0 = performance.now();
  const sets = ctx.data.test ? [ctx.data.val, ctx.data.test] : [ctx.data.val];
  const [valLoss, testLoss] = await arrowLoss(ctx.model, ctx.pool, sets, ctx, o);
  return { method: 'arrow', valLoss, testLoss: testLoss ?? null, seconds: (performance.now() - t0) / 1000 };
}
