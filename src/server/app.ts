/**
 * The HTTP server as one Fastify app: the route groups, each its own file, mounted below in the order a request
 * meets them. The app holds no generation logic: routes turn bodies into engine requests (serve/) and answers
 * into OpenAI's shapes.
 * Not here: the engine (serve/), starting and stopping a listening server (index.ts).
 */
import Fastify, { type FastifyInstance } from 'fastify';
import type { HfTokenizer } from '../io/index.ts';
import type { Engine } from '../serve/index.ts';
import { mountAdapters } from './adapters.ts';
import { mountAuth } from './auth.ts';
import { mountChat } from './chat.ts';
import { mountCompletions } from './completions.ts';
import { mountErrors } from './errors.ts';
import type { ServerState } from './generation.ts';
import { mountHealth } from './health.ts';
import { mountMetrics } from './metrics.ts';
import { mountModels } from './models.ts';

/** Options of `createApp`. */
export interface AppOptions {
  engine: Engine;
  tokenizer: HfTokenizer;
  /** The base model's id in `model` fields (default "base"). */
  modelName?: string;
  /** The base model's chat template, if any (adapters may ship their own). */
  chatTemplate?: string;
  /** Bearer keys; empty or absent: no key needed. */
  apiKeys?: readonly string[];
  /** Largest request body in bytes (default 1 MiB). */
  maxBodyBytes?: number;
  /** Serve /v1/load_lora_adapter and /v1/unload_lora_adapter (default true). */
  runtimeAdapters?: boolean;
  /** Fastify's request log (default off). */
  logger?: boolean;
}

/** The app and a flag that turns /health to 503 while the server drains. */
export interface App {
  app: FastifyInstance;
  state: ServerState;
  /** Marks the server as shutting down (health 503). */
  drain(): void;
}

/** Builds the Fastify app over an engine. */
export function createApp(o: AppOptions): App {
  const app = Fastify({ bodyLimit: o.maxBodyBytes ?? 2 ** 20, logger: o.logger ?? false, return503OnClosing: true });
  const state: ServerState = {
    engine: o.engine,
    modelName: o.modelName ?? 'base',
    tokenizer: o.tokenizer,
    chatTemplate: o.chatTemplate,
    created: Math.floor(Date.now() / 1000),
    runtimeAdapters: o.runtimeAdapters ?? true,
  };
  let closing = false;
  // A request meets these in this order:
  mountErrors(app); //     errors and unknown routes in OpenAI's error shape, with catalogue statuses
  mountAuth(app, o.apiKeys ?? []); // bearer keys on /v1/ routes
  mountHealth(app, () => closing); // GET /health
  mountMetrics(app, state); // GET /metrics
  mountModels(app, state); // GET /v1/models, /v1/models/{id}
  mountAdapters(app, state); // POST /v1/load_lora_adapter, /v1/unload_lora_adapter
  mountCompletions(app, state); // POST /v1/completions
  mountChat(app, state); // POST /v1/chat/completions
  return { app, state, drain: () => (closing = true) };
}
