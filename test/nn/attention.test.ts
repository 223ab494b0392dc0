// Attention masks (causal with a cache offset, padding, sliding window), GQA head repetition in transformers'
// repeat_kv order, and the causal square computed as query blocks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Graph, grad } from '../../src/graph/index.ts';
import { Rng } from '../../src/linalg/index.ts';
import { attention, attentionMask, repeatKv } from '../../src/nn/index.ts';
import { compile } from '../../src/runtime/index.ts';

test('attentionMask: query t at cache position P + t sees keys s <= P + t, not padding, within the window', async () => {
  const g = new Graph();
  const pad = g.input('mask', 'i64', [2, 'S']);
  const common = { attentionMask: pad, queryLen: g.constInts([2], []), pastLen: g.constInts([3], []) };
  g.output('causal', attentionMask(g, { ...common, causal: true })!.allowed);
  g.output('window', attentionMask(g, { ...common, causal: true, slidingWindow: 2 })!.allowed);
  g.output('bidirectional', attentionMask(g, { ...common, causal: false })!.allowed);
  const out = await (await compile(g, { worker: false })).run({ mask: { data: BigInt64Array.from([1, 1, 1, 1, 1, 0, 0, 1, 1, 1].map(BigInt)), shape: [2, 5] } });
  const rows = (k: string) => Array.from(out[k].data as Uint8Array).join('');
  assert.deepEqual(out.causal.shape, [2, 1, 2, 5]);
  // row 0 (no padding): t=0 sees 0..3, t=1 sees 0..4; row 1 has two left pads
  assert.equal(rows('causal'), '11110' + '11111' + '00110' + '00111');
  assert.equal(rows('window'), '00110' + '00011' + '00110' + '00011');
  assert.equal(rows('bidirectional'), '11111' + '00111');
});

test('repeatKv repeats each kv head for consecutive query heads (transformers\' repeat_kv)', async () => {
  const g = new Graph();
  const x = g.input('x', 'f32', [1, 2, 'S', 1]);
  const y = repeatKv(x, 3);
  assert.deepEqual(y.shape, [1, 6, 'S', 1]);
  g.output('y', y);
  const out = await (await compile(g, { worker: false })).run({ x: { data: Float32Array.from([1, 2, 3, 4]), shape: [1, 2, 2, 1] } });
  assert.deepEqual([...(out.y.data as Float32Array)], [1, 2, 1, 2, 1, 2, 3, 4, 3, 4, 3, 4]);
});

test('causal attention over query blocks equals the full square, values and gradients (float64)', async () => {
  const [B, H, T, hd] = [2, 3, 256, 8];
  const build = (blocked: boolean) => {
    const g = new Graph();
    const [q, k, v] = ['q', 'k', 'v'].map((n) => g.input(n, 'f64', [B, H, T, hd]));
    const m = attentionMask(g, { causal: true, queryLen: g.constInts([T], []), pastLen: g.constInts([0], []), slidingWindow: 100, noPast: blocked })!;
    assert.equal(m.causalNoPast, blocked);
    const o = attention(q, k, v, m, { scale: 0.3 });
    const w = g.input('w', 'f64', [B, H, T, hd]); // a loss whose gradient differs per output element
    const [dq, dk, dv] = grad(o.mul(w).sum(), [q, k, v]);
    g.output('o', o); g.output('dq', dq); g.output('dk', dk); g.output('dv', dv);
    return g;
  };
  const rng = new Rng(5);
  const feeds = Object.fromEntries(['q', 'k', 'v', 'w'].map((n) => [n, { data: Float64Array.from(rng.normalArray(B * H * T * hd, 1)), shape: [B, H, T, hd] }]));
  const [blocked, full] = [build(true), build(false)];
  const matmuls = (g: Graph) => g.nodes.filter((n) => n.op === 'MatMul').length;
  assert.ok(matmuls(blocked) > matmuls(full), 'the blocked graph runs one Q·Kᵀ and P·V per block');
  const [a, b] = await Promise.all([blocked, full].map(async (g) => (await compile(g, { worker: false })).run(feeds)));
  for (const name of ['o', 'dq', 'dk', 'dv']) {
    const [x, y] = [a[name].data as Float64Array, b[name].data as Float64Array];
    let worst = 0;
    for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i] - y[i]));
    assert.ok(worst < 1e-12, `${name}: max |blocked − full| = ${worst}`);
  }
});
