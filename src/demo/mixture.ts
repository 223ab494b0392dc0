/**
 * Training and evaluating a LoRA mixture on byte-level language-model windows from several domains (the demo base
 * and the Brown genres of the composition pool), each step one ONNX graph (forward, lorakit's autodiff, AdamW):
 * - ReMix: each of the B windows is routed M times (the batch holds M copies, each token with its own Gumbel noise,
 *   so copy m of window b is a full routing J_m of the network); the loss is the surrogate
 *   mean(L) + Σ_{m,b} stop(L_{m,b} − L̄_b)·log Q(J_{m,b}) / (B·(M − 1)), whose gradient is the mean SFT gradient
 *   for the experts and the RLOO estimate 1/(M−1)·Σ_m (L_m − L̄)·∇ log Q(J_m) for the router, averaged over windows
 *   (L: a window's mean next-byte cross-entropy).
 * - LoRA-Mixer: stage 1 routes every window wholly to its domain's expert (domain d → expert d mod E) and trains
 *   the experts; stage 2 trains the router with soft top-k routing and the mean RSL over routed layers.
 * - Evaluation routes ReMix by top-k and LoRA-Mixer by soft top-k, and reports the effective support size.
 * Row b of batch i comes from domain (i·B + b) mod D, so every batch mixes the domains. A domain is a token stream
 * (random windows) or any row source, e.g. a chat dataset whose labels count the assistant's tokens only.
 * It lives with the demo's LM graphs and window sampler (data.ts, lm.ts) it shares, above train/ and peft/.
 * Not here: the routing ops and the mixture's values and format (peft/mixture/), the data files.
 */
import { IGNORE_INDEX } from '../train/data/encode.ts';
import { type LmBatch, type RowSource, WindowSampler } from './data.ts';
import { warmupCosine } from './lm.ts';
import { LorakitError } from '../errors.ts';
import { Graph, type Tensor, tokenNll } from '../graph/index.ts';
import { Rng, seedFrom } from '../linalg/index.ts';
import { buildCausalLM, type LoadedModel } from '../models/index.ts';
import { addTrainStep, adamw, TrainStepRunner } from '../optim/index.ts';
import { compile, type Feed } from '../runtime/index.ts';
import { HEAD_CHUNK_ROWS, causalLmLoss } from '../train/loss.ts';
import type { MixtureModel, RouteMode } from '../peft/mixture/model.ts';
import { remixSurrogate } from '../peft/mixture/remix.ts';
import { gumbelArray } from '../peft/mixture/routing.ts';

/** A domain's training data: a token stream (cut into random windows) or a source of ready rows of seqLen tokens. */
export type MixtureDomain = { name: string; stream: Uint16Array } | { name: string; rows: RowSource };

/** Options of `trainMixture`. */
export interface MixtureTrainOptions {
  model: LoadedModel;
  mixture: MixtureModel;
  domains: readonly MixtureDomain[];
  /** ReMix: its steps; LoRA-Mixer: stage-2 (router) steps. */
  steps: number;
  /** LoRA-Mixer: stage-1 (hard routing) steps. */
  hardSteps?: number;
  /** Windows per step (ReMix runs M·batch rows) and their length. */
  batch: number;
  seqLen: number;
  /** Peak learning rate (10 % warmup, cosine to 10 %) and the data / noise seed. */
  lr: number;
  seed: number;
  /** The routers learn at lr·routerLrRatio (default 1). */
  routerLrRatio?: number;
  onStep?(r: MixtureStepRecord): void;
}

/** One step's report. */
export interface MixtureStepRecord {
  stage: RouteMode;
  step: number;
  /** Mean next-byte cross-entropy of the step's windows (over the M routings for ReMix). */
  ce: number;
  /** The optimised loss (ReMix's surrogate, or CE + RSL). */
  loss: number;
}

