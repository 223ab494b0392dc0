/**
 * Flower's RecordDict (flwr.app: ArrayRecord, MetricRecord, ConfigRecord) to and from content-addressed objects,
 * as flwr 1.42 deflates them: a RecordDict's and an ArrayRecord's body is `json.dumps({name: child id})`; an Array's
 * body is `json.dumps({"dtype", "shape", "stype", "arraychunk_ids"})` with its .npy bytes cut into ArrayChunks of
 * at most 5 MB (FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE); Metric and Config records are protobuf messages.
 * Numbers keep Python's int/float split: a JS `number` travels as a float (double), a `bigint` as an int (sint64,
 * or uint64 past 2^63 - 1, as Flower chooses).
 * Not here: the Message around the RecordDict (message.ts).
 */
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { LorakitError } from '../errors.ts';
import { decodeNpy, encodeNpy, type WireTensor } from './npy.ts';
import {
  type FlowerObject,
  makeObject,
  parseObject,
  pyJsonRefs,
  pyJsonString,
  readJsonRefs,
  unique,
} from './objects.ts';
import {
  ConfigRecordSchema,
  ConfigRecordValueSchema,
  MetricRecordSchema,
  MetricRecordValueSchema,
  type ConfigRecordValue,
  type MetricRecordValue,
} from './proto/flwr/proto/recorddict_pb.ts';

/** A metric: a float (`number`), an int (`bigint`) or a list of either. */
export type MetricValue = number | bigint | number[] | bigint[];
/** A config value: a metric value, a bool, a string, bytes, or a list of one of them. */
export type ConfigValue = MetricValue | boolean | string | Uint8Array | boolean[] | string[] | Uint8Array[];

/** One record of a RecordDict. */
export type FlowerRecord =
  | { kind: 'array'; arrays: Map<string, WireTensor> }
  | { kind: 'metric'; values: Map<string, MetricValue> }
  | { kind: 'config'; values: Map<string, ConfigValue> };

/** A RecordDict: named records in order. */
export type RecordDict = Map<string, FlowerRecord>;

/** Flower's largest ArrayChunk body (flwr.common.constant.FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE, 5 MB). */
export const MAX_ARRAY_CHUNK = 5 * 1024 * 1024;

const TYPE = { array: 'ArrayRecord', metric: 'MetricRecord', config: 'ConfigRecord' } as const;
const INT64_MAX = (1n << 63n) - 1n;

/** Objects that make up `rd`, children before parents (the RecordDict last), with its id. */
export async function deflateRecordDict(
  rd: RecordDict,
  maxChunk = MAX_ARRAY_CHUNK,
): Promise<{ id: string; objects: FlowerObject[] }> {
  const objects: FlowerObject[] = [];
  const refs = new Map<string, string>();
  for (const [name, record] of rd) refs.set(name, await deflateRecord(record, objects, maxChunk));
  const root = await makeObject('RecordDict', unique([...refs.values()]), pyJsonRefs(refs));
  objects.push(root);
  return { id: root.id, objects };
}

async function deflateRecord(record: FlowerRecord, out: FlowerObject[], maxChunk: number): Promise<string> {
  if (record.kind === 'array') {
    const refs = new Map<string, string>();
    for (const [name, t] of record.arrays) refs.set(name, await deflateArray(t, out, maxChunk));
    const o = await makeObject(TYPE.array, unique([...refs.values()]), pyJsonRefs(refs));
    out.push(o);
    return o.id;
  }
  const body =
    record.kind === 'metric'
      ? toBinary(
          MetricRecordSchema,
          create(MetricRecordSchema, {
            items: [...record.values].map(([key, v]) => ({ key, value: metricProto(v, key) })),
          }),
        )
      : toBinary(
          ConfigRecordSchema,
          create(ConfigRecordSchema, {
            items: [...record.values].map(([key, v]) => ({ key, value: configProto(v, key) })),
          }),
        );
  const o = await makeObject(TYPE[record.kind], [], body);
  out.push(o);
  return o.id;
}

async function deflateArray(t: WireTensor, out: FlowerObject[], maxChunk: number): Promise<string> {
  const npy = encodeNpy(t);
  const chunkIds: string[] = [];
  for (let start = 0; start < npy.length; start += maxChunk) {
    const chunk = await makeObject('ArrayChunk', [], npy.subarray(start, Math.min(start + maxChunk, npy.length)));
    if (!chunkIds.includes(chunk.id)) out.push(chunk);
    chunkIds.push(chunk.id);
  }
  const children = unique(chunkIds);
  const meta =
    `{"dtype": ${pyJsonString(t.dtype)}, "shape": [${t.shape.join(', ')}], "stype": "numpy.ndarray", ` +
    `"arraychunk_ids": [${chunkIds.map((id) => children.indexOf(id)).join(', ')}]}`;
  const o = await makeObject('Array', children, new TextEncoder().encode(meta));
  out.push(o);
  return o.id;
}

function ints(v: bigint[]) {
  return v.some((x) => x > INT64_MAX)
    ? ({ case: 'uintList', value: { vals: v } } as const)
    : ({ case: 'sintList', value: { vals: v } } as const);
}

function metricProto(v: MetricValue, key: string) {
  return create(MetricRecordValueSchema, { value: numeric(v, key, 'MetricRecord') });
}

