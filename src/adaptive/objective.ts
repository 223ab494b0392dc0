/**
 * The target-task objective of the adaptive mergers: the causal-LM loss of the base model with a coefficient-merged
 * pool (coefficients.ts), compiled once as a loss-and-gradient graph (∂L/∂w, ∂L/∂a, ∂L/∂b from lorakit's autodiff)
 * and once as an evaluation graph (summed NLL and target count, so a held-out set averages exactly). The pool's
 * factors are feeds: `setPool` swaps in another pool of the same shapes (the random control) without recompiling.
 * Also the host-side Adam that the gradient methods step the few coefficients with.
 * Not here: which coefficients, φ and settings a method uses (adamerging.ts, pi-tuning.ts, recycle.ts).
 */
import { LorakitError } from '../errors.ts';
import { Graph, grad, type Tensor } from '../graph/index.ts';
import type { LoadedModel } from '../models/index.ts';
import { type CompileOptions, compile, type Feed, type Session } from '../runtime/index.ts';
import type { Batch, TokenDataset } from '../train/data/index.ts';
import { IGNORE_INDEX } from '../train/data/index.ts';
import { HEAD_CHUNK_ROWS, causalLmLoss } from '../train/index.ts';
import {
  type CoefficientGraph,
  type CoefficientSpec,
  coefficientGraph,
  coefficientShape,
  factorFeeds,
} from './coefficients.ts';
import type { RecycledPool } from './pool.ts';

/** One batch of token windows: input ids and next-token labels, [B·T] row-major (demo/data.ts's LmBatch). */
export interface TokenBatch {
  inputIds: BigInt64Array;
  labels: BigInt64Array;
}

/**
 * A batch of train/data rows (the causal-LM task's: labels aligned with the input ids, -100 where no loss is taken,
 * e.g. a chat's prompt and system turn, padding on the right) as a TokenBatch: the labels shifted to next-token
 * targets, the last position's target -100. No attention mask is needed: under causal attention a position before
 * the first pad never sees a pad, and a pad's own target is -100, so every counted term is the task's.
 */
export function tokenBatchOfRows(b: Batch): TokenBatch {
  const [B, T] = b.shape;
  const labels = new BigInt64Array(B * T).fill(BigInt(IGNORE_INDEX));
  for (let r = 0; r < B; r++) labels.set(b.labels.subarray(r * T + 1, (r + 1) * T), r * T);
  return { inputIds: b.inputIds, labels };
}

/** Every row of `data` once, in order, as TokenBatches of `batch` rows (the last one topped up with filler rows). */
export function rowBatches(data: TokenDataset, batch: number): TokenBatch[] {
  return [...data.batches({ batchSize: batch, shuffle: false, epochs: 1, dropLast: false })].map(tokenBatchOfRows);
}

/** Values of the trainable coefficients (w, and the affine a, b when the spec has them), row-major. */
export interface CoefficientValues {
  w: Float64Array;
  a?: Float64Array;
  b?: Float64Array;
}

/** Options of `CoefficientObjective.create`. */
export interface ObjectiveOptions {
  model: LoadedModel;
  pool: RecycledPool;
  spec: CoefficientSpec;
  /** Windows per batch and tokens per window. */
  batch: number;
  seqLen: number;
  /** Compute dtype (f64 for gradient checks). */
  dtype?: 'f32' | 'f64';
  /** Compile the loss-and-gradient graph too (default true; false for evaluation-only use). */
  withGrad?: boolean;
  /** ORT options (default: all graph optimisations in f32; none in f64, whose fused kernels ORT lacks). */
  compile?: CompileOptions;
}

/** Builds the model with the merged pool into a new graph; returns the loss terms and the coefficient handles. */
function record(o: ObjectiveOptions, name: string, training: boolean) {
  const graph = new Graph(name);
  const dtype = o.dtype ?? 'f32';
  const cg = coefficientGraph(graph, o.pool, o.spec, dtype);
  const ctx = o.model.context(graph, { hooks: cg.hooks, dtype });
  const inputIds = graph.input('input_ids', 'i64', [o.batch, o.seqLen]);
  const labels = graph.input('labels', 'i64', [o.batch * o.seqLen]);
  const { loss, nllSum, count } = causalLmLoss({
    ctx,
    inputIds,
    labels,
    labelsAre: 'next',
    ...(training ? { headChunkRows: HEAD_CHUNK_ROWS } : {}),
  });
  return { graph, cg, loss, nllSum, count };
}

/** The compiled objective; see the file header. */
export class CoefficientObjective {
  private factors: Record<string, Feed>;

  private constructor(
    readonly options: ObjectiveOptions,
    private readonly cg: CoefficientGraph,
    private readonly train: Session | null,
    private readonly evalSession: Session,
  ) {
    this.factors = factorFeeds(cg, options.pool, options.dtype);
  }

  /** Compiles the graphs for `o.pool`'s shapes. Call `dispose` when done. */
  static async create(o: ObjectiveOptions): Promise<CoefficientObjective> {
    // ORT fuses x·sigmoid(x) into QuickGelu, which has a float32 kernel only
    const opts: CompileOptions = o.compile ?? (o.dtype === 'f64' ? { optimization: 'disabled' } : {});
    const ev = record(o, 'adaptive-eval', false);
    ev.graph.output('nll_sum', ev.nllSum);
    ev.graph.output('count', ev.count);
    const evalSession = await compile(ev.graph, opts);
    let train: Session | null = null;
    if (o.withGrad !== false) {
      const tr = record(o, 'adaptive-train', true);
      const params: Tensor[] = [tr.cg.w, ...(tr.cg.affine ? [tr.cg.affine.a, tr.cg.affine.b] : [])];
      const grads = grad(tr.loss, params);
      tr.graph.output('loss', tr.loss);
      tr.graph.output('grad_w', grads[0]);
      if (tr.cg.affine) {
        tr.graph.output('grad_a', grads[1]);
        tr.graph.output('grad_b', grads[2]);
      }
      train = await compile(tr.graph, opts);
    }
    return new CoefficientObjective(o, ev.cg, train, evalSession);
  }

