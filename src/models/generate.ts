/**
 * Text generation with a KV cache: one graph (past cache and new tokens in → last-position logits and the new
 * tokens' keys/values out), compiled once per model and adapter, runs the prefill (the whole left-padded prompt, an
 * empty past) and every decode step (one token per row); the cache itself lives on the host (kv-cache.ts). One
 * session means one copy of the prepacked weights. The host loop
 * picks tokens with `sampling.ts`, streams text pieces, and stops rows on eos, stop strings or the token budget;
 * finished rows keep being fed padding until every row is done.
 * Semantics follow transformers' `generate` (greedy tokens equal its fixtures), except that padding never counts
 * for the repetition penalty, so a row's tokens do not depend on the rows batched with it.
 * Not here: the model graphs (gpt2.ts, llama.ts, causal.ts), token choice (sampling.ts), serving many adapters.
 */
import { join, randomInt } from '../io/host.ts';
import { LorakitError } from '../errors.ts';
import { Graph } from '../graph/index.ts';
import { compile, type CompileOptions, type Feed, type Session } from '../runtime/index.ts';
import {
  type ChatMessage,
  type GenerationConfig,
  type HfTokenizer,
  type StreamDecoder,
  chatTemplateFromConfig,
  encodeChat,
  parseGenerationConfig,
  readJsonFile,
} from '../io/index.ts';
import type { ModuleHooks } from '../nn/index.ts';
import { dimOf } from '../nn/index.ts';
import { buildCausalLM, causalGraphInputs, leftPaddedPositions, type CacheSpec, type LoadedModel } from './index.ts';
import { KvCache, newName } from './kv-cache.ts';
import { chooseToken, createRng, eosSet, resolveSampling, StopStrings, type SamplingOptions } from './sampling.ts';

/**
 * Adapters (or any module hooks) applied while building both graphs; PeftModel provides hooks and overrides.
 * Without `key` the graph is rebuilt on every call; compile() finds the session of an equal graph in its cache, and
 * each call disposes its handle.
 */
export interface GenerationAdapter {
  /** Makes the hooks for one graph (called once per graph: hooks keep per-graph tensors). */
  hooks(): ModuleHooks;
  /** In-memory base weights (merged weights, modules_to_save copies). */
  overrides?: ReadonlyMap<string, Float32Array | Float64Array>;
  /** Values for graph inputs the hooks declared (adapter tensors fed at run time). */
  feeds?: Record<string, Feed>;
  /** Promises that equal keys mean equal hooks and values: then the graphs are built once per model and key. */
  key?: string;
}

/** Why a row stopped: an eos token, a stop string, the token budget, or the abort signal. */
export type FinishReason = 'eos' | 'stop' | 'length' | 'abort';

/** Passed to `onToken` with each piece of streamed text. */
export interface TokenEvent {
  /** Batch row. */
  row: number;
  /** The token that produced the piece; null for the text released when the row finishes. */
  tokenId: number | null;
  /** Set on the row's last event. */
  finishReason?: FinishReason;
}

/** Options of `generate`. Exactly one of prompt, prompts, messages, inputIds. */
export interface GenerateOptions extends SamplingOptions {
  /** One text prompt (encoded with the tokenizer; see addSpecialTokens). */
  prompt?: string;
  /** Several prompts, generated as one left-padded batch. */
  prompts?: string[];
  /** A conversation, rendered with `chatTemplate` (default: the tokenizer_config.json template) and a generation
   * prompt. */
  messages?: ChatMessage[];
  /** Jinja chat template for `messages` (e.g. from loadChatTemplate(dir) when it is in chat_template.jinja). */
  chatTemplate?: string;
  /** Token ids of one prompt, or of a batch (one list per row). */
  inputIds?: number[] | number[][];
  /** Add BOS etc. when encoding `prompt`/`prompts` (default true). */
  addSpecialTokens?: boolean;
  /** New tokens per row at most (default 64). */
  maxNewTokens?: number;
  /** Stop strings, checked on the decoded text; the output ends before the first one. */
  stop?: string | string[];
  /** Token ids that end a row (kept in its tokenIds, not in its text); default: generation_config/config eos; null:
   * none. */
  eosTokenId?: number | number[] | null;
  /** Seed of the sampling RNG (row b draws from stream b); default: a random one, returned in the result. */
  seed?: number;
  /** Leave special tokens out of the text (default true). */
  skipSpecialTokens?: boolean;
  /** Called with every new piece of text, in order per row; awaited, so a slow consumer slows generation. */
  onToken?: (piece: string, event: TokenEvent) => void | Promise<void>;
  /** Adapter hooks and weights to generate with (e.g. a PeftModel's). */
  adapter?: GenerationAdapter;
  /** Stops all rows (finish reason 'abort') before the next step. */
  signal?: AbortSignal;
  /** Execution provider, threads, worker: passed to compile() for both graphs. */
  compile?: CompileOptions;
}

