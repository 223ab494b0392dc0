/**
 * Flower's content-addressed objects (flwr.supercore.inflatable): every part of a message travels as one object,
 * `"<Type> <child ids> <body length>\0<body>"`, where the head's child ids are comma-separated, and the object's id
 * is the hex SHA-256 of those bytes. A message is a tree (Message → RecordDict → records → Array → ArrayChunk);
 * the Fleet API carries its shape as an ObjectTree and each object by id (pull-object / push-object).
 * Hashing uses WebCrypto (`crypto.subtle`), present in Node and browsers alike.
 * Not here: what the bodies mean (records.ts), the HTTP calls (fleet.ts).
 */
import { LorakitError } from '../errors.ts';

/** One deflated object: its id, its bytes, and the ids of its (unique) children in order. */
export interface FlowerObject {
  id: string;
  type: string;
  children: string[];
  content: Uint8Array;
}

/** The parts of an object's bytes. */
export interface ParsedObject {
  type: string;
  children: string[];
  body: Uint8Array;
}

const utf8 = new TextEncoder();

/** Hex SHA-256 of `bytes` (Flower's object id). */
export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = new Uint8Array(await globalThis.crypto.subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** The object `<type> <children> <len>\0<body>` with its id; `children` must already be unique, in order. */
export async function makeObject(type: string, children: readonly string[], body: Uint8Array): Promise<FlowerObject> {
  const head = utf8.encode(`${type} ${children.join(',')} ${body.length}`);
  const content = new Uint8Array(head.length + 1 + body.length);
  content.set(head, 0);
  content[head.length] = 0; // HEAD_BODY_DIVIDER
  content.set(body, head.length + 1);
  return { id: await sha256Hex(content), type, children: [...children], content };
}

/** Splits an object's bytes into type, child ids and body, checking the stated body length; `id` names it in errors. */
export function parseObject(content: Uint8Array, id: string): ParsedObject {
  const cut = content.indexOf(0);
  const bad = (what: string) => new LorakitError('LK_PROTOCOL_MISMATCH', `Flower object ${id}: ${what}`);
  if (cut < 0) throw bad('no "\\0" between head and body (not a Flower object)');
  const head = new TextDecoder().decode(content.subarray(0, cut)).split(' ');
  if (head.length !== 3) throw bad(`head "${head.join(' ')}" is not "<type> <children> <length>"`);
  const [type, ids, len] = head;
  const body = content.subarray(cut + 1);
  if (Number(len) !== body.length) throw bad(`head says ${len} body bytes, found ${body.length}`);
  return { type, children: ids === '' ? [] : ids.split(','), body };
}

/** Checks that `content` hashes to `id` (a pulled object is what was asked for). */
export async function verifyObject(id: string, content: Uint8Array): Promise<void> {
  const actual = await sha256Hex(content);
  if (actual !== id) {
    throw new LorakitError('LK_PROTOCOL_MISMATCH', `Flower object ${id}: its content hashes to ${actual}`);
  }
}

/**
 * A string as Python's `json.dumps` writes it (ensure_ascii: every character past U+007F as a lower-case \uXXXX
 * escape, surrogate pairs for astral characters); JSON.stringify agrees on everything else.
 */
export function pyJsonString(s: string): string {
  return JSON.stringify(s).replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** `json.dumps(obj)` of a flat dict of strings (ArrayRecord and RecordDict bodies): `{"a": "x", "b": "y"}`. */
export function pyJsonRefs(refs: ReadonlyMap<string, string>): Uint8Array {
  const items = [...refs].map(([k, v]) => `${pyJsonString(k)}: ${pyJsonString(v)}`);
  return utf8.encode(`{${items.join(', ')}}`);
}

/**
 * Reads a flat JSON dict of strings in its written order (JSON.parse would move integer-like keys such as "0" to
 * the front, and the order of a record's items is part of its meaning).
 */
export function readJsonRefs(body: Uint8Array, where: string): Map<string, string> {
  const text = new TextDecoder().decode(body).trim();
  const str = '"(?:[^"\\\\]|\\\\.)*"';
  const item = new RegExp(`(${str})\\s*:\\s*(${str})\\s*(,|$)`, 'y');
  const out = new Map<string, string>();
  const inner = text.startsWith('{') && text.endsWith('}') ? text.slice(1, -1).trim() : null;
  if (inner === null) throw new LorakitError('LK_PROTOCOL_MISMATCH', `${where}: body is not a JSON object`);
  item.lastIndex = 0;
  while (item.lastIndex < inner.length) {
    const at = item.lastIndex;
    const m = item.exec(inner);
    if (!m) {
      throw new LorakitError(
        'LK_PROTOCOL_MISMATCH',
        `${where}: not a JSON object of strings at "${inner.slice(at, at + 40)}"`,
      );
    }
    out.set(JSON.parse(m[1]) as string, JSON.parse(m[2]) as string);
    while (inner[item.lastIndex] === ' ') item.lastIndex++;
  }
  return out;
}

/** `ids` without repeats, first occurrence first (a Python dict keyed by id keeps this order). */
export function unique(ids: readonly string[]): string[] {
  return [...new Set(ids)];
}
