// The object codec against bytes made by flwr 1.42's own Python code (interop/flower/make_fixtures.py):
// .npy arrays, a whole Message (records, chunked arrays, ids, tree) both ways.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fromBinary } from '@bufbuild/protobuf';
import { decodeNpy, encodeNpy, type WireDType } from '../../src/federated/npy.ts';
import { deflateMessage, inflateMessage, treeIds } from '../../src/federated/message.ts';
import { parseObject, readJsonRefs, verifyObject } from '../../src/federated/objects.ts';
import { MetadataSchema, type ObjectTree } from '../../src/federated/proto/flwr/proto/message_pb.ts';
import type { RecordDict } from '../../src/federated/records.ts';

const fixture = (name: string) => JSON.parse(readFileSync(`test/fixtures/federated/${name}.json`, 'utf8'));
const bytes = (b64: string) => new Uint8Array(Buffer.from(b64, 'base64'));

interface NpyCase {
  name: string;
  dtype: WireDType;
  shape: number[];
  values: number[];
  npy: string;
}

test('.npy bytes equal np.save for float32, float16 and bfloat16, and decode to the same values', () => {
  for (const c of fixture('npy') as NpyCase[]) {
    const n = c.shape.reduce((a, b) => a * b, 1);
    const values = c.values.length ? c.values : new Array(n).fill(0);
    const decoded = decodeNpy(bytes(c.npy), c.dtype, c.name);
    assert.deepEqual(decoded.shape, c.shape, c.name);
    assert.deepEqual(Array.from(decoded.data), values, c.name);
    const encoded = encodeNpy({ dtype: c.dtype, shape: c.shape, data: Float32Array.from(values) });
    assert.equal(Buffer.from(encoded).toString('base64'), c.npy, c.name);
  }
});

test('a bfloat16 .npy is refused unless the Array says bfloat16 (numpy calls it <V2)', () => {
  const c = (fixture('npy') as NpyCase[]).find((x) => x.dtype === 'bfloat16')!;
  assert.throws(() => decodeNpy(bytes(c.npy), '|V2', 'x'), /LK_UNSUPPORTED|not supported/);
});

const m = fixture('message');
const objects = new Map<string, Uint8Array>(
  Object.entries(m.objects as Record<string, string>).map(([k, v]) => [k, bytes(v)]),
);
const toTree = (t: { id: string; children: unknown[] }): ObjectTree =>
  ({ objectId: t.id, children: t.children.map((c) => toTree(c as typeof t)) }) as ObjectTree;

test("flwr's objects hash to their ids and the Message inflates to the arrays, metrics and config", async () => {
  for (const [id, content] of objects) await verifyObject(id, content);
  const metadata = fromBinary(MetadataSchema, bytes(m.metadata_proto));
  const msg = inflateMessage(metadata, toTree(m.tree), objects);
  const arrays = msg.content!.get('arrays')!;
  assert.equal(arrays.kind, 'array');
  if (arrays.kind !== 'array') return;
  assert.deepEqual([...arrays.arrays.keys()], Object.keys(m.arrays));
  for (const [name, want] of Object.entries(m.arrays as Record<string, { shape: number[]; values: number[] }>)) {
    assert.deepEqual(arrays.arrays.get(name)!.shape, want.shape);
    assert.deepEqual(Array.from(arrays.arrays.get(name)!.data), want.values, name);
  }
  const metrics = msg.content!.get('metrics')!;
  assert.deepEqual(metrics.kind === 'metric' && Object.fromEntries(metrics.values), {
    'num-examples': 12n,
    'train-loss': 2.5,
    losses: [1, 0.5],
  });
  const config = msg.content!.get('config')!;
  assert.deepEqual(config.kind === 'config' && Object.fromEntries(config.values), {
    'server-round': 3n,
    lr: 0.01,
    strategy: 'fedavg',
    flag: true,
  });
});

test('the same message deflated here has the same object bytes, tree and id as flwr', async () => {
  const metadata = fromBinary(MetadataSchema, bytes(m.metadata_proto));
  const a = m.arrays as Record<string, { shape: number[]; dtype: WireDType; values: number[] }>;
  const content: RecordDict = new Map([
    [
      'arrays',
      {
        kind: 'array',
        arrays: new Map(
          Object.entries(a).map(([k, v]) => [k, { dtype: v.dtype, shape: v.shape, data: Float32Array.from(v.values) }]),
        ),
      },
    ],
    [
      'metrics',
      {
        kind: 'metric',
        values: new Map<string, number | bigint | number[]>([
          ['num-examples', 12n],
          ['train-loss', 2.5],
          ['losses', [1, 0.5]],
        ]),
      },
    ],
    [
      'config',
      {
        kind: 'config',
        values: new Map<string, number | bigint | string | boolean>([
          ['server-round', 3n],
          ['lr', 0.01],
          ['strategy', 'fedavg'],
          ['flag', true],
        ]),
      },
    ],
  ]);
  const d = await deflateMessage({ metadata, content, error: null }, 64);
  assert.equal(d.id, m.message_id);
  assert.deepEqual(treeIds(d.tree), treeIds(toTree(m.tree)));
  assert.deepEqual([...d.objects.keys()].sort(), [...objects.keys()].sort());
  for (const [id, content] of d.objects) assert.deepEqual(content, objects.get(id), parseObject(content, id).type);
});

test('a chunked array repeats an identical chunk by index, not by a second child', () => {
  const arrayIds = [...objects].filter(([id, c]) => parseObject(c, id).type === 'Array');
  const withRepeat = arrayIds.map(([id, c]) => {
    const p = parseObject(c, id);
    const ids = JSON.parse(new TextDecoder().decode(p.body)).arraychunk_ids as number[];
    return { children: p.children.length, chunks: ids.length };
  });
  assert.ok(
    withRepeat.some((x) => x.chunks > x.children),
    JSON.stringify(withRepeat),
  );
});

test('record bodies keep their written key order, integer-like keys included', () => {
  const refs = readJsonRefs(new TextEncoder().encode('{"b": "1", "0": "2", "\\u00fc": "3"}'), 'x');
  assert.deepEqual(
    [...refs],
    [
      ['b', '1'],
      ['0', '2'],
      ['ü', '3'],
    ],
  );
});
