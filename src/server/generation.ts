/**
 * What the completion and chat routes share: the server's state, which model a request names (the base, or an
 * adapter by name as in vLLM), OpenAI's sampling fields turned into an engine request, cancellation when the client
 * goes away (its slot is freed at the next step), and server-sent events.
 * Not here: the bodies' schemas (schemas.ts), the routes' response shapes (completions.ts, chat.ts).
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { HfTokenizer } from '../io/index.ts';
import type { Choice, Completion, Engine, EngineRequest, FinishReason, SequenceEvent } from '../serve/index.ts';
import { errorBody } from './errors.ts';
import type { ChatBody, CompletionBody } from './schemas.ts';

/** What every route reads. */
export interface ServerState {
  engine: Engine;
  /** The id of the base model in `model` fields and /v1/models. */
  modelName: string;
  tokenizer: HfTokenizer;
  /** The base model's chat template (or the one the server was given), if any. */
  chatTemplate: string | undefined;
  /** Seconds since the epoch when the server started. */
  created: number;
  /** Whether /v1/load_lora_adapter and /v1/unload_lora_adapter are on. */
  runtimeAdapters: boolean;
}

/** The adapter a `model` field names: null for the base model (its id, or "" as LoRAX has it). */
export function adapterOf(state: ServerState, model: string): string | null {
  return model === state.modelName || model === '' ? null : model;
}

/** OpenAI's finish reasons: eos and stop strings are both "stop". */
export const finishReason = (r: FinishReason | null) => (r === null ? null : r === 'length' ? 'length' : 'stop');

/** The engine request of a body's sampling fields. */
export function engineRequest(
  body: CompletionBody | ChatBody,
  promptIds: number[],
  adapter: string | null,
  maxTokens: number,
  extra: Pick<EngineRequest, 'logprobs' | 'signal' | 'onEvent'>,
): EngineRequest {
  const stop = body.stop == null ? undefined : typeof body.stop === 'string' ? [body.stop] : body.stop;
  return {
    adapter,
    promptIds,
    n: body.n ?? 1,
    maxTokens,
    sampling: {
      temperature: body.temperature ?? 1,
      topP: body.top_p ?? undefined,
      topK: body.top_k == null || body.top_k === -1 ? undefined : body.top_k,
      repetitionPenalty: body.repetition_penalty ?? undefined,
      presencePenalty: body.presence_penalty ?? undefined,
      frequencyPenalty: body.frequency_penalty ?? undefined,
    },
    stop,
    seed: body.seed ?? undefined,
    ignoreEos: body.ignore_eos ?? false,
    ...extra,
  };
}

/** An AbortSignal that fires when the client closes the connection before the answer is complete. */
export function clientGone(request: FastifyRequest, reply: FastifyReply): AbortSignal {
  const ac = new AbortController();
  const onClose = () => {
    if (!reply.raw.writableEnded) ac.abort();
  };
  // the response's 'close' (not the request's, which fires once its body is read): the answer is sent or the
  // connection is gone
  reply.raw.once('close', onClose);
  void request;
  return ac.signal;
}

/** Server-sent events on a hijacked reply: `send` writes `data: <json>`, `done` writes `data: [DONE]` and ends. */
export class EventStream {
  constructor(private readonly reply: FastifyReply) {
    reply.hijack();
    reply.raw.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    reply.raw.flushHeaders(); // a queued request's client sees its stream open now, not at the first token
  }

  /** Writes one event (ignored once the client is gone). */
  send(data: unknown): void {
    if (!this.reply.raw.destroyed) this.reply.raw.write(`data: ${JSON.stringify(data)}\n\n`);
  }

  /** Ends the stream as OpenAI does. */
  done(): void {
    if (this.reply.raw.destroyed) return;
    this.reply.raw.end('data: [DONE]\n\n');
  }
}

/** How one route shapes its answer (completions and chat differ only here). */
export interface AnswerShape {
  /** `cmpl-…` / `chatcmpl-…`. */
  id: string;
  /** `text_completion` / `chat.completion`, and the streamed chunks' object. */
  object: string;
  chunkObject: string;
  /** The choice entry of a streamed event (choice index over all prompts). */
  chunk(index: number, e: SequenceEvent, first: boolean): unknown;
  /** The choice entry of a finished completion. */
  choice(index: number, c: Choice): unknown;
}

/**
 * Runs the engine requests of one HTTP request (one per prompt, `n` completions each) and answers: a JSON body, or
 * server-sent events when `body.stream`. Every request is accepted (validated, adapter loaded, under the limits)
 * before the first byte is sent, so refusals keep their HTTP status; a client that goes away cancels them all.
 */
export async function answer(
  state: ServerState,
  request: FastifyRequest,
  reply: FastifyReply,
  body: CompletionBody | ChatBody,
  reqs: (extra: Pick<EngineRequest, 'signal' | 'onEvent'>, p: number) => EngineRequest,
  prompts: number,
  shape: AnswerShape,
): Promise<unknown> {
  const created = Math.floor(Date.now() / 1000);
  const n = body.n ?? 1;
  const gone = clientGone(request, reply);
  const own = new AbortController(); // cancels the accepted ones when a later prompt is refused
  const signal = AbortSignal.any([gone, own.signal]);
  let es: EventStream | null = null;
  const held: [number, SequenceEvent][] = []; // events before the stream opens (all prompts accepted)
  const first = new Set<number>();
  const emit = (p: number, e: SequenceEvent) => {
    const index = p * n + e.index;
    const isFirst = !first.has(index);
    first.add(index);
    const choices = [shape.chunk(index, e, isFirst)];
    es!.send({ id: shape.id, object: shape.chunkObject, created, model: body.model, choices });
  };
  const onEvent = (p: number) => (e: SequenceEvent) => {
    if (!body.stream) return;
    if (es) emit(p, e);
    else held.push([p, e]);
  };
  const subs = Array.from({ length: prompts }, (_, p) => state.engine.submit(reqs({ signal, onEvent: onEvent(p) }, p)));
  try {
    await Promise.all(subs.map((s) => s.accepted));
  } catch (e) {
    own.abort();
    await Promise.allSettled(subs.map((s) => s.completion));
    throw e;
  }
  if (!body.stream) {
    const done = await Promise.all(subs.map((s) => s.completion));
    return {
      id: shape.id,
      object: shape.object,
      created,
      model: body.model,
      choices: done.flatMap((c, p) => c.choices.map((ch) => shape.choice(p * n + ch.index, ch))),
      usage: usage(done),
    };
  }
  es = new EventStream(reply);
  for (const [p, e] of held) emit(p, e);
  try {
    const done = await Promise.all(subs.map((s) => s.completion));
    if (body.stream_options?.include_usage)
      es.send({ id: shape.id, object: shape.chunkObject, created, model: body.model, choices: [], usage: usage(done) });
  } catch (e) {
    es.send(errorBody(e).body);
  }
  es.done();
  return reply;
}

/** OpenAI's usage of finished requests. */
function usage(done: readonly Completion[]) {
  const prompt = done.reduce((a, c) => a + c.promptTokens, 0);
  const completion = done.reduce((a, c) => a + c.completionTokens, 0);
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}
