/**
 * GET /metrics: Prometheus text with vLLM's metric names (serve/metrics.ts), so routers that balance replicas by
 * queue length, KV-cache use and loaded adapters (the Gateway API Inference Extension, KServe) read lorakit as they
 * read vLLM. Needs no API key, as vLLM's.
 * Not here: the numbers (serve/metrics.ts).
 */
import type { FastifyInstance } from 'fastify';
import { prometheusText } from '../serve/index.ts';
import type { ServerState } from './generation.ts';

/** Mounts /metrics. */
export function mountMetrics(app: FastifyInstance, state: ServerState): void {
  app.get('/metrics', async (_request, reply) => {
    reply.type('text/plain; version=0.0.4; charset=utf-8');
    return prometheusText(state.engine.metrics, state.engine.snapshot(state.modelName));
  });
}
