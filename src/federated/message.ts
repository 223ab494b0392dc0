/**
 * A Flower Message as objects: the Message object's body is the protobuf `Message{metadata, error}` with
 * `metadata.message_id` cleared and no content (flwr.app.Message.deflate); its one child is the content's
 * RecordDict. The message id is that object's id, and a reply is addressed as `Message(content, reply_to=msg)`
 * addresses it (source and destination swapped, reply_to_message_id, group, type, and a TTL that ends when the
 * instruction's does). Not here: the RecordDict's own objects (records.ts), sending them (fleet.ts).
 */
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { LorakitError } from '../errors.ts';
import { type FlowerObject, makeObject, parseObject } from './objects.ts';
import {
  type Metadata,
  MessageSchema,
  MetadataSchema,
  type ObjectTree,
  ObjectTreeSchema,
} from './proto/flwr/proto/message_pb.ts';
import { MAX_ARRAY_CHUNK, type RecordDict, deflateRecordDict, inflateRecordDict } from './records.ts';

/** A message: routing metadata and either content or an error. */
export interface FlowerMessage {
  metadata: Metadata;
  content: RecordDict | null;
  error: { code: bigint; reason: string } | null;
}

/** A message ready to push: its id (set into metadata.messageId), tree and objects by id (children first). */
export interface DeflatedMessage {
  id: string;
  metadata: Metadata;
  /** The error of an error reply (pushed in the message itself; such a message has no content). */
  error: { code: bigint; reason: string } | null;
  tree: ObjectTree;
  objects: Map<string, Uint8Array>;
}

/** Deflates `m`: every object of its tree, the tree, and the message id. */
export async function deflateMessage(m: FlowerMessage, maxChunk = MAX_ARRAY_CHUNK): Promise<DeflatedMessage> {
  const all: FlowerObject[] = [];
  let contentId: string | null = null;
  if (m.content) {
    const rd = await deflateRecordDict(m.content, maxChunk);
    all.push(...rd.objects);
    contentId = rd.id;
  }
  const metadata = create(MetadataSchema, { ...m.metadata, messageId: '' });
  const body = toBinary(MessageSchema, create(MessageSchema, { metadata, error: m.error ?? undefined }));
  const root = await makeObject('Message', contentId ? [contentId] : [], body);
  all.push(root);
  const byId = new Map(all.map((o) => [o.id, o]));
  const tree = (id: string): ObjectTree =>
    create(ObjectTreeSchema, { objectId: id, children: byId.get(id)!.children.map(tree) });
  return {
    id: root.id,
    metadata: create(MetadataSchema, { ...m.metadata, messageId: root.id }),
    error: m.error,
    tree: tree(root.id),
    objects: new Map(all.map((o) => [o.id, o.content])),
  };
}

/** Every id of `tree`, children before parents (Flower's post-order). */
export function treeIds(tree: ObjectTree): string[] {
  return [...tree.children.flatMap(treeIds), tree.objectId];
}

/** Rebuilds a pulled message from its metadata, its tree and its objects (each checked against its id already). */
export function inflateMessage(metadata: Metadata, tree: ObjectTree, objects: ReadonlyMap<string, Uint8Array>) {
  const content = objects.get(tree.objectId);
  if (!content) throw new LorakitError('LK_PROTOCOL_MISMATCH', `message ${tree.objectId}: its object was not pulled`);
  const head = parseObject(content, tree.objectId);
  if (head.type !== 'Message') {
    throw new LorakitError('LK_PROTOCOL_MISMATCH', `object ${tree.objectId} is a ${head.type}, not a Message`);
  }
  const proto = fromBinary(MessageSchema, head.body);
  const out: FlowerMessage = {
    metadata,
    content: head.children.length ? inflateRecordDict(head.children[0], objects) : null,
    error: proto.error ? { code: proto.error.code, reason: proto.error.reason } : null,
  };
  return out;
}

/** The metadata of a reply to `to`, created at `now` (seconds since the epoch). */
export function replyMetadata(to: Metadata, now = Date.now() / 1000): Metadata {
  return create(MetadataSchema, {
    runId: to.runId,
    messageId: '',
    srcNodeId: to.dstNodeId,
    dstNodeId: to.srcNodeId,
    replyToMessageId: to.messageId,
    groupId: to.groupId,
    createdAt: now,
    ttl: to.createdAt + to.ttl - now, // a reply expires with the instruction it answers
    messageType: to.messageType,
    srcTaskId: to.dstTaskId,
    dstTaskId: to.srcTaskId,
  });
}
