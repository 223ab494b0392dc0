/**
 * The serving engine: many requests, each for the base model or any adapter, generated together by continuous
 * (iteration-level) batching over one compiled graph (batch-graph.ts). Each iteration admits waiting requests by
 * S-LoRA's worst-case KV rule (scheduler.ts) and prefills them as one batch (each row a segment with its own
 * adapter), then runs one decode step for every running completion, whatever its adapter, rank or length. Requests
 * join and leave between steps; a cancelled request leaves at the next step and frees its KV slots, its adapter slot
 * and its pin on the adapter. A request's n completions share its prompt's KV slots.
 * Not here: HTTP (server/), token choice (sequence.ts), adapter loading (adapter-pool.ts).
 */
import { randomInt } from '../io/host.ts';
import { LorakitError } from '../errors.ts';
import type { HfTokenizer } from '../io/index.ts';
import type { LoadedModel } from '../models/index.ts';
import { leftPaddedPositions } from '../models/index.ts';
import { StopStrings, createRng, eosSet, resolveSampling, type SamplingOptions } from '../models/sampling.ts';
import type { Session } from '../runtime/index.ts';
import type { AdapterPool, ResidentAdapter } from './adapter-pool.ts';
import type { KvPool } from './kv-pool.ts';
import { type CacheDemand, Scheduler, type Schedulable } from './scheduler.ts';
import { type FinishReason, type Picking, Sequence, type SequenceEvent, type TokenLogprob } from './sequence.ts';
import type { LoraSlots } from './slots.ts';
import { EngineMetrics, type MetricsSnapshot } from './metrics.ts';

/** One generation request. */
export interface EngineRequest {
  /** Adapter name, or null for the base model. */
  adapter: string | null;
  promptIds: number[];
  /** Completions of this prompt (default 1). */
  n?: number;
  /** New tokens per completion at most. */
  maxTokens: number;
  /** temperature (0: greedy), topP, topK, repetitionPenalty, as generate(); plus OpenAI's penalties. */
  sampling?: Omit<SamplingOptions, 'doSample'> & { presencePenalty?: number; frequencyPenalty?: number };
  stop?: string[];
  /** Seed of the draws (completion i draws from stream i); default random. */
  seed?: number;
  /** Report log-probabilities with this many alternatives per token (0: the chosen token's only). */
  logprobs?: number | null;
  /** Keep generating past eos tokens. */
  ignoreEos?: boolean;
  signal?: AbortSignal;
  /** Called with each piece of text as it is generated (streaming). */
  onEvent?: (e: SequenceEvent) => void;
}

/** A submitted request: accepted into the queue (or refused), then completed. */
export interface Submission {
  accepted: Promise<void>;
  completion: Promise<Completion>;
}

/** One finished completion. */
export interface Choice {
  index: number;
  text: string;
  tokenIds: number[];
  finishReason: FinishReason;
  logprobs: TokenLogprob[] | null;
}

/** A finished request. */
export interface Completion {
  choices: Choice[];
  promptTokens: number;
  completionTokens: number;
  /** Milliseconds waiting (load and queue), to the first token, and in all. */
  timings: { queuedMs: number; firstTokenMs: number; totalMs: number };
}

/** Bounds and sizes of an engine (the server's flags). */
export interface EngineLimits {
  /** Completions running at once (rows of a decode step). */
  maxRows: number;
  /** Padded prompt tokens per prefill; also the longest prompt. */
  maxPrefillTokens: number;
  /** Prompt + completion tokens of one completion (at most the model's positions). */
  maxModelLen: number;
  /** New tokens per completion at most. */
  maxTokens: number;
  /** Requests in the engine at once (loading, waiting or running); one more is LK_OVERLOADED. */
  maxConcurrent: number;
  /** Completions per request at most. */
  maxN: number;
}

/** What an engine runs on. */
export interface EngineParts {
  model: LoadedModel;
  tokenizer: HfTokenizer;
  session: Session;
  kv: KvPool;
  slots: LoraSlots;
  adapters: AdapterPool;
  limits: EngineLimits;
  eos: number | number[] | null;
}