/** Trains the mixture in place (its values are replaced by the trained ones); returns the step records. */
export async function trainMixture(o: MixtureTrainOptions): Promise<MixtureStepRecord[]> {
  const c = o.mixture.config;
  const samplers = o.domains.map((d, i): RowSource => {
    if ('stream' in d) return new WindowSampler(d.stream, o.seqLen, seedFrom(o.seed, `domain ${i}`));
    if (d.rows.T !== o.seqLen)
      throw new LorakitError(
        'LK_INVALID_ARGUMENT',
        `mixture domain ${d.name}: rows of ${d.rows.T} tokens, seqLen is ${o.seqLen}`,
      );
    return d.rows;
  });
  const history: MixtureStepRecord[] = [];
  const stages: [RouteMode, number][] =
    c.method === 'remix'
      ? [['sample', o.steps]]
      : [
          ['hard', o.hardSteps ?? 0],
          ['soft', o.steps],
        ];
  for (const [mode, steps] of stages) {
    if (steps <= 0) continue;
    const stage = await compileStage(o, mode);
    try {
      for (let i = 0; i < steps; i++) {
        const rows = windows(samplers, i, o.batch);
        const feeds = stage.feeds(rows, i);
        const m = await stage.runner.step(feeds, o.lr * warmupCosine(i, steps, Math.max(1, Math.round(steps / 10))));
        if (!Number.isFinite(m.loss))
          throw new LorakitError('LK_NON_FINITE', `mixture ${mode} step ${i + 1}: the loss is ${m.loss}`);
        const rec = { stage: mode, step: i + 1, ce: m.ce, loss: m.loss };
        history.push(rec);
        o.onStep?.(rec);
      }
      for (const n of stage.trained) o.mixture.values.set(n, stage.runner.param(n));
    } finally {
      await stage.runner.dispose();
    }
  }
  return history;
}

interface Rows {
  batch: LmBatch;
  domains: number[];
}

/** Batch i: row b from domain (i·B + b) mod D, at that domain sampler's window i·B + b. */
function windows(samplers: readonly RowSource[], i: number, B: number): Rows {
  const T = samplers[0].T;
  const batch: LmBatch = { inputIds: new BigInt64Array(B * T), labels: new BigInt64Array(B * T) };
  const domains: number[] = [];
  for (let b = 0; b < B; b++) {
    const d = (i * B + b) % samplers.length;
    const w = samplers[d].batch(i * B + b, 1);
    batch.inputIds.set(w.inputIds, b * T);
    batch.labels.set(w.labels, b * T);
    domains.push(d);
  }
  return { batch, domains };
}

interface Stage {
  runner: TrainStepRunner;
  trained: string[];
  feeds(rows: Rows, step: number): Record<string, Feed>;
}

async function compileStage(o: MixtureTrainOptions, mode: RouteMode): Promise<Stage> {
  const { mixture, batch: B, seqLen: T } = o;
  const c = mixture.config;
  const M = c.method === 'remix' ? c.samples : 1;
  const R = M * B;
  const g = new Graph(`mixture-${mode}`);
  const mg = mixture.build(g, mode);
  const ctx = o.model.context(g, { hooks: mg.hooks });
  const inputIds = g.input('input_ids', 'i64', [R, T]);
  const labels = g.input('labels', 'i64', [R * T]);
  let loss: Tensor, ce: Tensor;
  if (mode === 'sample') {
    const out = buildCausalLM(ctx, { inputIds });
    const logits = out.lmHead(out.hidden); // [R, T, V]
    const { nll, valid } = tokenNll(logits.reshape([R * T, -1]), labels, IGNORE_INDEX); // [R·T]
    const perRow = nll
      .reshape([R, T])
      .sum(1)
      .div(valid.reshape([R, T]).sum(1).maximum(1)); // [R]
    const L = perRow.reshape([M, B]); // [M, B]: copy m of window b
    const logQ = mg.logQ.reduce((a, b) => a.add(b)).reshape([M, B]); // Σ over layers and tokens
    ce = L.mean();
    loss = remixSurrogate(L, logQ);
  } else {
    const r = causalLmLoss({ ctx, inputIds, labels, labelsAre: 'next', headChunkRows: HEAD_CHUNK_ROWS });
    ce = r.ce;
    loss = mg.rsl.length
      ? ce.add(
          mg.rsl
            .map((p) => p.value)
            .reduce((a, b) => a.add(b))
            .mul(1 / mg.rsl.length),
        )
      : ce;
  }
  const trained = mixture.trainableNames(mode);
  const layout = addTrainStep(g, loss, {
    optimizer: adamw(),
    groups: [
      { params: trained.filter((n) => !n.endsWith('.router')).map((n) => mg.inputs.get(n)!), weightDecay: 0 },
      {
        params: trained.filter((n) => n.endsWith('.router')).map((n) => mg.inputs.get(n)!),
        weightDecay: 0,
        lrRatio: o.routerLrRatio ?? 1,
      },
    ].filter((grp) => grp.params.length > 0),
    clipNorm: 1,
    metrics: { ce },
  });
  const session = await compile(g);
  const runner = new TrainStepRunner(
    session,
    layout,
    Object.fromEntries(trained.map((n) => [n, mixture.values.get(n)!])),
  );
  const frozen = [...mixture.values.keys()].filter((n) => !trained.includes(n));
  return {
    runner,
    trained,
    feeds(rows, step) {
      const f: Record<string, Feed> = {};
      for (const n of frozen) f[n] = mixture.values.get(n)!;
      f.input_ids = repeat(rows.batch.inputIds, M);
      f.labels = repeat(rows.batch.labels, M);
      if (mode === 'hard') {
        const w = new Float32Array(B * c.num_experts);
        rows.domains.forEach((d, b) => {
          w[b * c.num_experts + (d % c.num_experts)] = 1;
        });
        f['mixture.route'] = w;
      }
      const rng = new Rng(seedFrom(o.seed, `gumbel ${step}`));
      for (const nz of mg.noise) f[nz.name] = gumbelArray(rng, nz.shape[0] * nz.shape[1]);
      return f;
    },
  };
}

