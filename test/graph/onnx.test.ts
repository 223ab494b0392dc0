// ONNX serialisation: decoded by an independent protobuf implementation (onnx-proto), and run by ORT.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import onnxProto from 'onnx-proto';
import { Graph, toOnnx, grad } from '../../src/graph/index.ts';
import { compile } from '../../src/runtime/index.ts';
import { assertAllclose } from '../helpers.ts';

const { onnx } = onnxProto as unknown as { onnx: any };

function sample() {
  const g = new Graph('sample');
  const x = g.input('x', 'f32', ['B', 3]);
  const w = g.initializer('w', 'f32', [3, 2], new Float32Array([1, -2, 3, -4, 5, -6]));
  const y = x.gemm(w, null, { alpha: 0.5 }).softmax(-1);
  g.output('y', y);
  g.output('dx', grad(y.sum(), [x])[0]);
  x.exp(); // a dead node: not written
  return g;
}

test('a serialised graph decodes with onnx-proto: nodes, attributes, initializers, typed inputs', () => {
  const m = onnx.ModelProto.decode(toOnnx(sample()));
  assert.equal(Number(m.irVersion), 8);
  assert.deepEqual(
    m.opsetImport.map((o: any) => [o.domain, Number(o.version)]),
    [
      ['', 18],
      ['com.microsoft', 1],
    ],
  );
  const ops = m.graph.node.map((n: any) => n.opType);
  assert.ok(ops.includes('Gemm') && ops.includes('Softmax'));
  assert.ok(!ops.includes('Exp'), 'dead nodes must be pruned');
  const gemm = m.graph.node.find((n: any) => n.opType === 'Gemm');
  const alpha = gemm.attribute.find((a: any) => a.name === 'alpha');
  assert.equal(alpha.type, 1); // FLOAT
  assert.equal(alpha.f, 0.5);
  const w = m.graph.initializer.find((t: any) => t.name === 'w');
  assert.deepEqual(w.dims.map(Number), [3, 2]);
  assert.deepEqual(Array.from(new Float32Array(new Uint8Array(w.rawData).buffer)), [1, -2, 3, -4, 5, -6]);
  const xin = m.graph.input.find((i: any) => i.name === 'x');
  assert.deepEqual(
    xin.type.tensorType.shape.dim.map((d: any) => d.dimParam || Number(d.dimValue)),
    ['B', 3],
  );
  assert.deepEqual(
    m.graph.output.map((o: any) => o.name),
    ['y', 'dx'],
  );
});

test('negative int attributes and int64 constants survive the round trip', () => {
  const g = new Graph();
  const x = g.input('x', 'f32', [2, 3]);
  g.output('y', x.softmax(-1).slice([-2], [-1], [1]));
  const m = onnx.ModelProto.decode(toOnnx(g));
  const sm = m.graph.node.find((n: any) => n.opType === 'Softmax');
  assert.equal(Number(sm.attribute[0].i), -1);
  const starts = m.graph.initializer.find(
    (t: any) => Number(t.dataType) === 7 && new BigInt64Array(new Uint8Array(t.rawData).slice().buffer)[0] === -2n,
  );
  assert.ok(starts, 'the -2 start is stored as int64');
});

test('the serialised model runs in ORT with the expected values', async () => {
  const s = await compile(sample(), { worker: false });
  const out = await s.run({ x: { data: new Float32Array([1, 0, 0, 0, 1, 0]), shape: [2, 3] } });
  const sm = (a: number, b: number) => [
    Math.exp(a) / (Math.exp(a) + Math.exp(b)),
    Math.exp(b) / (Math.exp(a) + Math.exp(b)),
  ];
  assertAllclose(out.y.data as Float32Array, [...sm(0.5, -1), ...sm(1.5, -2)], { rtol: 1e-6 });
  assertAllclose(out.dx.data as Float32Array, new Float32Array(6), { atol: 1e-6, what: 'd sum(softmax) = 0' });
});

test('two graphs built the same way serialise to the same bytes: symbols for run-time dims count per graph', () => {
  // A reshape to a run-time shape and a slice to the end of a symbolic dim get fresh symbols, which appear in the
  // outputs' types.
  const build = () => {
    const g = new Graph('symbols');
    const x = g.input('x', 'f32', ['B', 'T', 4]);
    g.output('flat', x.reshape(x.sum(-1).shapeOf())); // [d0, d1]
    g.output('tail', x.slice([1], [2 ** 62], [1])); // [B, d2, 4]
    return g;
  };
  const a = build(),
    b = build();
  const ma = onnx.ModelProto.decode(toOnnx(a));
  const dims = (m: any, name: string) =>
    m.graph.output
      .find((o: any) => o.name === name)
      .type.tensorType.shape.dim.map((d: any) => d.dimParam || Number(d.dimValue));
  assert.deepEqual(dims(ma, 'flat'), ['d0', 'd1']);
  assert.deepEqual(dims(ma, 'tail'), ['B', 'd2', 4]);
  assert.deepEqual(toOnnx(b), toOnnx(a));
});
