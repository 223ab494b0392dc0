/**
 * The client loop of a Flower node: connect, then pull a message, hand it to the caller's handler, push the reply
 * (or an error reply naming what failed: Flower's CLIENT_APP_RAISED_EXCEPTION), and keep polling with heartbeats
 * until the run that sent the messages has finished (asked with get-run), the caller's signal aborts, or
 * `maxMessages` were answered. A lost SuperLink (no connection after retries, or a heartbeat the SuperLink no longer
 * recognises) is met by reconnecting with the same key, up to `reconnects` times in a row, so a restarted
 * SuperLink or a restarted client rejoins the federation. Not here: what the handler does (lora-client.ts).
 */
import { LorakitError } from '../errors.ts';
import { FleetSession, type FleetSessionOptions } from './fleet.ts';
import { type FlowerMessage, replyMetadata } from './message.ts';
import type { RecordDict } from './records.ts';
import { type NodeIdentity, generateIdentity } from './signing.ts';

/** Flower's ErrorCode.CLIENT_APP_RAISED_EXCEPTION (flwr.common.constant). */
const CLIENT_APP_RAISED_EXCEPTION = 2n;

/** Options of runFleetClient. */
export interface FleetClientOptions extends Omit<FleetSessionOptions, 'identity'> {
  /** The node's key (default: a fresh one; pass a saved one to rejoin as the same node). */
  identity?: NodeIdentity;
  /** Wait between empty pulls, ms (default 500). */
  pollMs?: number;
  /** Reconnections in a row before giving up (default 5). */
  reconnects?: number;
  /** Stop after answering this many messages (default: until the run finishes). */
  maxMessages?: number;
}

/** What one client did. */
export interface FleetClientSummary {
  nodeId: bigint;
  /** Messages answered, by message type ("train", "evaluate", ...). */
  answered: Record<string, number>;
  bytesPushed: number;
  reconnects: number;
}

/** Answers one message: the reply's content. Throwing replies with an error message instead. */
export type MessageHandler = (message: FlowerMessage) => Promise<RecordDict>;

/** Runs a Flower node until its run finishes; `handle` answers each message. */
export async function runFleetClient(o: FleetClientOptions, handle: MessageHandler): Promise<FleetClientSummary> {
  const identity = o.identity ?? (await generateIdentity());
  const so: FleetSessionOptions = { ...o, identity };
  const pollMs = o.pollMs ?? 500;
  const maxReconnects = o.reconnects ?? 5;
  const summary: FleetClientSummary = { nodeId: 0n, answered: {}, bytesPushed: 0, reconnects: 0 };
  let session = await FleetSession.connect(so);
  summary.nodeId = session.nodeId;
  let runId: bigint | null = null;
  let failures = 0;
  let answered = 0;
  let idle = 0;
  try {
    while (!o.signal?.aborted && (o.maxMessages === undefined || answered < o.maxMessages)) {
      try {
        const msg = await session.pull();
        if (msg === null) {
          // ask whether the run is over only every ~2 s of silence (each get-run is a logged call on the SuperLink)
          if (runId !== null && ++idle % Math.max(1, Math.round(2000 / pollMs)) === 0) {
            if ((await session.runStatus(runId)) === 'finished') break;
          }
          await new Promise((ok) => setTimeout(ok, pollMs));
          failures = 0;
          continue;
        }
        runId = msg.metadata.runId;
        idle = 0;
        const type = msg.metadata.messageType;
        const started = Date.now();
        let reply: FlowerMessage;
        try {
          reply = { metadata: replyMetadata(msg.metadata), content: await handle(msg), error: null };
        } catch (e) {
          if (!(e instanceof LorakitError)) throw e;
          o.log?.(`${type} message ${msg.metadata.messageId.slice(0, 8)} failed: ${e.message}`);
          const reason = `${e.code}: ${e.message}`;
          reply = {
            metadata: replyMetadata(msg.metadata),
            content: null,
            error: { code: CLIENT_APP_RAISED_EXCEPTION, reason },
          };
        }
        const pushed = await session.reply(reply, (Date.now() - started) / 1000);
        summary.bytesPushed += pushed.bytesPushed;
        summary.answered[type] = (summary.answered[type] ?? 0) + 1;
        answered++;
        failures = 0;
      } catch (e) {
        // reconnect only where that can help: no connection, or a SuperLink that no longer knows this node
        const lost =
          e instanceof LorakitError &&
          (e.code === 'LK_NETWORK' || e.details.lostNode === true || e.details.status === 401);
        if (!lost || o.signal?.aborted || ++failures > maxReconnects) throw e;
        o.log?.(`lost the SuperLink (${e.message}); reconnecting (${failures}/${maxReconnects})`);
        await session.close();
        session = await FleetSession.connect(so);
        summary.reconnects++;
        summary.nodeId = session.nodeId;
      }
    }
  } finally {
    await session.close();
  }
  return summary;
}