/** A request inside the engine. */
interface Job extends Schedulable {
  req: EngineRequest;
  adapterName: string | null;
  resident: ResidentAdapter | null;
  loraSlot: number;
  seqs: Sequence[];
  picking: Picking;
  seed: number;
  t0: number;
  tAdmit: number;
  tFirst: number;
  done: (c: Completion) => void;
  reject: (e: unknown) => void;
}

/** The engine; see the file header. Create it with `createEngine` (serve/index.ts). */
export class Engine {
  readonly metrics: EngineMetrics;
  private readonly scheduler: Scheduler<Job>;
  private readonly running: Job[] = [];
  private inflight = 0;
  private wake: (() => void) | null = null;
  private stopped = false;
  private readonly loop: Promise<void>;
  private readonly vocab: number;

  constructor(readonly parts: EngineParts) {
    const { limits, kv } = parts;
    this.scheduler = new Scheduler<Job>({
      kvTokens: kv.capacity,
      maxRows: limits.maxRows,
      maxPrefillTokens: limits.maxPrefillTokens,
    });
    this.metrics = new EngineMetrics();
    this.vocab = parts.model.config.vocab_size;
    this.loop = this.run();
  }

  /** Requests loading their adapter, waiting, or running. */
  get load(): { inflight: number; waiting: number; running: number } {
    return { inflight: this.inflight, waiting: this.scheduler.waiting.length, running: this.running.length };
  }

  /** Adapter names of the running and the waiting requests (vLLM's lora_requests_info labels). */
  adapterUse(): { running: string[]; waiting: string[] } {
    const names = (js: readonly Job[]) => [...new Set(js.flatMap((j) => (j.adapterName ? [j.adapterName] : [])))];
    return { running: names(this.running), waiting: names(this.scheduler.waiting) };
  }

  /** The gauges of the metrics endpoint. */
  snapshot(model: string): MetricsSnapshot {
    const { kv, slots, adapters } = this.parts;
    const use = this.adapterUse();
    return {
      model,
      running: this.running.length,
      waiting: this.scheduler.waiting.length,
      kvUsed: kv.used,
      kvCapacity: kv.capacity,
      maxLoras: slots.slots - 1,
      runningAdapters: use.running,
      waitingAdapters: use.waiting,
      residentAdapters: adapters.residents().length,
      adapterBytes: adapters.bytes,
    };
  }

  /** Generates the request's completions. Rejects with a LorakitError for bad requests, a full engine, a bad adapter. */
  generate(req: EngineRequest): Promise<Completion> {
    return this.submit(req).completion;
  }

  /**
   * Submits a request: `accepted` resolves once it is queued (checked, under the concurrency limit, its adapter
   * loaded) and rejects with the reason it was refused, so an HTTP route can still answer with a status before it
   * starts streaming; `completion` resolves when it is done.
   */
  submit(req: EngineRequest): Submission {
    let accept!: () => void;
    let refuse!: (e: unknown) => void;
    const accepted = new Promise<void>((resolve, reject) => {
      accept = resolve;
      refuse = reject;
    });
    accepted.catch(() => {}); // a caller may await only `completion`
    const completion = this.process(req, accept);
    completion.catch(refuse); // rejects `accepted` only if it was not accepted yet
    return { accepted, completion };
  }

