/**
 * Next-token log-probabilities of a causal LM (optionally with adapters) on fixed-size batches of token rows: the
 * teacher's distributions that Trans-LoRA distils, and the discriminator's answer at a row's last position. One
 * compiled graph per (model, adapter, batch, length, last-only); rows beyond a multiple of the batch are padded
 * with copies of the last row and dropped from the result. Not here: the loss (distill-loss.ts), sampling (generate).
 */
import { LorakitError } from '../../errors.ts';
import { Graph, logSoftmax } from '../../graph/index.ts';
import { buildCausalLM, type LoadedModel } from '../../models/index.ts';
import type { ModuleHooks } from '../../nn/index.ts';
import { compile, type CompileOptions, type Session } from '../../runtime/index.ts';

/** Adapters to apply: module hooks (made once for the graph) and in-memory weights (PeftModel.generationAdapter()). */
export interface ScoringAdapter {
  hooks(): ModuleHooks;
  overrides?: ReadonlyMap<string, Float32Array | Float64Array>;
}

/** Options of `LogProbs.create`. */
export interface LogProbsOptions {
  /** Rows per run and tokens per row (every row has exactly `seqLen` tokens). */
  batch: number;
  seqLen: number;
  /** Only the last position's distribution ([rows, V] instead of [rows, T, V]). */
  lastOnly?: boolean;
  adapter?: ScoringAdapter;
  compile?: CompileOptions;
}

/** A compiled log-probability graph; see the file header. */
export class LogProbs {
  private constructor(
    private session: Session,
    readonly vocab: number,
    readonly o: LogProbsOptions,
  ) {}

  /** Builds and compiles the graph of `model` with `o.adapter`. */
  static async create(model: LoadedModel, o: LogProbsOptions): Promise<LogProbs> {
    const g = new Graph(o.lastOnly ? 'last-logprobs' : 'logprobs');
    const ctx = model.context(g, { hooks: o.adapter?.hooks(), overrides: o.adapter?.overrides });
    const ids = g.input('input_ids', 'i64', [o.batch, o.seqLen]);
    const out = buildCausalLM(ctx, { inputIds: ids });
    const hidden = o.lastOnly ? out.hidden.slice([o.seqLen - 1], [o.seqLen], [1]) : out.hidden; // [B, T|1, D]
    g.output('logp', logSoftmax(out.lmHead(hidden))); // [B, T|1, V]
    return new LogProbs(await compile(g, o.compile), model.config.vocab_size, o);
  }

  /** Log-probabilities of `rows` (each `seqLen` token ids): [rows, T, V] or, last-only, [rows, V], row-major. */
  async run(rows: readonly ArrayLike<number>[]): Promise<Float32Array> {
    const { batch: B, seqLen: T } = this.o;
    const per = (this.o.lastOnly ? 1 : T) * this.vocab;
    const out = new Float32Array(rows.length * per);
    for (let start = 0; start < rows.length; start += B) {
      const ids = new BigInt64Array(B * T);
      for (let b = 0; b < B; b++) {
        const row = rows[Math.min(start + b, rows.length - 1)];
        if (row.length !== T)
          throw new LorakitError(
            'LK_SHAPE_MISMATCH',
            `LogProbs.run: row ${start + b} has ${row.length} tokens, expected ${T} (the compiled length)`,
          );
        for (let t = 0; t < T; t++) ids[b * T + t] = BigInt(row[t]);
      }
      const r = await this.session.run({ input_ids: ids });
      const data = r.logp.data as Float32Array;
      const n = Math.min(B, rows.length - start);
      out.set(data.subarray(0, n * per), start * per);
    }
    return out;
  }

  /** Releases the compiled session. */
  async dispose(): Promise<void> {
    await this.session.dispose();
  }
}