  /** Number of coefficients in w. */
  get size(): number {
    return coefficientShape(this.options.pool, this.options.spec).reduce((p, d) => p * d, 1);
  }

  /** Feeds another pool with the same names count and module shapes (e.g. randomPool of the compiled one). */
  setPool(pool: RecycledPool): void {
    const want = this.options.pool;
    const same =
      pool.names.length === want.names.length &&
      pool.modules.length === want.modules.length &&
      pool.modules.every((m, k) => m.path === want.modules[k].path && m.a.length === want.modules[k].a.length);
    if (!same)
      throw new LorakitError(
        'LK_SHAPE_MISMATCH',
        `adaptive objective: the new pool (${pool.names.length} adapters, ${pool.modules.length} modules) does not ` +
          `have the compiled pool's shapes (${want.names.length} adapters, ${want.modules.length} modules)`,
      );
    this.factors = factorFeeds(this.cg, pool, this.options.dtype);
  }

  /** Initial values: w as given (or filled with `fill`), a = 1 and b = 0 when the spec is affine. */
  values(w: ArrayLike<number> | number): CoefficientValues {
    const n = this.size;
    const wv = typeof w === 'number' ? new Float64Array(n).fill(w) : Float64Array.from(w);
    if (wv.length !== n)
      throw new LorakitError('LK_SHAPE_MISMATCH', `adaptive objective: expected ${n} coefficients, got ${wv.length}`);
    if (!this.options.spec.affine) return { w: wv };
    return { w: wv, a: new Float64Array(n).fill(1), b: new Float64Array(n) };
  }

  private feeds(v: CoefficientValues, batch: TokenBatch): Record<string, Feed> {
    const cast = (x: Float64Array) => (this.options.dtype === 'f64' ? x : Float32Array.from(x));
    const f: Record<string, Feed> = { ...this.factors, input_ids: batch.inputIds, labels: batch.labels };
    f[this.cg.w.name] = cast(v.w);
    if (this.cg.affine) {
      if (!v.a || !v.b)
        throw new LorakitError('LK_INVALID_ARGUMENT', 'adaptive objective: the spec is affine but a or b is missing');
      f[this.cg.affine.a.name] = cast(v.a);
      f[this.cg.affine.b.name] = cast(v.b);
    }
    return f;
  }

  /** The mean loss of one batch and its gradient with respect to the coefficients. */
  async lossAndGrad(v: CoefficientValues, batch: TokenBatch): Promise<{ loss: number; grad: CoefficientValues }> {
    if (!this.train) throw new LorakitError('LK_INVALID_ARGUMENT', 'adaptive objective: compiled with withGrad false');
    const out = await this.train.run(this.feeds(v, batch));
    const g: CoefficientValues = { w: Float64Array.from(out.grad_w.data as ArrayLike<number>) };
    if (this.cg.affine) {
      g.a = Float64Array.from(out.grad_a.data as ArrayLike<number>);
      g.b = Float64Array.from(out.grad_b.data as ArrayLike<number>);
    }
    return { loss: Number(out.loss.data[0]), grad: g };
  }

  /** Mean NLL per counted target over `batches` (nats per token). */
  async loss(v: CoefficientValues, batches: readonly TokenBatch[]): Promise<number> {
    let sum = 0,
      count = 0;
    for (const b of batches) {
      const out = await this.evalSession.run(this.feeds(v, b));
      sum += Number(out.nll_sum.data[0]);
      count += Number(out.count.data[0]);
    }
    if (count === 0) throw new LorakitError('LK_INVALID_ARGUMENT', 'adaptive objective: the batches have no targets');
    return sum / count;
  }

  /** Releases the compiled sessions. */
  async dispose(): Promise<void> {
    await this.evalSession.dispose();
    await this.train?.dispose();
  }
}

/** Adam state for a few host-side parameters (Kingma & Ba; decoupled weight decay as AdamW). */
export class HostAdam {
  private m: Float64Array[] = [];
  private v: Float64Array[] = [];
  private t = 0;

  constructor(
    readonly lr: number,
    readonly betas: [number, number] = [0.9, 0.999],
    readonly eps = 1e-8,
    readonly weightDecay = 0,
  ) {}

  /** One update of `params` in place from `grads` (same order and lengths on every call). */
  step(params: Float64Array[], grads: Float64Array[]): void {
    this.t++;
    const [b1, b2] = this.betas;
    const c1 = 1 - b1 ** this.t;
    const c2 = 1 - b2 ** this.t;
    params.forEach((p, j) => {
      this.m[j] ??= new Float64Array(p.length);
      this.v[j] ??= new Float64Array(p.length);
      const m = this.m[j];
      const v = this.v[j];
      const g = grads[j];
      for (let k = 0; k < p.length; k++) {
        m[k] = b1 * m[k] + (1 - b1) * g[k];
        v[k] = b2 * v[k] + (1 - b2) * g[k] * g[k];
        p[k] -= this.lr * (m[k] / c1 / (Math.sqrt(v[k] / c2) + this.eps) + this.weightDecay * p[k]);
      }
    });
  }
}