/** One generated row. */
export interface GeneratedRow {
  /** The new text (stop string and eos excluded). */
  text: string;
  /** The new token ids, eos included when it ended the row, stop-string tokens included. */
  tokenIds: number[];
  /** The prompt's ids (no padding). */
  promptTokenIds: number[];
  finishReason: FinishReason;
}

/** What `generate` returns: one row per prompt, in order. */
export interface GenerateResult {
  rows: GeneratedRow[];
  /** The seed used (give it back to reproduce a sampled result). */
  seed: number;
  /** Wall time of the prefill run and of all decode steps, in ms, and the decode steps run. */
  timings: { prefillMs: number; decodeMs: number; steps: number };
}

/** The compiled generation graph of one model (+ adapter). */
interface Compiled {
  session: Session;
  cacheDtype: 'f32' | 'f64';
  /** The handle belongs to this call (an adapter without a key), which disposes it; else it is kept per key. */
  owned: boolean;
}

/** What generation reads from a model once: sizes, limits, default eos ids, and its compiled graphs by adapter key. */
interface Prepared {
  vocabSize: number;
  maxPositions: number;
  eosTokenId: number | number[] | null;
  cache: CacheSpec;
  /** The attention's sliding window in cache positions, or null. */
  slidingWindow: number | null;
  compiled: Map<string, Promise<Compiled>>;
}

const preparedFor = new WeakMap<LoadedModel, Promise<Prepared>>();

/** Checks that `model` is a causal LM and reads generation_config.json (transformers' source of default eos ids). */
function prepare(model: LoadedModel): Promise<Prepared> {
  let p = preparedFor.get(model);
  if (!p) {
    p = (async () => {
      const c = model.config;
      if (c.model_type === 'bert' || !model.cache) {
        throw new LorakitError(
          'LK_UNSUPPORTED',
          `generate: ${model.dir} is a ${c.model_type} model, not a causal LM; generation supports gpt2, llama, ` +
            `mistral, qwen2`,
        );
      }
      const genPath = join(model.dir, 'generation_config.json');
      const gen = await readJsonFile(genPath).then(
        (j) => parseGenerationConfig(j, genPath),
        (e): GenerationConfig => {
          if (e instanceof LorakitError && e.code === 'LK_FILE_NOT_FOUND') return {}; // optional file
          throw e;
        },
      );
      const eosTokenId = gen.eos_token_id ?? c.eos_token_id ?? null;
      const maxPositions = c.model_type === 'gpt2' ? c.n_positions : c.max_position_embeddings;
      const slidingWindow = c.model_type === 'gpt2' ? null : c.sliding_window;
      return {
        vocabSize: c.vocab_size,
        maxPositions,
        eosTokenId,
        cache: model.cache,
        slidingWindow,
        compiled: new Map(),
      };
    })();
    preparedFor.set(model, p);
    p.catch(() => preparedFor.delete(model));
  }
  return p;
}

/**
 * Generates text for one prompt or a batch. Greedy unless sampling is asked for (temperature > 0, topK or topP);
 * see `SamplingOptions`. Returns one row per prompt.
 */