function repeat(a: BigInt64Array, times: number): BigInt64Array {
  const out = new BigInt64Array(a.length * times);
  for (let m = 0; m < times; m++) out.set(a, m * a.length);
  return out;
}

/** Held-out results of a mixture on one domain. */
export interface MixtureEval {
  /** Mean NLL per counted byte. */
  loss: number;
  /** Mean effective support size of the applied routing weights, and of the router's probabilities. */
  essWeights: number;
  essRouter: number;
  /**
   * With `firstTokens`: per row of the batches (filler rows included), the greedy token at the row's first counted
   * target, i.e. what greedy decoding generates first after the prompt of a chat row (-1: the row has no target).
   */
  firstTokens?: number[];
}

/**
 * Evaluates the mixture (ReMix top-k, LoRA-Mixer soft top-k) on batches of B×T windows; `firstTokens` also returns
 * each row's greedy first answer token (SST-2 accuracy from the same forward pass).
 */
export async function evaluateMixture(
  model: LoadedModel,
  mixture: MixtureModel,
  batches: readonly LmBatch[],
  B: number,
  T: number,
  opts: { firstTokens?: boolean } = {},
): Promise<MixtureEval> {
  const g = new Graph('mixture-eval');
  const mode: RouteMode = mixture.config.method === 'remix' ? 'top_k' : 'soft';
  const mg = mixture.build(g, mode);
  const ctx = model.context(g, { hooks: mg.hooks });
  const inputIds = g.input('input_ids', 'i64', [B, T]);
  const labels = g.input('labels', 'i64', [B * T]);
  const { nllSum, count, logits } = causalLmLoss({ ctx, inputIds, labels, labelsAre: 'next' });
  g.output('nll_sum', nllSum);
  g.output('count', count);
  if (opts.firstTokens) g.output('greedy', logits.argmax(-1)); // [B·T]
  const ess = (w: Tensor) => {
    const s = w.sum(-1); // [N]
    return s.mul(s).div(w.mul(w).sum(-1).maximum(1e-30)).mean();
  };
  const mean = (ts: Tensor[]) =>
    ts
      .map(ess)
      .reduce((a, b) => a.add(b))
      .mul(1 / ts.length);
  g.output('ess_weights', mean(mg.weights));
  g.output('ess_router', mean(mg.probs));
  const session = await compile(g);
  try {
    const base: Record<string, Feed> = Object.fromEntries(mixture.values);
    let sum = 0,
      n = 0,
      essW = 0,
      essR = 0;
    const firstTokens: number[] = [];
    for (const b of batches) {
      const out = await session.run({ ...base, input_ids: b.inputIds, labels: b.labels });
      if (opts.firstTokens)
        for (let r = 0; r < B; r++) {
          const t = b.labels.subarray(r * T, (r + 1) * T).findIndex((y) => y !== BigInt(IGNORE_INDEX));
          firstTokens.push(t < 0 ? -1 : Number(out.greedy.data[r * T + t]));
        }
      sum += Number(out.nll_sum.data[0]);
      n += Number(out.count.data[0]);
      essW += Number(out.ess_weights.data[0]) / batches.length;
      essR += Number(out.ess_router.data[0]) / batches.length;
    }
    const r: MixtureEval = { loss: sum / Math.max(n, 1), essWeights: essW, essRouter: essR };
    return opts.firstTokens ? { ...r, firstTokens } : r;
  } finally {
    await session.dispose();
  }
}