  private async process(req: EngineRequest, accept: () => void): Promise<Completion> {
    if (this.stopped) throw new LorakitError('LK_UNAVAILABLE', 'the engine is shut down');
    const { limits } = this.parts;
    if (this.inflight >= limits.maxConcurrent) {
      this.metrics.rejected++;
      throw new LorakitError(
        'LK_OVERLOADED',
        `the server is handling ${this.inflight} requests, its limit (--max-concurrent); retry later`,
      );
    }
    const n = req.n ?? 1;
    this.check(req, n);
    const picking = this.picking(req);
    this.inflight++;
    const t0 = performance.now();
    let resident: ResidentAdapter | null = null;
    try {
      if (req.adapter !== null) resident = await this.parts.adapters.acquire(req.adapter);
      const adapterTokens = resident ? Math.ceil(resident.form.floats / (this.parts.kv.bytesPerToken / 4)) : 0;
      const need = n * (req.promptIds.length + req.maxTokens) + adapterTokens;
      if (need > this.parts.kv.capacity) {
        throw new LorakitError(
          'LK_INVALID_ARGUMENT',
          `the request needs up to ${need} KV-cache tokens (n × (prompt + max_tokens) + adapter), more than the ` +
            `server's ${this.parts.kv.capacity}; lower max_tokens or n`,
          { param: 'max_tokens' },
        );
      }
      return await new Promise<Completion>((done, reject) => {
        const job: Job = {
          req,
          n,
          promptTokens: req.promptIds.length,
          maxTokens: req.maxTokens,
          adapterName: req.adapter,
          adapterKey: resident?.key ?? null,
          adapterTokens,
          resident,
          loraSlot: -1,
          seqs: [],
          picking,
          seed: req.seed ?? randomInt(2 ** 31),
          t0,
          tAdmit: 0,
          tFirst: 0,
          done,
          reject,
        };
        if (req.signal?.aborted) {
          accept();
          return done(this.empty(job, 'abort'));
        }
        req.signal?.addEventListener('abort', () => this.wake?.(), { once: true });
        this.scheduler.push(job);
        accept();
        this.wake?.();
      });
    } finally {
      if (resident) this.parts.adapters.unpin(resident.name);
      this.inflight--;
    }
  }

  /** Stops taking requests, ends running ones (finish reason 'abort') and waits for the loop to end. */
  async close(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.loop;
  }

