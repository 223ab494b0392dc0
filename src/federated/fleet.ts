/**
 * A Flower node session over flwr 1.42's Fleet API: what a SuperNode does, minus running a Python ClientApp.
 * connect: register-node (with this node's public key), activate-node → node id, then heartbeats in the
 * background (send-node-heartbeat every third of the interval; the SuperLink drops a node silent for 2 intervals).
 * pull: pull-messages; for a message, pull-object for every id of its tree (retrying objects not yet available),
 * each checked against its SHA-256 id, then confirm-message-received.
 * reply: push-messages with the reply's metadata and tree and an empty RecordDict as content (the SuperLink
 * rebuilds the content from the objects; a message with neither content nor error it refuses), then push-object
 * for each id it asks for.
 * close: deactivate-node, unregister-node. A client must keep heart-beating until the SuperLink has handed its reply
 * to the ServerApp (deactivating right after the push drops the reply): runFleetClient (client.ts) closes only when
 * the run has finished. Not here: what a message means (client.ts), training (lora-client.ts).
 */
import { create } from '@bufbuild/protobuf';
import { LorakitError } from '../errors.ts';
import { type DeflatedMessage, type FlowerMessage, deflateMessage, inflateMessage, treeIds } from './message.ts';
import { verifyObject } from './objects.ts';
import {
  ActivateNodeRequestSchema,
  ActivateNodeResponseSchema,
  DeactivateNodeRequestSchema,
  DeactivateNodeResponseSchema,
  PullMessagesRequestSchema,
  PullMessagesResponseSchema,
  PushMessagesRequestSchema,
  PushMessagesResponseSchema,
  RegisterNodeFleetRequestSchema,
  RegisterNodeFleetResponseSchema,
  UnregisterNodeFleetRequestSchema,
  UnregisterNodeFleetResponseSchema,
} from './proto/flwr/proto/fleet_pb.ts';
import { SendNodeHeartbeatRequestSchema, SendNodeHeartbeatResponseSchema } from './proto/flwr/proto/heartbeat_pb.ts';
import {
  ConfirmMessageReceivedRequestSchema,
  ConfirmMessageReceivedResponseSchema,
  MessageSchema,
  PullObjectRequestSchema,
  PullObjectResponseSchema,
  PushObjectRequestSchema,
  PushObjectResponseSchema,
} from './proto/flwr/proto/message_pb.ts';
import { GetRunRequestSchema, GetRunResponseSchema } from './proto/flwr/proto/run_pb.ts';
import { MAX_ARRAY_CHUNK } from './records.ts';
import { type TransportOptions, fleetCall } from './transport.ts';

/** Options of a node session. */
export interface FleetSessionOptions extends TransportOptions {
  /** Heartbeat interval announced to the SuperLink, in seconds (Flower's default 30). */
  heartbeatInterval?: number;
  /**
   * How long activation keeps trying while the SuperLink answers 412, in seconds (default 2 × heartbeatInterval + 5):
   * a node restarted with its key can activate only once the SuperLink has marked the old process offline, which
   * flwr 1.42 does when it misses heartbeats for 2 × its announced interval.
   */
  activateWaitSeconds?: number;
  /** Largest ArrayChunk this node pushes (default Flower's 5 MB). */
  maxChunk?: number;
  /** Progress lines. */
  log?: (line: string) => void;
}

/** Bytes a pushed reply carried. */
export interface PushResult {
  messageId: string;
  objectsPushed: number;
  bytesPushed: number;
}

/**
 * activate-node, retried while the SuperLink answers 412 (flwr 1.42's code 2004: the node is neither registered-and-
 * offline nor new), since a restarted node's old process stays online until its heartbeats lapse. Past the wait the
 * key is taken as not registered (or still in use by another process).
 */
