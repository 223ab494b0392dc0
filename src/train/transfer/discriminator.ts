/**
 * Trans-LoRA's discriminator: a LoRA on the source base, trained while the task data is still available, that tells
 * real task text from the model's own generations. It is a language model asked a one-token question: a row is
 * `L` text tokens, then a separator token, and the label is the next token (`real` or `synthetic`, two token ids
 * the caller picks from the shared vocabulary); only that position counts in the loss. Its score for a row is
 * log p(real) − log p(synthetic) at the separator, so a score > 0 means "classified real". Not here: where the
 * synthetic rows come from (synthesize.ts), the filter that uses the scores (filter.ts).
 */
import { LorakitError } from '../../errors.ts';
import type { Graph } from '../../graph/index.ts';
import type { ModelConfig } from '../../io/index.ts';
import type { LoadedModel } from '../../models/index.ts';
import type { ModelContext } from '../../nn/index.ts';
import type { PeftModel } from '../../peft/index.ts';
import type { CompileOptions } from '../../runtime/index.ts';
import { Rng } from '../../linalg/index.ts';
import { IGNORE_INDEX } from '../data/encode.ts';
import { causalLmLoss } from '../loss.ts';
import type { StepRecord } from '../report.ts';
import { type AdapterFitSettings, type FitBatch, fitAdapter, fitSettings } from './fit-adapter.ts';
import { LogProbs, type ScoringAdapter } from './log-probs.ts';

/** The question's tokens: what ends a row, and the two answers. */
export interface DiscriminatorTokens {
  separator: number;
  real: number;
  synthetic: number;
}

/** Options of `trainDiscriminator`. */
export interface TrainDiscriminatorOptions extends AdapterFitSettings {
  model: LoadedModel;
  /** Holds the (fresh) discriminator adapter `adapter`. */
  peft: PeftModel;
  adapter: string;
  tokens: DiscriminatorTokens;
  /** Real task rows and synthetic rows, each of exactly `length` tokens. */
  real: readonly ArrayLike<number>[];
  synthetic: readonly ArrayLike<number>[];
  length: number;
  /** Rows per step (half real, half synthetic; default 8), steps, peak lr, seed. */
  batch?: number;
  /**
   * Early stopping: real and synthetic rows the discriminator does not train on (as many of each, a multiple of
   * batch / 2), evaluated every `every` steps; the adapter ends at the lowest held-out loss.
   */
  heldOut?: {
    real: readonly ArrayLike<number>[];
    synthetic: readonly ArrayLike<number>[];
    every: number;
    patience?: number;
  };
}

/** A row as the discriminator reads it: the text tokens, then the separator. */
export function questionRow(text: ArrayLike<number>, tokens: DiscriminatorTokens): number[] {
  return [...Array.from(text), tokens.separator];
}

/** One batch of question rows: `real[i]` labelled real and `synthetic[i]` labelled synthetic, alternating. */
function questionBatch(
  real: readonly ArrayLike<number>[],
  synthetic: readonly ArrayLike<number>[],
  tokens: DiscriminatorTokens,
  length: number,
): FitBatch {
  const B = real.length + synthetic.length,
    T = length + 1;
  const ids = new BigInt64Array(B * T);
  const labels = new BigInt64Array(B * T).fill(BigInt(IGNORE_INDEX));
  for (let b = 0; b < B; b++) {
    const isReal = b % 2 === 0;
    const row = questionRow((isReal ? real : synthetic)[b >> 1], tokens);
    for (let t = 0; t < T; t++) ids[b * T + t] = BigInt(row[t]);
    labels[b * T + T - 1] = BigInt(isReal ? tokens.real : tokens.synthetic);
  }
  return { feeds: { input_ids: ids, labels }, tokens: B };
}

/** Checks that every row has `length` tokens and that there is at least one. */
function checkRows(what: string, rows: readonly ArrayLike<number>[], length: number): void {
  if (rows.length === 0) throw new LorakitError('LK_INVALID_ARGUMENT', `trainDiscriminator: no ${what} rows`);
  const bad = rows.findIndex((r) => r.length !== length);
  if (bad >= 0)
    throw new LorakitError(
      'LK_SHAPE_MISMATCH',
      `trainDiscriminator: ${what} row ${bad} has ${rows[bad].length} tokens, expected ${length}`,
    );
}

/**
 * Trains the discriminator adapter (balanced batches drawn with `seed`); returns the step records (with
 * `heldOut`, the evaluations' `eval_loss`).
 */
