// Every differentiable primitive: its gradient against central finite differences in float64, on shapes that broadcast;
// and TopK's forward (its values, indices and tie order) against a host sort.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Graph, OPS } from '../../src/graph/index.ts';
import { compile } from '../../src/runtime/index.ts';
import { gradcheck, coveredOps } from './gradcheck.ts';

const pos = { lo: 0.5, hi: 2 };
const cases: [string, Parameters<typeof gradcheck>[0], Parameters<typeof gradcheck>[1]][] = [
  ['Add broadcasts [3,4] + [4]', (_g, [a, b]) => a.add(b), [{ shape: [3, 4] }, { shape: [4] }]],
  ['Sub broadcasts [2,3,4] - [3,1]', (_g, [a, b]) => a.sub(b), [{ shape: [2, 3, 4] }, { shape: [3, 1] }]],
  ['Mul broadcasts [3,4] * [1,4]', (_g, [a, b]) => a.mul(b), [{ shape: [3, 4] }, { shape: [1, 4] }]],
  ['Div broadcasts [3,4] / [3,1]', (_g, [a, b]) => a.div(b), [{ shape: [3, 4] }, { shape: [3, 1], ...pos }]],
  ['Pow of base and exponent', (_g, [a, b]) => a.pow(b), [{ shape: [3, 4], ...pos }, { shape: [4] }]],
  ['Max picks the larger input', (_g, [a, b]) => a.maximum(b), [{ shape: [3, 4] }, { shape: [4] }]],
  ['Min picks the smaller input', (_g, [a, b]) => a.minimum(b), [{ shape: [3, 4] }, { shape: [3, 4] }]],
  ['Neg', (_g, [a]) => a.neg(), [{ shape: [5] }]],
  ['Exp', (_g, [a]) => a.exp(), [{ shape: [2, 3] }]],
  ['Log', (_g, [a]) => a.log(), [{ shape: [2, 3], ...pos }]],
  ['Sqrt', (_g, [a]) => a.sqrt(), [{ shape: [2, 3], ...pos }]],
  ['Tanh', (_g, [a]) => a.tanh(), [{ shape: [2, 3] }]],
  ['Erf (f32 kernel only)', (_g, [a]) => a.cast('f32').erf().cast('f64'), [{ shape: [2, 3] }]],
  ['Sigmoid', (_g, [a]) => a.sigmoid(), [{ shape: [2, 3] }]],
  ['Reciprocal', (_g, [a]) => a.reciprocal(), [{ shape: [2, 3], ...pos }]],
  ['Sin', (_g, [a]) => a.sin(), [{ shape: [2, 3] }]],
  ['Cos', (_g, [a]) => a.cos(), [{ shape: [2, 3] }]],
  ['Abs away from zero', (_g, [a]) => a.abs(), [{ shape: [4], values: [-2, -0.5, 0.5, 3] }]],
  ['Relu away from zero', (_g, [a]) => a.relu(), [{ shape: [4], values: [-2, -0.5, 0.5, 3] }]],
  [
    'Where routes by a mask',
    (g, [a, b]) => g.constant([1, 0, 1, 0, 0, 1], 'bool', [2, 3]).where(a, b),
    [{ shape: [2, 3] }, { shape: [3] }],
  ],
  ['Identity', (g, [a]) => g.op('Identity', [a]), [{ shape: [3] }]],
  ['MatMul [2,3,4] @ [4,5] (2-D weight)', (_g, [a, b]) => a.matmul(b), [{ shape: [2, 3, 4] }, { shape: [4, 5] }]],
  [
    'MatMul with batch broadcast [2,1,3,4] @ [3,4,2]',
    (_g, [a, b]) => a.matmul(b),
    [{ shape: [2, 1, 3, 4] }, { shape: [3, 4, 2] }],
  ],
  ['Gemm plain with bias', (_g, [a, b, c]) => a.gemm(b, c), [{ shape: [3, 4] }, { shape: [4, 2] }, { shape: [2] }]],
  ['Gemm transA', (_g, [a, b]) => a.gemm(b, null, { transA: 1, alpha: 0.5 }), [{ shape: [4, 3] }, { shape: [4, 2] }]],
  ['Gemm transB', (_g, [a, b]) => a.gemm(b, null, { transB: 1 }), [{ shape: [3, 4] }, { shape: [2, 4] }]],
  [
    'Gemm transA transB with scaled bias',
    (_g, [a, b, c]) => a.gemm(b, c, { transA: 1, transB: 1, alpha: 2, beta: 0.5 }),
    [{ shape: [4, 3] }, { shape: [2, 4] }, { shape: [3, 2] }],
  ],
  ['ReduceSum over axis 1', (_g, [a]) => a.sum(1), [{ shape: [2, 3, 4] }]],
  ['ReduceSum keepdims over all', (_g, [a]) => a.sum(undefined, true), [{ shape: [2, 3] }]],
  ['ReduceMean over two axes', (_g, [a]) => a.mean([0, 2], true), [{ shape: [2, 3, 4] }]],
  ['ReduceMax', (_g, [a]) => a.max(-1), [{ shape: [2, 3] }]],
  ['Softmax on the last axis', (_g, [a]) => a.softmax(-1), [{ shape: [2, 5] }]],
  ['Softmax on axis 1 of 3', (_g, [a]) => a.softmax(1), [{ shape: [2, 3, 2] }]],
  [
    'LogSoftmax on the last axis',
    (g, [a]) => g.op('LogSoftmax', [a], { axis: -1 }),
    [{ shape: [2, 5], lo: -3, hi: 3 }],
  ],
  [
    'SoftmaxCrossEntropyLoss, both outputs, an ignored label',
    (g, [a]) => {
      const [l, lp] = g.opMulti(
        'SoftmaxCrossEntropyLoss',
        [a, g.constant([2, -100, 0], 'i64', [3])],
        { reduction: 'none', ignore_index: -100 },
        2,
      );
      return l.unsqueeze(-1).add(lp.mul(0.5));
    },
    [{ shape: [3, 4], lo: -3, hi: 3 }],
  ],
  [
    'FastGelu (f32 kernel only)',
    (g, [a]) => g.op('FastGelu', [a.cast('f32')]).cast('f64'),
    [{ shape: [2, 5], lo: -4, hi: 4 }],
  ],
  [
    'RotaryEmbedding, rotate_half layout (f32 kernel only)',
    (g, [a]) => {
      const table = (f: (v: number) => number) =>
        g.constant(
          Array.from({ length: 8 }, (_, i) => f(0.4 * i + 0.1)),
          'f32',
          [4, 2],
        );
      return g
        .op('RotaryEmbedding', [a.cast('f32'), g.constant([3, 1], 'i64', [1, 2]), table(Math.cos), table(Math.sin)], {
          interleaved: 0,
        })
        .cast('f64');
    },
    [{ shape: [1, 2, 2, 4] }],
  ],
  [
    'SimplifiedLayerNormalization (RMSNorm), input and scale (f32 kernel only)',
    (g, [a, w]) =>
      g
        .opMulti(
          'SimplifiedLayerNormalization',
          [a.cast('f32'), w.cast('f32')],
          { axis: -1, epsilon: 1e-5, stash_type: 1 },
          2,
        )[0]
        .cast('f64'),
    [{ shape: [2, 3, 4] }, { shape: [4] }],
  ],
  [
    'QuickGelu α = 1.7 (f32 kernel only)',
    (g, [a]) => g.op('QuickGelu', [a.cast('f32')], { alpha: 1.7 }).cast('f64'),
    [{ shape: [2, 5], lo: -4, hi: 4 }],
  ],
  [
    'LayerNormalization with scale and bias',
    (g, [a, w, b]) => g.opMulti('LayerNormalization', [a, w, b], { axis: -1, epsilon: 1e-5 }, 3)[0],
    [{ shape: [3, 4] }, { shape: [4] }, { shape: [4] }],
  ],
  [
    'Conv: stride 2, asymmetric pads, dilation [1, 2], 2 groups, bias (f32 kernel only)',
    (_g, [x, w, b]) =>
      x
        .cast('f32')
        .conv2d(w.cast('f32'), b.cast('f32'), { stride: 2, padding: [1, 0, 2, 1], dilation: [1, 2], groups: 2 })
        .cast('f64'),
    [{ shape: [2, 4, 5, 6] }, { shape: [4, 2, 3, 2] }, { shape: [4] }],
  ],
  [
    'ConvTranspose: stride [2, 1], output_padding, dilation 2, 2 groups, bias (f32 kernel only)',
    (_g, [x, w, b]) =>
      x
        .cast('f32')
        .convTranspose2d(w.cast('f32'), b.cast('f32'), {
          stride: [2, 1],
          padding: [1, 2, 0, 1],
          dilation: 2,
          groups: 2,
          outputPadding: [1, 0],
        })
        .cast('f64'),
    [{ shape: [2, 4, 3, 4] }, { shape: [4, 1, 2, 3] }, { shape: [2] }],
  ],
  ['Reshape', (_g, [a]) => a.reshape([3, -1]).mul(a.reshape([3, 4])), [{ shape: [2, 6] }]],
  ['Transpose', (_g, [a]) => a.transpose([2, 0, 1]), [{ shape: [2, 3, 4] }]],
  ['Unsqueeze and Squeeze', (_g, [a]) => a.unsqueeze([0, 2]).mul(2).squeeze([0]), [{ shape: [3, 2] }]],
  ['Slice with negative bounds', (_g, [a]) => a.slice([1, -3], [3, -1], [0, 1]), [{ shape: [4, 5] }]],
  ['Pad', (g, [a]) => g.op('Pad', [a, g.constInts([1, 0, 0, 2])], { mode: 'constant' }), [{ shape: [2, 3] }]],
  [
    'Concat three inputs',
    (g, [a, b, c]) => g.concat([a, b, c], 1),
    [{ shape: [2, 1] }, { shape: [2, 3] }, { shape: [2, 2] }],
  ],
  [
    'Split uses some pieces',
    (_g, [a]) => {
      const [p, , r] = a.split([1, 2, 1], 1);
      return p.mul(r);
    },
    [{ shape: [3, 4] }],
  ],
  ['Expand', (_g, [a]) => a.expand([2, 3, 4]), [{ shape: [3, 1] }]],
  [
    'Gather rows with repeats (embedding)',
    (g, [a]) => a.gather(g.constant([2, 0, 2, 1], 'i64', [2, 2])),
    [{ shape: [3, 4] }],
  ],
  [
    'Gather columns on the last axis with a repeat (PaCA)',
    (g, [a]) => a.gather(g.constant([3, 0, 3], 'i64', [3]), 2),
    [{ shape: [2, 3, 4] }],
  ],
  [
    'GatherElements',
    (g, [a]) => a.gatherElements(g.constant([0, 2, 1, 1, 0, 0], 'i64', [2, 3]), 1),
    [{ shape: [2, 3] }],
  ],
  [
    'ScatterElements overwrite',
    (g, [a, u]) => a.scatterElements(g.constant([1, 0], 'i64', [1, 2]), u, 0),
    [{ shape: [2, 2] }, { shape: [1, 2] }],
  ],
  [
    'ScatterElements add',
    (g, [a, u]) => a.scatterElements(g.constant([1, 1], 'i64', [1, 2]), u, 1, 'add'),
    [{ shape: [2, 3] }, { shape: [1, 2] }],
  ],
  ['TopK values, 2 largest of 5 on the last axis', (_g, [a]) => a.topk(2)[0], [{ shape: [3, 5] }]],
  [
    'TopK values, 2 smallest along axis 0, scaled by their indices',
    (_g, [a]) => {
      const [v, i] = a.topk(2, 0, false);
      return v.mul(i.cast('f64').add(1));
    },
    [{ shape: [4, 3] }],
  ],
  ['Cast f64 -> f32 -> f64', (_g, [a]) => a.cast('f32').mul(3).cast('f64'), [{ shape: [3] }]],
  ['Trilu lower', (_g, [a]) => a.trilu(false), [{ shape: [3, 3] }]],
];