async function activate(o: FleetSessionOptions, publicKey: Uint8Array, interval: number) {
  const wait = o.activateWaitSeconds ?? 2 * interval + 5;
  const deadline = Date.now() + wait * 1000;
  for (let tries = 1; ; tries++) {
    try {
      return await fleetCall(
        o,
        'activate-node',
        ActivateNodeRequestSchema,
        { publicKey, heartbeatInterval: interval },
        ActivateNodeResponseSchema,
      );
    } catch (e) {
      if (!(e instanceof LorakitError && e.details.status === 412)) throw e;
      if (Date.now() >= deadline) {
        throw new LorakitError(
          'LK_NODE_NOT_REGISTERED',
          `${o.superlink}: the SuperLink refused to activate this node for ${wait} s (${tries} tries): with ` +
            '--enable-supernode-auth its key is not registered there, or another process still uses this key. ' +
            'Register the public key (`flwr supernode register node.pem.pub <superlink>`, the .pub file written ' +
            `beside the --key file) or pass the --key file that was registered. (${e.message})`,
          { status: 412 },
        );
      }
      if (tries === 1) o.log?.(`activation refused (412); retrying for up to ${wait} s (a restarted node waits here)`);
      await new Promise((ok) => setTimeout(ok, Math.min(2000, Math.max(0, deadline - Date.now()))));
    }
  }
}

/** One registered, active node. */
export class FleetSession {
  private heartbeat: ReturnType<typeof setTimeout> | null = null;
  private heartbeatFailure: LorakitError | null = null;

  private constructor(
    private readonly o: FleetSessionOptions,
    /** The node id the SuperLink gave this node. */
    readonly nodeId: bigint,
  ) {}

  /** Registers and activates this node, then starts its heartbeats. */
  static async connect(o: FleetSessionOptions): Promise<FleetSession> {
    const publicKey = o.identity.publicKeyPem;
    const interval = o.heartbeatInterval ?? 30;
    try {
      await fleetCall(
        o,
        'register-node',
        RegisterNodeFleetRequestSchema,
        { publicKey },
        RegisterNodeFleetResponseSchema,
      );
    } catch (e) {
      // 412: the key is registered already (a reconnect, a restarted client), or the SuperLink runs with
      // --enable-supernode-auth and registers keys itself (`flwr supernode register`): either way, activate
      if (!(e instanceof LorakitError && e.details.status === 412)) throw e;
    }
    const res = await activate(o, publicKey, interval);
    const s = new FleetSession(o, res.nodeId);
    s.scheduleHeartbeat(interval);
    o.log?.(`node ${res.nodeId} active on ${o.superlink}`);
    return s;
  }

  private get node() {
    return { nodeId: this.nodeId };
  }

  private scheduleHeartbeat(interval: number): void {
    this.heartbeat = setTimeout(
      async () => {
        try {
          const r = await fleetCall(
            { ...this.o, retry: { maxTries: 3, maxSeconds: interval / 3 } },
            'send-node-heartbeat',
            SendNodeHeartbeatRequestSchema,
            { node: this.node, heartbeatInterval: interval },
            SendNodeHeartbeatResponseSchema,
          );
          if (!r.success) {
            this.heartbeatFailure = new LorakitError(
              'LK_SERVER_REJECTED',
              `${this.o.superlink}: the SuperLink no longer knows node ${this.nodeId} (restarted, or the node timed out)`,
              { lostNode: true },
            );
          }
        } catch (e) {
          if (e instanceof LorakitError) this.heartbeatFailure = e;
          else throw e;
        }
        if (this.heartbeat !== null) this.scheduleHeartbeat(interval);
      },
      (interval * 1000) / 3,
    );
    this.heartbeat.unref?.();
  }

  /** Throws what the background heartbeat ran into, if anything (the caller reconnects). */
  checkAlive(): void {
    if (this.heartbeatFailure) throw this.heartbeatFailure;
  }

  /** The next message for this node with all its objects, or null when none is waiting. */
  async pull(): Promise<FlowerMessage | null> {
    this.checkAlive();
    const res = await fleetCall(
      this.o,
      'pull-messages',
      PullMessagesRequestSchema,
      { node: this.node },
      PullMessagesResponseSchema,
    );
    const proto = res.messagesList[0];
    const tree = res.messageObjectTrees[0];
    if (!proto?.metadata || !tree) return null;
    const runId = proto.metadata.runId;
    const objects = new Map<string, Uint8Array>();
    for (const id of new Set(treeIds(tree))) objects.set(id, await this.pullObject(runId, id));
    await fleetCall(
      this.o,
      'confirm-message-received',
      ConfirmMessageReceivedRequestSchema,
      { node: this.node, runId, messageObjectId: proto.metadata.messageId },
      ConfirmMessageReceivedResponseSchema,
    );
    return inflateMessage(proto.metadata, tree, objects);
  }

