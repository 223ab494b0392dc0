// Linear math in both weight layouts against plain JS, its gradients (input, weight, bias) against finite
// differences, and createContext's hook routing and module caching.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Graph } from '../../src/graph/index.ts';
import { type ModuleInfo, WeightSource, createContext, linearForward } from '../../src/nn/index.ts';
import { compile } from '../../src/runtime/index.ts';
import { gradcheck } from '../graph/gradcheck.ts';
import { assertAllclose, randArray } from '../helpers.ts';

test(
  'linearForward computes x·Wᵀ + b for [out, in] and x·W + b for Conv1D [in, out], with symbolic ' + 'leading dims',
  async () => {
    const [N, IN, OUT] = [6, 5, 3];
    const x = Float32Array.from(randArray(N * IN, 1)),
      w = Float32Array.from(randArray(OUT * IN, 2)),
      b = Float32Array.from(randArray(OUT, 3));
    const wt = new Float32Array(IN * OUT); // [in, out]
    for (let o = 0; o < OUT; o++) for (let i = 0; i < IN; i++) wt[i * OUT + o] = w[o * IN + i];
    const ref = new Float32Array(N * OUT);
    for (let n = 0; n < N; n++)
      for (let o = 0; o < OUT; o++) {
        let s = b[o];
        for (let i = 0; i < IN; i++) s += x[n * IN + i] * w[o * IN + i];
        ref[n * OUT + o] = s;
      }
    const g = new Graph();
    const xi = g.input('x', 'f32', ['B', 'T', IN]);
    const y1 = linearForward(
      xi,
      g.initializer('w', 'f32', [OUT, IN], w),
      g.initializer('b', 'f32', [OUT], b),
      IN,
      OUT,
      false,
    );
    const y2 = linearForward(
      xi,
      g.initializer('wt', 'f32', [IN, OUT], wt),
      g.initializer('b2', 'f32', [OUT], b),
      IN,
      OUT,
      true,
    );
    assert.deepEqual(y1.shape, ['B', 'T', OUT]);
    g.output('y1', y1);
    g.output('y2', y2);
    const out = await (await compile(g, { worker: false })).run({ x: { data: x, shape: [2, 3, IN] } });
    assert.deepEqual(out.y1.shape, [2, 3, OUT]);
    assertAllclose(out.y1.data as Float32Array, ref, { rtol: 1e-5, atol: 1e-6, what: '[out, in]' });
    assertAllclose(out.y2.data as Float32Array, ref, { rtol: 1e-5, atol: 1e-6, what: 'Conv1D' });
    assert.throws(
      () => linearForward(g.input('z', 'f32', [2, 4]), g.initializer('w3', 'f32', [OUT, IN], w), null, IN, OUT, false),
      /\[2, 4\] does not end in in_features 5/,
    );
  },
);

test('gradient: a Linear [out, in] w.r.t. input, weight and bias', () =>
  gradcheck(
    (_g, [x, w, b]) => linearForward(x, w, b, 4, 3, false),
    [{ shape: [2, 2, 4] }, { shape: [3, 4] }, { shape: [3] }],
  ));

test('gradient: a Conv1D [in, out] w.r.t. input and weight', () =>
  gradcheck((_g, [x, w]) => linearForward(x, w, null, 4, 3, true), [{ shape: [2, 4] }, { shape: [4, 3] }]));

test(
  'ctx.linear and ctx.embedding go through the hooks when set, else the base; each module is ' + 'built once',
  async () => {
    const modules: ModuleInfo[] = [
      { kind: 'linear', path: 'proj', inFeatures: 2, outFeatures: 2, weightName: 'proj.weight', biasName: null },
      { kind: 'embedding', path: 'emb', numEmbeddings: 3, dim: 2, weightName: 'emb.weight' },
    ];
    const overrides = new Map([
      ['proj.weight', Float32Array.from([1, 2, 3, 4])],
      ['emb.weight', Float32Array.from([0, 1, 10, 11, 20, 21])],
    ]);
    const g = new Graph();
    const calls: string[] = [];
    const ctx = createContext({
      graph: g,
      weights: new WeightSource(g, null, { overrides }),
      modules,
      config: {},
      hooks: {
        linear: (m, x) => {
          calls.push(`${m.path}:${m.inFeatures}x${m.outFeatures}:${m.fanInFanOut}`);
          return m.base(x).mul(10);
        },
      },
    });
    const y = ctx.linear('proj', ctx.embedding('emb', g.constant([2, 0], 'i64', [2])));
    assert.equal(ctx.linearModule('proj'), ctx.linearModule('proj'));
    assert.deepEqual(calls, ['proj:2x2:false']);
    assert.throws(() => ctx.linear('nope', y), /internal: model code asked for linear module 'nope'/);
    g.output('y', y);
    const out = await (await compile(g, { worker: false })).run({});
    // rows [20, 21] and [0, 1] times Wᵀ = [[1, 3], [2, 4]], times 10
    assert.deepEqual([...(out.y.data as Float32Array)], [620, 1440, 20, 40]);
  },
);
