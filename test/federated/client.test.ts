// The node loop against a scripted SuperLink (the Fleet routes of flwr 1.42 over node:http): it pulls a message and
// its objects, confirms, pushes the reply (an empty content field, then the objects asked for), survives a SuperLink
// restart that forgot the node (401 → register and activate again with the same key), and stops when the run is
// finished (get-run refused with FLEET_RUN_STATUS_NOT_ALLOWED).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { type DescMessage, type MessageShape, create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { runFleetClient } from '../../src/federated/client.ts';
import { deflateMessage, inflateMessage } from '../../src/federated/message.ts';
import { metricRecord, recordDict } from '../../src/federated/records.ts';
import * as fleet from '../../src/federated/proto/flwr/proto/fleet_pb.ts';
import * as msgpb from '../../src/federated/proto/flwr/proto/message_pb.ts';
import * as hb from '../../src/federated/proto/flwr/proto/heartbeat_pb.ts';

test('a forgotten node reconnects with its key, answers both rounds, and stops when the run finishes', async () => {
  const log: string[] = [];
  let nextNode = 100n;
  const registered = new Set<string>();
  let active: bigint | null = null;
  const objects = new Map<string, Uint8Array>();
  const queue: string[] = []; // message ids waiting for the node
  const pushed: { metadata: msgpb.Metadata; content: unknown; objects: Map<string, Uint8Array> }[] = [];
  let pendingPush: (typeof pushed)[number] | null = null;
  const makeInstruction = async (round: number) => {
    const d = await deflateMessage({
      metadata: create(msgpb.MetadataSchema, {
        runId: 7n,
        srcNodeId: 1n,
        dstNodeId: 0n,
        groupId: String(round),
        ttl: 3600,
        messageType: 'train',
        createdAt: Date.now() / 1000,
      }),
      content: recordDict({ config: { kind: 'config', values: new Map([['server-round', BigInt(round)]]) } }),
      error: null,
    });
    for (const [id, c] of d.objects) objects.set(id, c);
    return d;
  };
  const instructions = [await makeInstruction(1), await makeInstruction(2)];
  queue.push(instructions[0].id);

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      const route = (req.url ?? '').replace('/v1/fleet/', '');
      log.push(route);
      const body = new Uint8Array(Buffer.concat(chunks));
      const read = <T extends DescMessage>(s: T): MessageShape<T> => fromBinary(s, body);
      const reply = <T extends DescMessage>(s: T, v: Parameters<typeof create<T>>[1]) =>
        res.writeHead(200, { 'content-type': 'application/protobuf' }).end(Buffer.from(toBinary(s, create(s, v))));
      const refuse = (status: number, code: number) =>
        res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ code, detail: 'no' }));
      const nodeOk = (id: bigint | undefined) => id !== undefined && id === active;
      switch (route) {
        case 'register-node': {
          const key = Buffer.from(read(fleet.RegisterNodeFleetRequestSchema).publicKey).toString();
          if (registered.has(key)) return refuse(412, 23);
          registered.add(key);
          return reply(fleet.RegisterNodeFleetResponseSchema, { nodeId: 0n });
        }
        case 'activate-node':
          active = nextNode++;
          return reply(fleet.ActivateNodeResponseSchema, { nodeId: active });
        case 'send-node-heartbeat':
          return reply(hb.SendNodeHeartbeatResponseSchema, {
            success: nodeOk(read(hb.SendNodeHeartbeatRequestSchema).node?.nodeId),
          });
        case 'pull-messages': {
          if (!nodeOk(read(fleet.PullMessagesRequestSchema).node?.nodeId)) return refuse(401, 5);
          const id = queue.shift();
          const d = instructions.find((x) => x.id === id);
          if (!d) return reply(fleet.PullMessagesResponseSchema, {});
          return reply(fleet.PullMessagesResponseSchema, {
            messagesList: [{ metadata: d.metadata }],
            messageObjectTrees: [d.tree],
          });
        }
        case 'pull-object': {
          const r = read(msgpb.PullObjectRequestSchema);
          const c = objects.get(r.objectId);
          return reply(msgpb.PullObjectResponseSchema, { objectFound: !!c, objectAvailable: !!c, objectContent: c });
        }
        case 'confirm-message-received':
          return reply(msgpb.ConfirmMessageReceivedResponseSchema, {});
        case 'push-messages': {
          const r = read(fleet.PushMessagesRequestSchema);
          const m = r.messagesList[0];
          pendingPush = { metadata: m.metadata!, content: m.content, objects: new Map() };
          pushed.push(pendingPush);
          const ids: string[] = [];
          const walk = (t: msgpb.ObjectTree) => {
            t.children.forEach(walk);
            ids.push(t.objectId);
          };
          walk(r.messageObjectTrees[0]);
          return reply(fleet.PushMessagesResponseSchema, { objectsToPush: ids, sessionId: 's' });
        }
        case 'push-object': {
          const r = read(msgpb.PushObjectRequestSchema);
          pendingPush!.objects.set(r.objectId, r.objectContent);
          if (pushed.length === 1 && pendingPush!.objects.has(pendingPush!.metadata.messageId)) {
            active = null; // the SuperLink restarts and forgets the node; the next round waits for it
            queue.push(instructions[1].id);
          }
          return reply(msgpb.PushObjectResponseSchema, { stored: true });
        }
        case 'get-run':
          return pushed.length >= 2 ? refuse(403, 2007) : reply(fleet.PullMessagesResponseSchema, {});
        case 'deactivate-node':
          return reply(fleet.DeactivateNodeResponseSchema, {});
        case 'unregister-node':
          return reply(fleet.UnregisterNodeFleetResponseSchema, {});
        default:
          return refuse(404, 0);
      }
    });
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  try {
    const rounds: bigint[] = [];
    const summary = await runFleetClient(
      { superlink: url, pollMs: 20, retry: { maxTries: 2, baseDelayMs: 5 } },
      async (m) => {
        const cfg = m.content!.get('config')!;
        const round = cfg.kind === 'config' ? (cfg.values.get('server-round') as bigint) : -1n;
        rounds.push(round);
        return recordDict({ metrics: metricRecord({ 'num-examples': 5n, round: Number(round) }) });
      },
    );
    assert.deepEqual(rounds, [1n, 2n]);
    assert.equal(summary.reconnects, 1);
    assert.equal(summary.nodeId, 101n);
    assert.deepEqual(summary.answered, { train: 2 });
    for (const [i, p] of pushed.entries()) {
      assert.deepEqual(p.content && { ...(p.content as object), $typeName: undefined }, {
        $typeName: undefined,
        items: [],
      });
      assert.equal(p.metadata.replyToMessageId, instructions[i].id);
      assert.equal(p.metadata.dstNodeId, 1n);
      const reply = inflateMessage(p.metadata, { objectId: p.metadata.messageId, children: [] } as never, p.objects);
      assert.equal(reply.content === null, false);
    }
    assert.equal(log.filter((r) => r === 'register-node').length, 2); // the second got 412 and went on to activate
    assert.equal(log.at(-1), 'unregister-node');
  } finally {
    await new Promise((ok) => server.close(ok));
  }
});
