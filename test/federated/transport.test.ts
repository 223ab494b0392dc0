// The Fleet transport against a local HTTP server playing other servers: an older Flower (404 on /v1/fleet), a web
// page, a SuperLink that refuses (Flower's JSON error), one that is briefly unavailable (503, retried), none at all.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { type IncomingMessage, type ServerResponse, createServer } from 'node:http';
import { create, toBinary } from '@bufbuild/protobuf';
import { LorakitError } from '../../src/errors.ts';
import { fleetCall } from '../../src/federated/transport.ts';
import { generateIdentity } from '../../src/federated/signing.ts';
import {
  ActivateNodeResponseSchema,
  PullMessagesRequestSchema,
  PullMessagesResponseSchema,
} from '../../src/federated/proto/flwr/proto/fleet_pb.ts';

type Handler = (req: IncomingMessage, res: ServerResponse, body: Buffer) => void;

async function withServer(handler: Handler, run: (url: string) => Promise<void>): Promise<void> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => handler(req, res, Buffer.concat(chunks)));
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  try {
    await run(url);
  } finally {
    await new Promise((ok) => server.close(ok));
  }
}

const identity = await generateIdentity();
const call = (superlink: string, retry = { maxTries: 3, baseDelayMs: 10 }) =>
  fleetCall({ superlink, identity, retry }, 'pull-messages', PullMessagesRequestSchema, {}, PullMessagesResponseSchema);
const code = (c: string) => (e: unknown) => e instanceof LorakitError && e.code === c;

test('a 404 on /v1/fleet (another Flower version) is a protocol mismatch naming the version lorakit speaks', async () => {
  await withServer(
    (_q, res) => res.writeHead(404).end('{"detail":"Not Found"}'),
    async (url) => {
      await assert.rejects(
        call(url),
        (e) => code('LK_PROTOCOL_MISMATCH')(e) && /flwr 1\.42\.0/.test((e as Error).message),
      );
    },
  );
});

test('a 200 that is not protobuf (a web server on that port) is a protocol mismatch', async () => {
  await withServer(
    (_q, res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<html></html>'),
    async (url) => {
      await assert.rejects(call(url), code('LK_PROTOCOL_MISMATCH'));
    },
  );
});

test("Flower's JSON error is quoted in LK_SERVER_REJECTED with its code", async () => {
  await withServer(
    (_q, res) =>
      res
        .writeHead(401, { 'content-type': 'application/json' })
        .end('{"code":5,"detail":"Invalid SuperNode authentication"}'),
    async (url) => {
      await assert.rejects(
        call(url),
        (e) =>
          code('LK_SERVER_REJECTED')(e) &&
          /\[code 5\] Invalid SuperNode authentication/.test((e as Error).message) &&
          (e as LorakitError).details.status === 401,
      );
    },
  );
});

test('503 is retried, and the signed headers and protobuf body arrive', async () => {
  let calls = 0;
  const seen: Record<string, string | undefined>[] = [];
  await withServer(
    (req, res) => {
      calls++;
      seen.push({
        type: req.headers['content-type'],
        key: req.headers['flwr-public-key'] as string,
        ts: req.headers['flwr-timestamp'] as string,
        sig: req.headers['flwr-signature'] as string,
      });
      if (calls < 3) return res.writeHead(503).end();
      const body = toBinary(ActivateNodeResponseSchema, create(ActivateNodeResponseSchema, { nodeId: 77n }));
      res.writeHead(200, { 'content-type': 'application/protobuf' }).end(Buffer.from(body));
    },
    async (url) => {
      const r = await fleetCall(
        { superlink: url, identity, retry: { maxTries: 5, baseDelayMs: 10 } },
        'activate-node',
        PullMessagesRequestSchema,
        {},
        ActivateNodeResponseSchema,
      );
      assert.equal(r.nodeId, 77n);
    },
  );
  assert.equal(calls, 3);
  assert.equal(seen[2].type, 'application/protobuf');
  assert.match(Buffer.from(seen[2].key!, 'base64').toString(), /^-----BEGIN PUBLIC KEY-----/);
  assert.match(seen[2].ts!, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$/);
  assert.ok(seen[2].sig!.length > 0);
});

test('no server at all is LK_NETWORK after the retries, naming the route and attempts', async () => {
  let port = 0;
  await withServer(
    () => {},
    async (url) => {
      port = Number(new URL(url).port);
    },
  );
  await assert.rejects(
    call(`http://127.0.0.1:${port}`, { maxTries: 2, baseDelayMs: 10 }),
    (e) => code('LK_NETWORK')(e) && /pull-messages failed 2 times/.test((e as Error).message),
  );
});
