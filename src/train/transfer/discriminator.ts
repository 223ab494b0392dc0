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
import { type AdapterFitSettings, fitAdapter, fitSettings } from './fit-adapter.ts';
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
}

/** A row as the discriminator reads it: the text tokens, then the separator. */
export function questionRow(text: ArrayLike<number>, tokens: DiscriminatorTokens): number[] {
  return [...Array.from(text), tokens.separator];
}

/** Trains the discriminator adapter (balanced batches drawn with `seed`); returns the step records. */
export async function trainDiscriminator(o: TrainDiscriminatorOptions): Promise<StepRecord[]> {
  const B = o.batch ?? 8;
  const T = o.length + 1;
  if (B < 2 || B % 2 !== 0)
    throw new LorakitError('LK_INVALID_ARGUMENT', `trainDiscriminator: batch must be even and ≥ 2, got ${B}`);
  for (const [what, rows] of [
    ['real', o.real],
    ['synthetic', o.synthetic],
  ] as const) {
    if (rows.length === 0) throw new LorakitError('LK_INVALID_ARGUMENT', `trainDiscriminator: no ${what} rows`);
    const bad = rows.findIndex((r) => r.length !== o.length);
    if (bad >= 0)
      throw new LorakitError(
        'LK_SHAPE_MISMATCH',
        `trainDiscriminator: ${what} row ${bad} has ${rows[bad].length} tokens, expected ${o.length}`,
      );
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
      const rng = new Rng(o.seed * 7919 + i);
      const ids = new BigInt64Array(B * T);
      const labels = new BigInt64Array(B * T).fill(BigInt(IGNORE_INDEX));
      for (let b = 0; b < B; b++) {
        const real = b % 2 === 0;
        const pool = real ? o.real : o.synthetic;
        const row = questionRow(pool[Math.floor(rng.next() * pool.length)], o.tokens);
        for (let t = 0; t < T; t++) ids[b * T + t] = BigInt(row[t]);
        labels[b * T + T - 1] = BigInt(real ? o.tokens.real : o.tokens.synthetic);
      }
      return { feeds: { input_ids: ids, labels }, tokens: B };
    },
  });
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
