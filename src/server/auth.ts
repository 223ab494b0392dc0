/**
 * Optional bearer API keys (vLLM's and llama.cpp's `--api-key`): when the server has keys, every `/v1/` request must
 * carry `Authorization: Bearer <key>` with one of them; health and metrics stay open for load balancers and
 * scrapers. Keys are compared as SHA-256 digests with a constant-time comparison, so neither the timing nor a length
 * check tells how much of a guess was right.
 * Not here: how the answer looks (errors.ts).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { LorakitError } from '../errors.ts';

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();

/** Installs the key check on /v1/ routes when `keys` is not empty. */
export function mountAuth(app: FastifyInstance, keys: readonly string[]): void {
  if (keys.length === 0) return;
  const wanted = keys.map(digest);
  app.addHook('onRequest', async (request) => {
    if (!request.url.startsWith('/v1/')) return;
    const header = request.headers.authorization;
    const m = typeof header === 'string' ? /^Bearer\s+(.+)$/i.exec(header.trim()) : null;
    const got = m ? digest(m[1]) : null;
    // every key is compared, so the time taken does not depend on which one matched
    const ok = got !== null && wanted.map((w) => timingSafeEqual(w, got)).some(Boolean);
    if (!ok) {
      throw new LorakitError(
        'LK_UNAUTHORIZED',
        header === undefined
          ? 'this server needs an API key: send Authorization: Bearer <key>'
          : 'the API key is not valid for this server',
      );
    }
  });
}