export async function generate(
  model: LoadedModel,
  tokenizer: HfTokenizer,
  options: GenerateOptions,
): Promise<GenerateResult> {
  const m = await prepare(model);
  const sampling = resolveSampling(options);
  const maxNewTokens = options.maxNewTokens ?? 64;
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1) {
    throw new LorakitError('LK_INVALID_ARGUMENT', `maxNewTokens must be a positive integer, got ${maxNewTokens}`, {
      option: 'maxNewTokens',
    });
  }
  const prompts = promptIds(m.vocabSize, tokenizer, options);
  const longest = Math.max(...prompts.map((p) => p.length));
  if (longest + maxNewTokens > m.maxPositions) {
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `maxNewTokens: the prompt (${longest} tokens) plus maxNewTokens (${maxNewTokens}) exceeds the model's ` +
        `${m.maxPositions} positions; use at most ${Math.max(0, m.maxPositions - longest)}`,
      { option: 'maxNewTokens' },
    );
  }
  const eos = eosSet(options.eosTokenId === undefined ? (m.eosTokenId ?? tokenizer.eosTokenId) : options.eosTokenId);
  const seed = options.seed ?? randomInt(2 ** 31);
  const skipSpecialTokens = options.skipSpecialTokens ?? true;
  const padId = tokenizer.padTokenId ?? [...eos][0] ?? 0;
  const { session, cacheDtype, owned } = await compiledGraphs(model, m, options.adapter, options.compile);
  try {
    const loop: Loop = { m, tokenizer, options, prompts, maxNewTokens, sampling, eos, seed, skipSpecialTokens, padId };
    return await decode(session, cacheDtype, loop);
  } finally {
    if (owned) await session.dispose(); // the runtime's cache keeps the session for the next call
  }
}

/** What the prefill and decode loop reads, resolved and checked by `generate`. */
interface Loop {
  m: Prepared;
  tokenizer: HfTokenizer;
  options: GenerateOptions;
  prompts: number[][];
  maxNewTokens: number;
  sampling: ReturnType<typeof resolveSampling>;
  eos: Set<number>;
  seed: number;
  skipSpecialTokens: boolean;
  padId: number;
}

/** The prefill and decode loop of `generate` on a compiled graph. */
async function decode(session: Session, cacheDtype: 'f32' | 'f64', loop: Loop): Promise<GenerateResult> {
  const { m, tokenizer, options, prompts, maxNewTokens, sampling, eos, seed, skipSpecialTokens, padId } = loop;
  const longest = Math.max(...prompts.map((p) => p.length));
  const extra = options.adapter?.feeds ?? {};

  const B = prompts.length;
  const rows = prompts.map(
    (ids, b) =>
      new Row(
        b,
        ids,
        createRng(seed, b),
        tokenizer.createStreamDecoder({ skipSpecialTokens }),
        new StopStrings(options.stop),
        options.onToken,
      ),
  );

  // Prefill: left-padded prompts [B, T], mask [B, T], positions cumsum(mask) - 1.
  const T = longest;
  let mask: number[][] = prompts.map((p) => [
    ...new Array<number>(T - p.length).fill(0),
    ...new Array<number>(p.length).fill(1),
  ]);
  const ids = new BigInt64Array(B * T);
  prompts.forEach((p, b) => {
    for (let t = 0; t < T; t++) ids[b * T + t] = BigInt(t < T - p.length ? padId : p[t - (T - p.length)]);
  });
  const mask64 = () => BigInt64Array.from(mask.flat(), BigInt);
  // Room for the prompt and every token a decode step is fed; the unfilled part is masked, unless a sliding window
  // (which counts cache positions) could reach it: then the filled part is fed as a copy.
  const cache = new KvCache(m.cache, B, T + maxNewTokens, cacheDtype);
  const compact = m.slidingWindow !== null && m.slidingWindow <= cache.capacity;
  let t0 = performance.now();
  let out = await session.run({
    ...extra,
    ...cache.empty(),
    input_ids: { data: ids, shape: [B, T] },
    attention_mask: { data: mask64(), shape: [B, T] },
    position_ids: { data: leftPaddedPositions(mask.flat(), B), shape: [B, T] },
  });
  cache.append(out, T);
  const prefillMs = performance.now() - t0;
  t0 = performance.now();
  let steps = 0;
  for (;;) {
    const V = out.logits.shape[1]; // logits [B, V]
    const next = new BigInt64Array(B).fill(BigInt(padId));
    for (const r of rows) {
      if (r.finish) continue;
      if (options.signal?.aborted) {
        await r.end('abort');
        continue;
      }
      const logits = Float32Array.from(out.logits.data.subarray(r.index * V, (r.index + 1) * V) as Float32Array);
      const tok = chooseToken(logits, r.seen, sampling, r.rng);
      next[r.index] = BigInt(tok);
      await r.push(tok, eos.has(tok), maxNewTokens);
    }
    if (rows.every((r) => r.finish)) break;
    // Decode one token per row; finished rows are fed padding that the mask hides.
    mask = mask.map((m, b) => [...m, rows[b].finish ? 0 : 1]);
    const past: Record<string, Feed> = compact ? cache.compact() : cache.feeds;
    const attention = compact
      ? { data: mask64(), shape: [B, mask[0].length] }
      : { data: cache.paddedMask(mask, 1), shape: [B, cache.capacity + 1] };
    // The cache buffers move to the ORT worker and back instead of being copied.
    out = await session.run(
      {
        ...extra,
        ...past,
        input_ids: { data: next, shape: [B, 1] },
        attention_mask: attention,
        position_ids: { data: leftPaddedPositions(mask.flat(), B, 1), shape: [B, 1] },
      },
      undefined,
      { transfer: Object.keys(past) },
    );
    cache.append(out, 1);
    steps++;
  }
  return {
    rows: rows.map((r) => ({ text: r.text, tokenIds: r.tokens, promptTokenIds: r.prompt, finishReason: r.finish! })),
    seed,
    timings: { prefillMs, decodeMs: performance.now() - t0, steps },
  };
}

