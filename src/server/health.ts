/**
 * GET /health (vLLM's, for load balancers and orchestrators): 200 while the engine takes requests, 503 once it is
 * shutting down. Needs no API key.
 * Not here: the metrics (metrics.ts).
 */
import type { FastifyInstance } from 'fastify';

/** Mounts /health. */
export function mountHealth(app: FastifyInstance, closing: () => boolean): void {
  app.get('/health', async (_request, reply) => {
    if (closing()) return reply.code(503).send({ status: 'shutting down' });
    return { status: 'ok' };
  });
}
