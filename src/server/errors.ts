/**
 * How the server answers errors: every error becomes OpenAI's `{"error": {message, type, param, code}}` with `code`
 * the lorakit error code and the HTTP status from `HTTP_STATUS`, a table total over the catalogue (src/errors.ts),
 * so a new code does not compile until it has a status. Fastify's own client errors (malformed JSON, a body over
 * the limit, an unsupported content type) are mapped to catalogue codes too; anything else is a 500 whose message
 * does not leak internals beyond its first line.
 * Not here: the routes that throw (one file per route group), the catalogue itself (src/errors.ts).
 */
import type { FastifyError, FastifyInstance } from 'fastify';
import { type ErrorCode, LorakitError } from '../errors.ts';

/** The HTTP status of each error code (documented in docs/errors.md's last column). */
export const HTTP_STATUS: Record<ErrorCode, number> = {
  LK_INVALID_ARGUMENT: 400,
  LK_SHAPE_MISMATCH: 400,
  LK_DTYPE_MISMATCH: 400,
  LK_UNKNOWN_OP: 500,
  LK_NO_GRADIENT: 500,
  LK_GRAPH_INVALID: 500,
  LK_FEED_MISSING: 500,
  LK_FEED_UNKNOWN: 500,
  LK_RUNTIME: 500,
  LK_SESSION_DISPOSED: 503,
  LK_EP_UNAVAILABLE: 500,
  LK_FILE_NOT_FOUND: 404,
  LK_FILE_INVALID: 400,
  LK_CONFIG_INVALID: 400,
  LK_UNSUPPORTED: 400,
  LK_NON_FINITE: 500,
  LK_NOT_FOUND: 404,
  LK_OVERLOADED: 429,
  LK_UNAUTHORIZED: 401,
  LK_PAYLOAD_TOO_LARGE: 413,
  LK_UNAVAILABLE: 503,
  LK_PERMISSION_DENIED: 500,
  LK_DISK_FULL: 507,
  LK_IO: 500,
  LK_LOCKED: 409,
  LK_NETWORK: 502,
  LK_PROTOCOL_MISMATCH: 502,
  LK_SERVER_REJECTED: 502,
  LK_NODE_NOT_REGISTERED: 403,
};

/** OpenAI's error type for a status. */
function errorType(status: number): string {
  if (status === 401) return 'authentication_error';
  if (status === 404) return 'not_found_error';
  if (status === 429) return 'rate_limit_error';
  if (status >= 500) return 'server_error';
  return 'invalid_request_error';
}

/** The body and status an error is answered with. */
export function errorBody(e: unknown): { status: number; body: { error: Record<string, unknown> } } {
  const le = asLorakitError(e);
  const status = HTTP_STATUS[le.code];
  const param = (le.details.param ?? le.details.option ?? null) as string | null;
  return { status, body: { error: { message: le.message, type: errorType(status), param, code: le.code } } };
}

/** Any thrown value as a LorakitError: Fastify's client errors by their meaning, others as internal server errors. */
function asLorakitError(e: unknown): LorakitError {
  if (e instanceof LorakitError) return e;
  const fe = e as Partial<FastifyError> & { message?: string };
  if (fe?.code === 'FST_ERR_CTP_BODY_TOO_LARGE' || fe?.statusCode === 413)
    return new LorakitError('LK_PAYLOAD_TOO_LARGE', fe.message ?? 'request body too large');
  if (typeof fe?.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    // malformed JSON, an empty JSON body, an unsupported content type, ...
    return new LorakitError('LK_INVALID_ARGUMENT', `invalid request: ${fe.message ?? 'malformed body'}`, {
      param: 'body',
    });
  }
  const first = String(fe?.message ?? e).split('\n')[0];
  return new LorakitError('LK_RUNTIME', `internal error: ${first}`);
}

/** Installs the error and not-found handlers (mounted first, so every route group shares them). */
export function mountErrors(app: FastifyInstance): void {
  app.setErrorHandler((e, request, reply) => {
    const { status, body } = errorBody(e);
    if (status >= 500) request.log.error(e);
    reply.code(status).send(body);
  });
  app.setNotFoundHandler((request, reply) => {
    const { status, body } = errorBody(
      new LorakitError('LK_NOT_FOUND', `no route ${request.method} ${request.url.split('?')[0].slice(0, 200)}`),
    );
    reply.code(status).send(body);
  });
}