/** One row of a batch on the host: its tokens, the ids the repetition penalty sees, streamed text and finish. */
class Row {
  readonly tokens: number[] = [];
  readonly seen: Set<number>;
  text = '';
  finish: FinishReason | null = null;

  constructor(
    readonly index: number,
    readonly prompt: number[],
    readonly rng: () => number,
    private readonly decoder: StreamDecoder,
    private readonly stops: StopStrings,
    private readonly onToken: GenerateOptions['onToken'],
  ) {
    this.seen = new Set(prompt); // padding is not part of a row, so it is never penalised
  }

  /** Takes the chosen token: an eos ends the row, otherwise its text goes through the stop-string matcher. */
  async push(tok: number, isEos: boolean, maxNewTokens: number): Promise<void> {
    this.tokens.push(tok);
    this.seen.add(tok);
    if (isEos) return this.end('eos');
    const res = this.stops.push(this.decoder.push(tok));
    if (res.stopped) {
      this.finish = 'stop';
      return this.emit(res.text, tok);
    }
    await this.emit(res.text, tok);
    if (this.tokens.length >= maxNewTokens) await this.end('length');
  }

  /** Ends the row: releases the text held by the decoder and the stop matcher (which may still find a stop string). */
  async end(reason: FinishReason): Promise<void> {
    const res = this.stops.push(this.decoder.flush());
    this.finish = res.stopped ? 'stop' : reason;
    await this.emit(res.text + (res.stopped ? '' : this.stops.flush()), null);
  }

  private async emit(piece: string, tokenId: number | null): Promise<void> {
    this.text += piece;
    const event: TokenEvent = this.finish
      ? { row: this.index, tokenId, finishReason: this.finish }
      : { row: this.index, tokenId };
    if (this.onToken) await this.onToken(piece, event);
  }
}

