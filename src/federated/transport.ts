/**
 * One Fleet API call over HTTP, as flwr 1.42's SuperLink serves it: `POST <superlink>/v1/fleet/<route>` with a
 * protobuf body (`Content-Type: application/protobuf`), signed headers (signing.ts), and a protobuf reply.
 * Failures that may pass (no connection, 502/503/504, a reset) are retried with capped exponential backoff until
 * `retry.maxTries` or `retry.maxSeconds`; the rest become LorakitErrors that say what the server is:
 * a 404 or a non-protobuf reply means the server is not a flwr 1.42 SuperLink Fleet API (an older Flower served
 * gRPC only, or a REST API under /api/v0); a JSON error body is Flower's `{code, detail}` and is quoted.
 * Uses only `fetch`, so it runs in browsers too. Not here: which calls make a round (fleet.ts).
 */
import {
  type DescMessage,
  type MessageInitShape,
  type MessageShape,
  create,
  fromBinary,
  toBinary,
} from '@bufbuild/protobuf';
import { LorakitError } from '../errors.ts';
import { type NodeIdentity, signedHeaders } from './signing.ts';

/** The Flower release whose Fleet API this client speaks (the .proto files under proto/ come from its wheel). */
export const FLOWER_VERSION = '1.42.0';
const MEDIA_TYPE = 'application/protobuf';

/** When to retry a call that failed for a reason that may pass. */
export interface RetryOptions {
  /** Attempts in total (default 8). */
  maxTries?: number;
  /** Give up once this much time has passed since the first attempt (default 60 s). */
  maxSeconds?: number;
  /** First wait in ms, doubled each retry up to 5 s (default 200). */
  baseDelayMs?: number;
}

/** Where and as whom to call. */
export interface TransportOptions {
  /** SuperLink base URL, e.g. http://127.0.0.1:8000. */
  superlink: string;
  identity: NodeIdentity;
  retry?: RetryOptions;
  /** Aborts waits and calls (the client's shutdown). */
  signal?: AbortSignal;
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    });
  });

const retryable = (status: number) => status === 502 || status === 503 || status === 504;

/** Calls `route` (e.g. "pull-messages") with `req`; returns the decoded reply. */
export async function fleetCall<I extends DescMessage, O extends DescMessage>(
  o: TransportOptions,
  route: string,
  input: I,
  req: MessageInitShape<I>,
  output: O,
): Promise<MessageShape<O>> {
  const url = `${o.superlink.replace(/\/+$/, '')}/v1/fleet/${route}`;
  const body = toBinary(input, create(input, req));
  const { maxTries = 8, maxSeconds = 60, baseDelayMs = 200 } = o.retry ?? {};
  const started = Date.now();
  let lastProblem = '';
  for (let attempt = 1; ; attempt++) {
    if (o.signal?.aborted) throw new LorakitError('LK_NETWORK', `${url}: aborted`);
    let res: Response | null = null;
    try {
      res = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': MEDIA_TYPE, accept: MEDIA_TYPE, ...(await signedHeaders(o.identity)) },
        body: body as Uint8Array<ArrayBuffer>,
        signal: o.signal,
      });
    } catch (e) {
      lastProblem = `no connection (${(e as Error & { cause?: Error }).cause?.message ?? (e as Error).message})`;
    }
    if (res && !retryable(res.status)) return await decodeReply(res, url, output);
    if (res) lastProblem = `HTTP ${res.status} ${await res.text().catch(() => '')}`.trim();
    const elapsed = (Date.now() - started) / 1000;
    if (attempt >= maxTries || elapsed >= maxSeconds) {
      throw new LorakitError(
        'LK_NETWORK',
        `Flower SuperLink at ${o.superlink}: ${route} failed ${attempt} times over ${elapsed.toFixed(1)} s; ` +
          `last: ${lastProblem}. Is flower-superlink running there (its Fleet API port, 8000 by default)?`,
        { route, attempts: attempt },
      );
    }
    await sleep(Math.min(baseDelayMs * 2 ** (attempt - 1), 5000), o.signal);
  }
}

async function decodeReply<O extends DescMessage>(res: Response, url: string, output: O): Promise<MessageShape<O>> {
  const bytes = new Uint8Array(await res.arrayBuffer());
  const type = res.headers.get('content-type') ?? '';
  if (res.status === 404 || res.status === 405) {
    throw new LorakitError(
      'LK_PROTOCOL_MISMATCH',
      `${url}: HTTP ${res.status}: this server has no Flower ${FLOWER_VERSION} Fleet API route; lorakit speaks the ` +
        `protobuf-over-HTTP Fleet API of flwr ${FLOWER_VERSION} (POST /v1/fleet/*). Run a SuperLink of that version ` +
        `(pip install flwr==${FLOWER_VERSION}; flower-superlink), or check the URL and port`,
      { status: res.status },
    );
  }
  if (!res.ok) {
    const text = new TextDecoder().decode(bytes);
    let detail = text.slice(0, 300);
    let flowerCode: unknown;
    try {
      const j = JSON.parse(text) as { code?: unknown; detail?: unknown; extra?: unknown };
      flowerCode = j.code;
      detail = `[code ${j.code}] ${typeof j.detail === 'string' ? j.detail : JSON.stringify(j.detail)}`;
      if (j.extra) detail += ` (${typeof j.extra === 'string' ? j.extra : JSON.stringify(j.extra)})`;
    } catch {}
    throw new LorakitError(
      'LK_SERVER_REJECTED',
      `${url}: the SuperLink refused the call: HTTP ${res.status} ${detail}` +
        (res.status === 401 ? '; the request signature or node key was not accepted' : ''),
      { status: res.status, flowerCode },
    );
  }
  if (!type.startsWith(MEDIA_TYPE)) {
    throw new LorakitError(
      'LK_PROTOCOL_MISMATCH',
      `${url}: the reply is "${type || 'untyped'}", not ${MEDIA_TYPE}: not a Flower ${FLOWER_VERSION} SuperLink ` +
        `Fleet API (an older Flower, or another server, answers on this port)`,
    );
  }
  try {
    return fromBinary(output, bytes);
  } catch (e) {
    throw new LorakitError(
      'LK_PROTOCOL_MISMATCH',
      `${url}: the reply is not a ${output.typeName} of flwr ${FLOWER_VERSION} (${(e as Error).message}); ` +
        'the server speaks another Fleet API version',
    );
  }
}