function numeric(v: MetricValue, key: string, record: string) {
  if (typeof v === 'number') return { case: 'double', value: v } as const;
  if (typeof v === 'bigint') return { case: v > INT64_MAX ? 'uint64' : 'sint64', value: v } as const;
  if (v.every((x) => typeof x === 'number')) return { case: 'doubleList', value: { vals: v as number[] } } as const;
  if (v.every((x) => typeof x === 'bigint')) return ints(v as bigint[]);
  throw new LorakitError('LK_INVALID_ARGUMENT', `${record} "${key}": a list mixes floats and ints`);
}

function configProto(v: ConfigValue, key: string) {
  const value = (() => {
    if (typeof v === 'boolean') return { case: 'bool', value: v } as const;
    if (typeof v === 'string') return { case: 'string', value: v } as const;
    if (v instanceof Uint8Array) return { case: 'bytes', value: v } as const;
    if (Array.isArray(v) && v.length > 0) {
      const first = v[0];
      if (typeof first === 'boolean') return { case: 'boolList', value: { vals: v as boolean[] } } as const;
      if (typeof first === 'string') return { case: 'stringList', value: { vals: v as string[] } } as const;
      if (first instanceof Uint8Array) return { case: 'bytesList', value: { vals: v as Uint8Array[] } } as const;
    }
    return numeric(v as MetricValue, key, 'ConfigRecord');
  })();
  return create(ConfigRecordValueSchema, { value });
}

/** Rebuilds a RecordDict from its id and the pulled objects (already checked against their ids). */
export function inflateRecordDict(id: string, objects: ReadonlyMap<string, Uint8Array>): RecordDict {
  const root = parsed(id, objects, 'RecordDict');
  const out: RecordDict = new Map();
  for (const [name, childId] of readJsonRefs(root.body, `RecordDict ${id}`)) {
    const content = objects.get(childId);
    if (!content) throw missing(childId, `record "${name}"`);
    const { type, body } = parseObject(content, childId);
    if (type === TYPE.array) {
      const arrays = new Map<string, WireTensor>();
      for (const [arrayName, arrayId] of readJsonRefs(body, `ArrayRecord "${name}"`)) {
        arrays.set(arrayName, inflateArray(arrayId, objects, `array "${arrayName}" of record "${name}"`));
      }
      out.set(name, { kind: 'array', arrays });
    } else if (type === TYPE.metric) {
      const items = fromBinary(MetricRecordSchema, body).items;
      out.set(name, { kind: 'metric', values: new Map(items.map((i) => [i.key, fromValue(i.value)! as MetricValue])) });
    } else if (type === TYPE.config) {
      const items = fromBinary(ConfigRecordSchema, body).items;
      out.set(name, { kind: 'config', values: new Map(items.map((i) => [i.key, fromValue(i.value)!])) });
    } else {
      throw new LorakitError('LK_PROTOCOL_MISMATCH', `record "${name}" is a ${type}, not a Flower record`);
    }
  }
  return out;
}

function fromValue(v: MetricRecordValue | ConfigRecordValue | undefined): ConfigValue | undefined {
  const value = v?.value;
  if (!value || value.case === undefined) return undefined;
  if (typeof value.value === 'object' && value.value !== null && 'vals' in value.value) {
    return value.value.vals as ConfigValue;
  }
  return value.value as ConfigValue;
}

function inflateArray(id: string, objects: ReadonlyMap<string, Uint8Array>, where: string): WireTensor {
  const a = parsed(id, objects, 'Array');
  const meta = JSON.parse(new TextDecoder().decode(a.body)) as {
    dtype: string;
    shape: number[];
    stype: string;
    arraychunk_ids: number[];
  };
  if (meta.stype !== 'numpy.ndarray') {
    throw new LorakitError('LK_UNSUPPORTED', `${where}: serialisation "${meta.stype}" (only numpy.ndarray is read)`);
  }
  const parts = meta.arraychunk_ids.map((i) => parsed(a.children[i], objects, 'ArrayChunk').body);
  const bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    bytes.set(p, at);
    at += p.length;
  }
  const t = decodeNpy(bytes, meta.dtype, where);
  if (t.shape.join(',') !== meta.shape.join(',')) {
    throw new LorakitError('LK_PROTOCOL_MISMATCH', `${where}: shape [${meta.shape}] but its .npy has [${t.shape}]`);
  }
  return t;
}

function parsed(id: string | undefined, objects: ReadonlyMap<string, Uint8Array>, type: string) {
  const content = id === undefined ? undefined : objects.get(id);
  if (id === undefined || !content) throw missing(String(id), `a ${type}`);
  const p = parseObject(content, id);
  if (p.type !== type)
    throw new LorakitError('LK_PROTOCOL_MISMATCH', `object ${id}: expected a ${type}, got ${p.type}`);
  return p;
}

function missing(id: string, what: string): LorakitError {
  return new LorakitError('LK_PROTOCOL_MISMATCH', `${what} (object ${id}) is not among the message's objects`);
}

/** A MetricRecord from an object (key order kept; a `bigint` is an int, a `number` a float). */
export function metricRecord(values: Record<string, MetricValue>): FlowerRecord {
  return { kind: 'metric', values: new Map(Object.entries(values)) };
}

/** A RecordDict from an object of records (key order kept). */
export function recordDict(records: Record<string, FlowerRecord>): RecordDict {
  return new Map(Object.entries(records));
}
