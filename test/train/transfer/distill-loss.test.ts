// Trans-LoRA's distillation loss: the graph's KL and its gradient against a float64 host reference and central
// differences of that reference, plus the exact identities KL(p ‖ p) = 0 and ∂KL/∂z = (softmax(z) − p_t)/count.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Graph, grad } from '../../../src/graph/index.ts';
import { compile } from '../../../src/runtime/index.ts';
import { distillKl, distillKlHost } from '../../../src/train/transfer/index.ts';
import { assertAllclose, centralDifferences, randArray } from '../../helpers.ts';

const N = 5,
  V = 7;

/** log-softmax rows of x [N, V] on the host. */
function logSoftmaxHost(x: ArrayLike<number>): Float64Array {
  const out = new Float64Array(N * V);
  for (let n = 0; n < N; n++) {
    let m = -Infinity;
    for (let v = 0; v < V; v++) m = Math.max(m, x[n * V + v]);
    let z = 0;
    for (let v = 0; v < V; v++) z += Math.exp(x[n * V + v] - m);
    for (let v = 0; v < V; v++) out[n * V + v] = x[n * V + v] - m - Math.log(z);
  }
  return out;
}

async function klGraph() {
  const g = new Graph('kd');
  const z = g.input('z', 'f64', [N, V]);
  const lt = g.input('lt', 'f64', [N, V]);
  const w = g.input('w', 'f64', [N]);
  const { loss } = distillKl(z, lt, w);
  g.output('loss', loss);
  g.output('dz', grad(loss, [z])[0]);
  return compile(g);
}

test('distillKl: value and gradient match the float64 host KL and its central differences', async () => {
  const session = await klGraph();
  const z = randArray(N * V, 1, -3, 3);
  const lt = logSoftmaxHost(randArray(N * V, 2, -3, 3));
  const w = Float64Array.from([1, 0, 1, 1, 0]); // two padded positions do not count
  const out = await session.run({ z, lt, w });
  const host = distillKlHost(z, lt, w, V);
  assertAllclose([Number(out.loss.data[0])], [host], { rtol: 1e-12, atol: 1e-12, what: 'KL' });
  const numeric = await centralDifferences(z, 1e-6, async () => distillKlHost(z, lt, w, V));
  assertAllclose(out.dz.data as Float64Array, numeric, { rtol: 1e-6, atol: 1e-8, what: 'dKL/dz' });
  // padded rows get no gradient at all
  for (let v = 0; v < V; v++) assert.equal(Number(out.dz.data[1 * V + v]), 0);
  await session.dispose();
});

test('distillKl: KL(p ‖ p) = 0 and the gradient is (softmax(z) − p_t) / count exactly', async () => {
  const session = await klGraph();
  const z = randArray(N * V, 3, -2, 2);
  const w = new Float64Array(N).fill(1);
  const same = await session.run({ z, lt: logSoftmaxHost(z), w });
  assert.ok(Math.abs(Number(same.loss.data[0])) < 1e-14, `KL(p‖p) = ${same.loss.data[0]}`);
  const lt = logSoftmaxHost(randArray(N * V, 4, -2, 2));
  const out = await session.run({ z, lt, w });
  const ls = logSoftmaxHost(z);
  const expected = Float64Array.from(ls, (l, i) => (Math.exp(l) - Math.exp(lt[i])) / N);
  assertAllclose(out.dz.data as Float64Array, expected, { rtol: 1e-10, atol: 1e-14, what: 'softmax − p_t' });
  await session.dispose();
});
