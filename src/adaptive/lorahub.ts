/**
 * LoraHub (Huang et al., COLM 2024, arXiv 2307.13269), the Recycling study's gradient-free baseline: the adapters'
 * A and B are merged element-wise with one weight per adapter (pool.ts lorahubMerge, cross terms included), and the
 * weights minimise loss + λ·mean|wᵢ| on the target's training samples by a black-box search from w = 0 (the base
 * model) within [-1.5, 1.5]. Both use Nevergrad (NGOpt / Shiwa); lorakit searches with its own CMA-ES (cmaes.ts),
 * which Nevergrad's portfolio chooses for problems this size. Study settings: 100 loss evaluations, λ = 0.05.
 * Not here: the search (cmaes.ts), the merge (pool.ts).
 */
import { cmaes } from './cmaes.ts';
import type { MergeRun, MethodContext } from './fit.ts';
import { CoefficientObjective } from './objective.ts';
import { lorahubMerge } from './pool.ts';

/** Options of `loraHub`. */
export interface LoraHubOptions {
  /** Loss evaluations (default 100). */
  budget?: number;
  /** L1 weight λ on mean |wᵢ| (default 0.05). */
  l1?: number;
  /** Box bound on each weight (default 1.5). */
  bound?: number;
  /** CMA-ES initial step size (default 0.5) and seed (default 0). */
  sigma?: number;
  seed?: number;
}

/** Searches LoraHub's weights on ctx.data.train; see the file header. */
export async function loraHub(ctx: MethodContext, o: LoraHubOptions = {}): Promise<MergeRun & { weights: number[] }> {
  const t0 = performance.now();
  const n = ctx.pool.names.length;
  const l1 = o.l1 ?? 0.05;
  const bound = o.bound ?? 1.5;
  const spec = { granularity: 'task', phi: 'linear' } as const;
  // one compiled graph for the one-adapter merged pool; each evaluation feeds a new merge
  const obj = await CoefficientObjective.create({
    model: ctx.model,
    pool: lorahubMerge(ctx.pool, new Float64Array(n)),
    spec,
    batch: ctx.batch,
    seqLen: ctx.seqLen,
    withGrad: false,
  });
  const one = obj.values(1);
  const trainLosses: number[] = [];
  try {
    const search = await cmaes(
      async (w) => {
        obj.setPool(lorahubMerge(ctx.pool, w));
        const loss = await obj.loss(one, ctx.data.train);
        trainLosses.push(loss);
        return loss + (l1 * w.reduce((s, v) => s + Math.abs(v), 0)) / n;
      },
      new Float64Array(n),
      { budget: o.budget ?? 100, lower: -bound, upper: bound, sigma: o.sigma ?? 0.5, seed: o.seed ?? 0 },
    );
    const weights = [...search.x];
    const pool = lorahubMerge(ctx.pool, weights);
    obj.setPool(pool);
    ctx.log?.(`lorahub: weights ${weights.map((v) => v.toFixed(3)).join(' ')}, objective ${search.f.toFixed(4)}`);
    return {
      method: 'lorahub',
      pool,
      spec,
      values: one,
      coefficients: pool.modules.map(() => [1]),
      weights,
      trainLosses,
      valLoss: await obj.loss(one, ctx.data.val),
      testLoss: ctx.data.test ? await obj.loss(one, ctx.data.test) : null,
      seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    await obj.dispose();
  }
}