export async function trainDiscriminator(o: TrainDiscriminatorOptions): Promise<StepRecord[]> {
  const B = o.batch ?? 8;
  const T = o.length + 1;
  if (B < 2 || B % 2 !== 0)
    throw new LorakitError('LK_INVALID_ARGUMENT', `trainDiscriminator: batch must be even and ≥ 2, got ${B}`);
  checkRows('real', o.real, o.length);
  checkRows('synthetic', o.synthetic, o.length);
  const h = o.heldOut;
  const heldBatches: FitBatch[] = [];
  if (h) {
    checkRows('held-out real', h.real, o.length);
    checkRows('held-out synthetic', h.synthetic, o.length);
    if (h.real.length !== h.synthetic.length || h.real.length % (B / 2) !== 0)
      throw new LorakitError(
        'LK_INVALID_ARGUMENT',
        `trainDiscriminator: held-out rows must be as many real as synthetic, a multiple of ${B / 2} each; got ` +
          `${h.real.length} real, ${h.synthetic.length} synthetic`,
      );
    for (let i = 0; i < h.real.length; i += B / 2)
      heldBatches.push(questionBatch(h.real.slice(i, i + B / 2), h.synthetic.slice(i, i + B / 2), o.tokens, o.length));
  }
  return fitAdapter({
    ...fitSettings(o),
    model: o.model,
    peft: o.peft,
    adapter: o.adapter,
    loss: (ctx: ModelContext<ModelConfig>, g: Graph) => {
      const inputIds = g.input('input_ids', 'i64', [B, T]);
      const labels = g.input('labels', 'i64', [B * T]);
      return causalLmLoss({ ctx, inputIds, labels, labelsAre: 'next' }).loss;
    },
    batch: (i) => {
      // the draws alternate real, synthetic, as the rows of the batch do
      const rng = new Rng(o.seed * 7919 + i);
      const real: ArrayLike<number>[] = [],
        synthetic: ArrayLike<number>[] = [];
      for (let b = 0; b < B; b++) {
        const pool = b % 2 === 0 ? o.real : o.synthetic;
        (b % 2 === 0 ? real : synthetic).push(pool[Math.floor(rng.next() * pool.length)]);
      }
      return questionBatch(real, synthetic, o.tokens, o.length);
    },
    heldOut: h && { batches: heldBatches, every: h.every, patience: h.patience },
  });
}

/** How well scores separate real rows from synthetic ones (a score > threshold means "classified real"). */
export interface SeparationStats {
  /** Share of rows classified correctly at the threshold, and at 0. */
  accuracy: number;
  /** Share of real rows classified real (the filter's pass rate on real text). */
  realPassed: number;
  /** Share of synthetic rows classified real. */
  syntheticPassed: number;
  /** Mean two-way cross-entropy, −log σ(score) for real rows and −log σ(−score) for synthetic ones (nats). */
  logLoss: number;
  /** P(score of a random real row > that of a random synthetic one), ties counting ½ (ROC AUC). */
  auc: number;
  /** Mean |score|: how sure the discriminator is. */
  meanAbsScore: number;
}

/** −log σ(x), stable for large |x|. */
const softplusNeg = (x: number) => (x > 0 ? Math.log1p(Math.exp(-x)) : -x + Math.log1p(Math.exp(x)));

/** SeparationStats of the scores of real rows and of synthetic rows (threshold default 0, the paper's rule). */
export function separationStats(real: ArrayLike<number>, synthetic: ArrayLike<number>, threshold = 0): SeparationStats {
  const R = Array.from(real),
    S = Array.from(synthetic);
  if (R.length === 0 || S.length === 0)
    throw new LorakitError('LK_INVALID_ARGUMENT', 'separationStats: needs at least one real and one synthetic score');
  const realPassed = R.filter((x) => x > threshold).length / R.length;
  const syntheticPassed = S.filter((x) => x > threshold).length / S.length;
  let pairs = 0;
  for (const r of R) for (const s of S) pairs += r > s ? 1 : r === s ? 0.5 : 0;
  const all = [...R, ...S];
  return {
    accuracy: (realPassed * R.length + (1 - syntheticPassed) * S.length) / all.length,
    realPassed,
    syntheticPassed,
    logLoss: (R.reduce((a, x) => a + softplusNeg(x), 0) + S.reduce((a, x) => a + softplusNeg(-x), 0)) / all.length,
    auc: pairs / (R.length * S.length),
    meanAbsScore: all.reduce((a, x) => a + Math.abs(x), 0) / all.length,
  };
}

/** A compiled discriminator: scores rows of `length` text tokens. Call dispose() at the end. */
export class Discriminator {
  private constructor(
    private probs: LogProbs,
    readonly tokens: DiscriminatorTokens,
    readonly length: number,
  ) {}

  /** Compiles the scorer of `model` with the discriminator adapter applied (e.g. peft.generationAdapter()). */
  static async create(
    model: LoadedModel,
    adapter: ScoringAdapter,
    tokens: DiscriminatorTokens,
    length: number,
    opts: { batch?: number; compile?: CompileOptions } = {},
  ): Promise<Discriminator> {
    const probs = await LogProbs.create(model, {
      batch: opts.batch ?? 8,
      seqLen: length + 1,
      lastOnly: true,
      adapter,
      compile: opts.compile,
    });
    return new Discriminator(probs, tokens, length);
  }

  /** log p(real) − log p(synthetic) at the separator, per row (> 0: classified real). */
  async score(rows: readonly ArrayLike<number>[]): Promise<Float64Array> {
    const logp = await this.probs.run(rows.map((r) => questionRow(r, this.tokens)));
    const V = this.probs.vocab;
    return Float64Array.from(rows, (_, n) => logp[n * V + this.tokens.real] - logp[n * V + this.tokens.synthetic]);
  }

  /** Releases the compiled session. */
  async dispose(): Promise<void> {
    await this.probs.dispose();
  }
}