for (const [name, build, specs] of cases) {
  // ops that ORT runs in float32 only are checked through a cast, with a step and tolerance fit for float32
  const tol = name.startsWith('Cast') || name.includes('f32') ? { rtol: 2e-3, atol: 2e-3, h: 1e-3 } : {};
  test(`gradient: ${name}`, () => gradcheck(build, specs, tol));
}

// Runs after the cases above (tests in a file run in order).
test('every differentiable primitive is gradient-checked', () => {
  // The quantized products' rules are straight-through (rounding the input has derivative 0): finite differences
  // cannot see them, so test/graph/ops/quant.test.ts checks them against dY·W̃ within the quantization bound.
  const straightThrough = new Set(['DynamicQuantizeMatMul', 'MatMulNBits']);
  const differentiable = Object.entries(OPS)
    .filter(([k, d]) => typeof d.vjp === 'function' && !straightThrough.has(k))
    .map(([k]) => k);
  const missing = differentiable.filter((op) => !coveredOps.has(op));
  assert.deepEqual(missing, []);
});

test('TopK picks the k largest or smallest along an axis, sorted, equal values by lower index first (host sort)', async () => {
  const x = [3, 1, 3, -2, 0.5, 1, 7, 1, 1, -4, 2, 2];
  const g = new Graph('topk');
  const t = g.input('x', 'f32', [2, 6]);
  const [v, i] = t.topk(3);
  const [vs, is] = t.topk(2, 1, false);
  const [v0, i0] = t.topk(1, 0);
  for (const [k, y] of Object.entries({ v, i, vs, is, v0, i0 })) g.output(k, y);
  assert.deepEqual(v.shape, [2, 3]);
  assert.deepEqual(v0.shape, [1, 6]);
  assert.equal(i.dtype, 'i64');
  const out = await (await compile(g, { worker: false })).run({ x: Float32Array.from(x) });
  // host: a stable sort of (value, index) pairs, by value, then index
  const pick = (row: number[], k: number, largest: boolean) =>
    row
      .map((val, idx) => ({ val, idx }))
      .sort((a, b) => (largest ? b.val - a.val : a.val - b.val) || a.idx - b.idx)
      .slice(0, k);
  const rows = [x.slice(0, 6), x.slice(6)];
  const want = (k: number, largest: boolean) => rows.flatMap((r) => pick(r, k, largest));
  const ints = (a: ArrayLike<bigint>) => Array.from(a, Number);
  assert.deepEqual(
    Array.from(out.v.data as Float32Array),
    want(3, true).map((p) => p.val),
  );
  assert.deepEqual(
    ints(out.i.data as BigInt64Array),
    want(3, true).map((p) => p.idx),
  );
  assert.deepEqual(
    Array.from(out.vs.data as Float32Array),
    want(2, false).map((p) => p.val),
  );
  assert.deepEqual(
    ints(out.is.data as BigInt64Array),
    want(2, false).map((p) => p.idx),
  );
  const cols = [0, 1, 2, 3, 4, 5].map((c) => pick([x[c], x[6 + c]], 1, true)[0]);
  assert.deepEqual(
    Array.from(out.v0.data as Float32Array),
    cols.map((p) => p.val),
  );
  assert.deepEqual(
    ints(out.i0.data as BigInt64Array),
    cols.map((p) => p.idx),
  );
});

test('TopK refuses a K larger than its axis, naming both', () => {
  const g = new Graph('topk-bad');
  assert.throws(
    () => g.input('x', 'f32', [2, 3]).topk(4),
    (e: unknown) => e instanceof Error && e.message.includes('K = 4') && e.message.includes('0..3'),
  );
});