  /** Validates a request against the model and the limits; errors name the OpenAI field. */
  private check(req: EngineRequest, n: number): void {
    const { limits } = this.parts;
    const bad = (param: string, msg: string) => new LorakitError('LK_INVALID_ARGUMENT', msg, { param });
    const p = req.promptIds;
    if (!Array.isArray(p) || p.length === 0) throw bad('prompt', 'the prompt has no tokens');
    const maxPrompt = Math.min(limits.maxPrefillTokens, limits.maxModelLen - 1);
    if (p.length > maxPrompt)
      throw bad('prompt', `the prompt has ${p.length} tokens; this server takes at most ${maxPrompt}`);
    p.forEach((id, i) => {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocab)
        throw bad('prompt', `prompt token ${i} must be an id in [0, ${this.vocab}), got ${id}`);
    });
    if (!Number.isInteger(req.maxTokens) || req.maxTokens < 1 || req.maxTokens > limits.maxTokens)
      throw bad('max_tokens', `max_tokens must be an integer in [1, ${limits.maxTokens}], got ${req.maxTokens}`);
    if (p.length + req.maxTokens > limits.maxModelLen) {
      throw bad(
        'max_tokens',
        `the prompt (${p.length} tokens) plus max_tokens (${req.maxTokens}) exceeds the model length ` +
          `${limits.maxModelLen}; use max_tokens ≤ ${limits.maxModelLen - p.length}`,
      );
    }
    if (!Number.isInteger(n) || n < 1 || n > Math.min(limits.maxN, limits.maxRows))
      throw bad('n', `n must be an integer in [1, ${Math.min(limits.maxN, limits.maxRows)}], got ${n}`);
  }

  private picking(req: EngineRequest): Picking {
    const s = req.sampling ?? {};
    const temperature = s.temperature ?? 1;
    const sampling = resolveSampling({ ...s, temperature, doSample: temperature > 0 });
    const pen = (name: string, v: number | undefined) => {
      if (v !== undefined && !(typeof v === 'number' && v >= -2 && v <= 2))
        throw new LorakitError('LK_INVALID_ARGUMENT', `${name} must be in [-2, 2], got ${v}`, { param: name });
      return v ?? 0;
    };
    const eos = req.ignoreEos ? new Set<number>() : eosSet(this.parts.eos ?? this.parts.tokenizer.eosTokenId);
    return {
      sampling,
      presencePenalty: pen('presence_penalty', s.presencePenalty),
      frequencyPenalty: pen('frequency_penalty', s.frequencyPenalty),
      eos,
      logprobs: req.logprobs ?? null,
      maxTokens: req.maxTokens,
    };
  }

  /** The loop: admit and prefill, decode one step, repeat while there is work; sleep when there is none. */
  private async run(): Promise<void> {
    while (!this.stopped || this.running.length > 0) {
      this.dropCancelled();
      if (this.stopped) {
        for (const j of this.running) for (const s of j.seqs) s.end('abort');
        this.finishDone();
        for (const j of this.scheduler.waiting) j.done(this.empty(j, 'abort'));
        break;
      }
      const admitted = this.scheduler.admit(this.runningState(), (j) => this.takeSlot(j));
      try {
        if (admitted.length > 0) await this.prefill(admitted);
        if (this.running.length > 0) await this.decode();
      } catch (e) {
        this.fail(e);
      }
      this.finishDone();
      if (this.running.length === 0 && this.scheduler.waiting.length === 0 && !this.stopped) {
        await new Promise<void>((r) => {
          this.wake = r;
        });
        this.wake = null;
      } else await new Promise<void>((r) => setImmediate(r)); // let HTTP handlers run between steps
    }
  }

  /** The running rows' cache demand and adapters, for admission. */
  private runningState(): { rows: CacheDemand[]; adapters: Map<string, number> } {
    const rows: CacheDemand[] = [];
    const adapters = new Map<string, number>();
    for (const j of this.running) {
      if (j.adapterKey) adapters.set(j.adapterKey, j.adapterTokens);
      for (const s of j.seqs) if (!s.finish) rows.push({ held: s.slots.length, left: j.maxTokens - s.tokens.length });
    }
    return { rows, adapters };
  }

  private takeSlot(j: Job): boolean {
    const s = this.parts.slots.acquire(j.adapterKey, j.resident?.form ?? null);
    if (s === null) return false;
    j.loraSlot = s;
    return true;
  }

  /** Prefills admitted requests as one left-padded batch and samples each completion's first token. */
  private async prefill(jobs: Job[]): Promise<void> {
    const { kv, slots, session } = this.parts;
    const B = jobs.length;
    const T = Math.max(...jobs.map((j) => j.promptTokens));
    const ids = new BigInt64Array(B * T);
    const mask = new BigInt64Array(B * T);
    jobs.forEach((j, b) => {
      const pad = T - j.promptTokens;
      j.req.promptIds.forEach((id, t) => {
        ids[b * T + pad + t] = BigInt(id);
        mask[b * T + pad + t] = 1n;
      });
    });
    const now = performance.now();
    for (const j of jobs) j.tAdmit = now;
    this.running.push(...jobs);
    const out = await session.run({
      ...kv.feeds(),
      ...slots.feeds(),
      input_ids: { data: ids, shape: [B, T] },
      attention_mask: { data: mask, shape: [B, T] },
      position_ids: { data: leftPaddedPositions(mask, B), shape: [B, T] },
      kv_index: { data: new BigInt64Array(0), shape: [B, 0] },
      lora_slot: { data: BigInt64Array.from(jobs, (j) => BigInt(j.loraSlot)), shape: [B] },
    });
    const prompts = jobs.map((j) => kv.alloc(j.promptTokens));
    kv.write(
      out,
      prompts.map((s) => [...new Array<number>(T - s.length).fill(-1), ...s]),
    );
    const V = out.logits.shape[1];
    const tFirst = performance.now();
    jobs.forEach((j, b) => {
      const logits = (out.logits.data as Float32Array).subarray(b * V, (b + 1) * V);
      for (let i = 0; i < j.n; i++) {
        if (i > 0) kv.retain(prompts[b]);
        const seq = this.sequence(j, i, [...prompts[b]]);
        j.seqs.push(seq);
        seq.step(logits);
      }
      j.tFirst = tFirst;
      this.metrics.promptTokens += j.promptTokens;
    });
    this.metrics.steps.prefill++;
  }

  /** One decode step: every running completion feeds its last token over its own cache and adapter. */
  private async decode(): Promise<void> {
    const { kv, slots, session } = this.parts;
    const rows = this.running.flatMap((j) => j.seqs.filter((s) => !s.finish).map((s) => ({ j, s })));
    if (rows.length === 0) return;
    const B = rows.length;
    const P = Math.max(...rows.map(({ s }) => s.slots.length));
    const index = new BigInt64Array(B * P);
    const mask = new BigInt64Array(B * (P + 1));
    rows.forEach(({ s }, b) => {
      const pad = P - s.slots.length; // right-aligned: slot 0 pads the front, masked
      s.slots.forEach((slot, t) => {
        index[b * P + pad + t] = BigInt(slot);
        mask[b * (P + 1) + pad + t] = 1n;
      });
      mask[b * (P + 1) + P] = 1n;
    });
    const out = await session.run({
      ...kv.feeds(),
      ...slots.feeds(),
      input_ids: { data: BigInt64Array.from(rows, ({ s }) => BigInt(s.last)), shape: [B, 1] },
      attention_mask: { data: mask, shape: [B, P + 1] },
      position_ids: { data: BigInt64Array.from(rows, ({ s }) => BigInt(s.slots.length)), shape: [B, 1] },
      kv_index: { data: index, shape: [B, P] },
      lora_slot: { data: BigInt64Array.from(rows, ({ j }) => BigInt(j.loraSlot)), shape: [B] },
    });
    const fresh = kv.alloc(B);
    kv.write(
      out,
      fresh.map((s) => [s]),
    );
    const V = out.logits.shape[1];
    rows.forEach(({ s }, b) => {
      s.slots.push(fresh[b]);
      s.step((out.logits.data as Float32Array).subarray(b * V, (b + 1) * V));
    });
    this.metrics.steps.decode++;
    this.metrics.decodeRows += B;
  }

  private sequence(j: Job, index: number, slots: number[]): Sequence {
    const { tokenizer } = this.parts;
    return new Sequence(
      index,
      slots,
      j.req.promptIds,
      j.picking,
      createRng(j.seed, index),
      tokenizer.createStreamDecoder({ skipSpecialTokens: true }),
      new StopStrings(j.req.stop),
      tokenizer,
      (e) => j.req.onEvent?.(e),
    );
  }

  /** Ends cancelled requests: waiting ones leave the queue, running ones finish with 'abort'. */
  private dropCancelled(): void {
    for (const j of [...this.scheduler.waiting]) {
      if (j.req.signal?.aborted && this.scheduler.remove(j)) j.done(this.empty(j, 'abort'));
    }
    for (const j of this.running) if (j.req.signal?.aborted) for (const s of j.seqs) s.end('abort');
  }

  /** Releases the slots of finished completions' requests and answers them. */
  private finishDone(): void {
    const { kv, slots } = this.parts;
    for (let k = this.running.length - 1; k >= 0; k--) {
      const j = this.running[k];
      if (j.seqs.length < j.n || j.seqs.some((s) => !s.finish)) continue;
      this.running.splice(k, 1);
      for (const s of j.seqs) kv.release(s.slots);
      slots.release(j.loraSlot);
      const end = performance.now();
      const choices = j.seqs.map((s) => ({
        index: s.index,
        text: s.text,
        tokenIds: s.tokens,
        finishReason: s.finish!,
        logprobs: j.picking.logprobs === null ? null : s.logprobs,
      }));
      const completionTokens = choices.reduce((n, c) => n + c.tokenIds.length, 0);
      const timings = { queuedMs: j.tAdmit - j.t0, firstTokenMs: j.tFirst - j.t0, totalMs: end - j.t0 };
      this.metrics.finished(choices, j.promptTokens, completionTokens, timings);
      j.done({ choices, promptTokens: j.promptTokens, completionTokens, timings });
    }
  }

  /** A step failed (an ORT error): the running requests fail with it and free their slots; the engine goes on. */
  private fail(e: unknown): void {
    this.metrics.stepErrors++;
    const { kv, slots } = this.parts;
    for (const j of this.running.splice(0)) {
      for (const s of j.seqs) kv.release(s.slots);
      slots.release(j.loraSlot);
      j.reject(e);
    }
  }

  /** The answer of a request that never ran. */
  private empty(j: Job, reason: FinishReason): Completion {
    const choices = Array.from({ length: j.n }, (_, index) => ({
      index,
      text: '',
      tokenIds: [],
      finishReason: reason,
      logprobs: null,
    }));
    const ms = performance.now() - j.t0;
    const timings = { queuedMs: ms, firstTokenMs: ms, totalMs: ms };
    return { choices, promptTokens: j.promptTokens, completionTokens: 0, timings };
  }
}
