// Graph.scan: one ONNX Scan node whose body runs once per slice; what the body computes from weights alone stays in
// the enclosing graph (once), the body's values cannot leak out, and no gradient crosses the Scan.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { type AttrGraph, Graph, grad, toOnnx } from '../../src/graph/index.ts';
import { compile } from '../../src/runtime/index.ts';
import { dedupeSubgraphInitializers } from '../../src/runtime/saved-model.ts';
import { assertAllclose } from '../helpers.ts';

const [C, n, D, K] = [3, 2, 4, 5];
const xs = Float32Array.from({ length: C * n * D }, (_, i) => Math.sin(i + 1));
const ws = Float32Array.from({ length: K * D }, (_, i) => Math.cos(i * 0.7));

/** y[c] = softmax(x[c]·Wᵀ)·W for each chunk c: the fused head's shape of work, with W used both ways. */
function build() {
  const g = new Graph('scan');
  const x = g.input('x', 'f32', [C, n, D]);
  const w = g.initializer('w', 'f32', [K, D], ws);
  const [y, s] = g.scan([x], ([h]) => {
    const p = h.matmul(w.transpose([1, 0])).softmax(-1); // [n, K]
    return [p.matmul(w), p.sum(-1)]; // [n, D], [n]
  });
  g.output('y', y);
  g.output('s', s);
  return { g, x, w, y, s };
}

test('a scan runs its body once per slice and stacks the outputs; weight-only nodes stay outside', async () => {
  const { g, y, s } = build();
  assert.deepEqual(
    [y.shape, s.shape],
    [
      [C, n, D],
      [C, n],
    ],
  );
  const live = g.liveNodes().filter((v) => v.op !== 'Identity'); // the outputs' names
  assert.deepEqual(
    live.map((v) => v.op),
    ['Transpose', 'Scan'],
  );
  const body = live[1].attrs.body as AttrGraph;
  assert.ok(!body.nodes.some((v) => v.op === 'Transpose'), "W's transpose is made once, outside");
  const out = await (await compile(g, { worker: false })).run({ x: { data: xs, shape: [C, n, D] } });
  const want: number[] = [];
  for (let c = 0; c < C; c++)
    for (let r = 0; r < n; r++) {
      const row = xs.subarray((c * n + r) * D, (c * n + r + 1) * D);
      const z = Array.from({ length: K }, (_, k) => row.reduce((t, v, d) => t + v * ws[k * D + d], 0));
      const e = z.map((v) => Math.exp(v - Math.max(...z)));
      const p = e.map((v) => v / e.reduce((a, b) => a + b));
      for (let d = 0; d < D; d++) want.push(p.reduce((t, v, k) => t + v * ws[k * D + d], 0));
    }
  assertAllclose(out.y.data as Float32Array, want, { rtol: 1e-5, what: 'y' });
  assertAllclose(out.s.data as Float32Array, new Float32Array(C * n).fill(1), { rtol: 1e-6, what: 'Σp' });
});

test("a scan's body values cannot be read outside it, and body outputs must come from the slices", () => {
  const g = new Graph('leak');
  const x = g.input('x', 'f32', [C, n, D]);
  let inner = x;
  const [y] = g.scan([x], ([h]) => [(inner = h.mul(2))]);
  g.output('y', y);
  g.output('leak', inner.add(1));
  assert.throws(
    () => toOnnx(g),
    (e: any) => e.code === 'LK_GRAPH_INVALID' && /inside Scan_\d+'s body/.test(e.message),
  );
  const c = g.scalar(1, 'f32');
  assert.throws(
    () => g.scan([x], () => [c.add(1)]),
    (e: any) => e.code === 'LK_GRAPH_INVALID',
  );
});

test('no gradient crosses a scan: not to a scanned input, nor to a value its body reads', () => {
  for (const via of ['scanned', 'read'] as const) {
    const g = new Graph('grad');
    const x = g.input('x', 'f32', [C, n, D]);
    const w = g.input('w', 'f32', [K, D]);
    const [y] = g.scan([via === 'scanned' ? x : x.detach()], ([h]) => [h.matmul(w.transpose([1, 0]))]);
    const target = via === 'scanned' ? x : w;
    assert.throws(
      () => grad(y.sum(), [target]),
      (e: any) => e.code === 'LK_NO_GRADIENT',
      via,
    );
  }
});

test('a model without repeated subgraph initializers is left as it is, byte for byte', () => {
  const bytes = toOnnx(build().g);
  assert.equal(dedupeSubgraphInitializers(bytes), bytes);
});