/** The prompt token ids of each row, from whichever prompt option was given; validated against the vocabulary. */
function promptIds(vocabSize: number, tokenizer: HfTokenizer, o: GenerateOptions): number[][] {
  const given = (['prompt', 'prompts', 'messages', 'inputIds'] as const).filter((k) => o[k] !== undefined);
  if (given.length !== 1) {
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `generate: give exactly one of prompt, prompts, messages, inputIds; got ` +
        `${given.length ? given.join(', ') : 'none'}`,
    );
  }
  const addSpecialTokens = o.addSpecialTokens ?? true;
  let rows: number[][];
  if (o.prompt !== undefined) rows = [tokenizer.encode(o.prompt, { addSpecialTokens })];
  else if (o.prompts !== undefined) {
    if (!Array.isArray(o.prompts) || o.prompts.length === 0)
      throw new LorakitError('LK_INVALID_ARGUMENT', 'prompts must be a non-empty array of strings', {
        option: 'prompts',
      });
    rows = o.prompts.map((p) => tokenizer.encode(p, { addSpecialTokens }));
  } else if (o.messages !== undefined) {
    const template = o.chatTemplate ?? chatTemplateFromConfig(tokenizer.config as Record<string, unknown>);
    if (template === undefined)
      throw new LorakitError('LK_INVALID_ARGUMENT', 'messages: the tokenizer has no chat template; pass chatTemplate', {
        option: 'chatTemplate',
      });
    rows = [encodeChat(tokenizer, template, o.messages, { addGenerationPrompt: true }).ids];
  } else {
    const ids = o.inputIds!;
    rows = ids.length > 0 && Array.isArray(ids[0]) ? (ids as number[][]) : [ids as number[]];
  }
  rows.forEach((r, b) => {
    if (r.length === 0)
      throw new LorakitError(
        'LK_INVALID_ARGUMENT',
        `prompt ${b} has no tokens; generation needs at least one (a BOS token, or some text)`,
        { option: 'prompt' },
      );
    r.forEach((id, i) => {
      if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
        throw new LorakitError(
          'LK_INVALID_ARGUMENT',
          `inputIds[${b}][${i}] must be a token id in [0, ${vocabSize}), got ${id}`,
          { option: 'inputIds' },
        );
      }
    });
  });
  return rows;
}

/** Builds and compiles the generation graph of a model (+ adapter); cached per adapter key when there is one. */
function compiledGraphs(
  model: LoadedModel,
  m: Prepared,
  adapter: GenerationAdapter | undefined,
  opts: CompileOptions = {},
): Promise<Compiled> {
  const key = adapter && adapter.key === undefined ? null : JSON.stringify([adapter?.key ?? '', opts]);
  let c = key === null ? undefined : m.compiled.get(key);
  if (!c) {
    c = (async () => {
      let g = buildGraph(model, m.cache, adapter);
      const cacheDtype = g.outputs.find((o) => o.name === newName(0, 'key'))!.tensor.dtype as 'f32' | 'f64';
      if (cacheDtype !== 'f32') g = buildGraph(model, m.cache, adapter, cacheDtype); // the past inputs take the cache's dtype
      return { session: await compile(g, opts), cacheDtype, owned: key === null };
    })();
    if (key !== null) {
      m.compiled.set(key, c);
      c.catch(() => m.compiled.delete(key));
    }
  }
  return c;
}

/**
 * past_key_values.{i}.* [B, Hkv, P, hd] (P = 0 for the prefill), input_ids/position_ids [B, T], attention_mask
 * [B, P + T] → logits [B, V] of the last position, new.{i}.* [B, Hkv, T, hd] (the fed tokens' keys and values: the
 * last T positions of the present cache). Only the last position goes through the LM head (its [B, T, V] logits would
 * be most of the prefill's work).
 */
function buildGraph(
  model: LoadedModel,
  cache: CacheSpec,
  adapter?: GenerationAdapter,
  cacheDtype: 'f32' | 'f64' = 'f32',
): Graph {
  const g = new Graph('generate');
  const { inputs } = causalGraphInputs(g, cache, { past: true, dtype: cacheDtype });
  const ctx = model.context(g, { hooks: adapter?.hooks(), overrides: adapter?.overrides });
  const out = buildCausalLM(ctx, inputs);
  const last = out.hidden.slice([-1], [2 ** 62], [1]); // [B, 1, D]
  g.output('logits', out.lmHead(last).squeeze(1)); // [B, V]
  const start = dimOf(inputs.past![0].key, 2).unsqueeze(0); // [1]: P
  out.present.forEach((kv, i) => {
    g.output(newName(i, 'key'), kv.key.slice(start, [2 ** 62], [2])); // [B, Hkv, T, hd]
    g.output(newName(i, 'value'), kv.value.slice(start, [2 ** 62], [2]));
  });
  return g;
}