  private async pullObject(runId: bigint, objectId: string): Promise<Uint8Array> {
    for (let attempt = 0; attempt < 600; attempt++) {
      const r = await fleetCall(
        this.o,
        'pull-object',
        PullObjectRequestSchema,
        { node: this.node, runId, objectId },
        PullObjectResponseSchema,
      );
      if (!r.objectFound) {
        throw new LorakitError('LK_SERVER_REJECTED', `${this.o.superlink}: object ${objectId} of run ${runId} is gone`);
      }
      if (r.objectAvailable) {
        await verifyObject(objectId, r.objectContent);
        return r.objectContent;
      }
      await new Promise((ok) => setTimeout(ok, 100)); // preregistered, its upload not finished yet
    }
    throw new LorakitError('LK_NETWORK', `${this.o.superlink}: object ${objectId} never became available`);
  }

  /** Pushes `reply` (from deflateMessage): the message without content, then each object the SuperLink lacks. */
  async push(reply: DeflatedMessage, clientappRuntime = 0): Promise<PushResult> {
    this.checkAlive();
    // content is an empty RecordDict (the objects carry it; flwr's remove_content_from_message), or the error
    const message = create(MessageSchema, {
      metadata: reply.metadata,
      ...(reply.error ? { error: reply.error } : { content: {} }),
    });
    const res = await fleetCall(
      this.o,
      'push-messages',
      PushMessagesRequestSchema,
      {
        node: this.node,
        messagesList: [message],
        messageObjectTrees: [reply.tree],
        clientappRuntimeList: [clientappRuntime],
      },
      PushMessagesResponseSchema,
    );
    const wanted = new Set(res.objectsToPush);
    let bytes = 0;
    let count = 0;
    for (const [objectId, content] of reply.objects) {
      if (!wanted.has(objectId)) continue;
      const r = await fleetCall(
        this.o,
        'push-object',
        PushObjectRequestSchema,
        { node: this.node, runId: reply.metadata.runId, objectId, objectContent: content, sessionId: res.sessionId },
        PushObjectResponseSchema,
      );
      if (!r.stored) throw new LorakitError('LK_SERVER_REJECTED', `${this.o.superlink}: object ${objectId} not stored`);
      bytes += content.length;
      count++;
    }
    return { messageId: reply.id, objectsPushed: count, bytesPushed: bytes };
  }

  /** Deflates and pushes a reply message. */
  async reply(m: FlowerMessage, clientappRuntime = 0): Promise<PushResult> {
    return this.push(await deflateMessage(m, this.o.maxChunk ?? MAX_ARRAY_CHUNK), clientappRuntime);
  }

  /** The status of run `runId` ("pending", "starting", "running", "finished"). */
  async runStatus(runId: bigint): Promise<string> {
    try {
      const r = await fleetCall(
        this.o,
        'get-run',
        GetRunRequestSchema,
        { node: this.node, runId },
        GetRunResponseSchema,
      );
      return r.run?.status?.status ?? '';
    } catch (e) {
      // flwr 1.42 refuses get-run on a finished run: 403 with FLEET_RUN_STATUS_NOT_ALLOWED (2007)
      if (e instanceof LorakitError && e.details.status === 403 && e.details.flowerCode === 2007) return 'finished';
      throw e;
    }
  }

  /** Stops heartbeats, deactivates and unregisters (errors ignored: the SuperLink may already be gone). */
  async close(): Promise<void> {
    if (this.heartbeat) clearTimeout(this.heartbeat);
    this.heartbeat = null;
    const quick = { ...this.o, retry: { maxTries: 2, maxSeconds: 5 } };
    const id = { nodeId: this.nodeId };
    await fleetCall(quick, 'deactivate-node', DeactivateNodeRequestSchema, id, DeactivateNodeResponseSchema).catch(
      () => {},
    );
    await fleetCall(
      quick,
      'unregister-node',
      UnregisterNodeFleetRequestSchema,
      id,
      UnregisterNodeFleetResponseSchema,
    ).catch(() => {});
  }
}
