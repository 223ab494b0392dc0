// The training graph's fused head and loss (causalLmLoss's `headChunkRows`, loss.ts `eagerHeadNll`): the loss, its
// parts and every trained tensor's gradient equal the plain path's in float64 (one Scan over equal chunks, padded
// when they do not divide the rows; ignored labels), no [N, V] tensor is left in the graph, a head that trains or
// that a hook adapts keeps the plain path (the hook runs once), and an int8 head, tied or not, takes the fused path
// too.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { type AttrGraph, Graph, type Node, type Tensor, grad } from '../../src/graph/index.ts';
import { loadModel, quantizeModel, type LoadedModel } from '../../src/models/index.ts';
import type { ModuleHooks } from '../../src/nn/index.ts';
import { compile, shutdownRuntime } from '../../src/runtime/index.ts';
import { causalLmLoss } from '../../src/train/loss.ts';
import { assertAllclose } from '../helpers.ts';

after(shutdownRuntime);

const root = new URL('../../', import.meta.url).pathname;
const [B, T, V] = [3, 8, 384];
const N = B * (T - 1); // 21 predicted positions: at most 8 rows a chunk makes 3 chunks of 7
const ids = BigInt64Array.from({ length: B * T }, (_, i) => BigInt((i * 37 + 11) % V));
const labels = BigInt64Array.from(ids, (v, i) => (i % T === 2 || i % 7 === 5 ? -100n : v));

/** Loss parts and the gradients of `trainable` (f64), with the head fused in chunks of `rows` or plain. */
async function run(model: LoadedModel, trainable: string[], rows?: number, dtype: 'f32' | 'f64' = 'f64') {
  const g = new Graph('eager-head');
  const inputIds = g.input('input_ids', 'i64', [B, T]);
  const lab = g.input('labels', 'i64', [B, T]);
  const ctx = model.context(g, { dtype, trainable });
  const out = causalLmLoss({ ctx, inputIds, labels: lab, labelsAre: 'aligned', headChunkRows: rows });
  const ws = trainable.map((n) => ctx.weights.inputs.get(n)!);
  grad(out.loss, ws).forEach((d, i) => g.output(`d${i}`, d));
  g.output('loss', out.loss);
  g.output('nll_sum', out.nllSum);
  g.output('count', out.count);
  // the row counts of every live [rows, V] tensor, in the graph or a Scan's body
  const body = (n: Node) => (n.attrs.body as AttrGraph | undefined)?.nodes ?? [];
  const vRows = new Set(
    g
      .liveNodes()
      .flatMap((n) => [n, ...body(n)])
      .flatMap((n) => n.outputs)
      .filter((t: Tensor) => t.rank === 2 && t.shape[1] === V)
      .map((t) => t.shape[0]),
  );
  const s = await compile(g, { worker: false, optimization: 'disabled' });
  const feeds: Record<string, Float32Array | Float64Array | { data: BigInt64Array; shape: number[] }> = {
    input_ids: { data: ids, shape: [B, T] },
    labels: { data: labels, shape: [B, T] },
  };
  for (const n of trainable) feeds[n] = (dtype === 'f64' ? Float64Array : Float32Array).from(await model.read(n));
  const r = await s.run(feeds);
  await s.dispose();
  return {
    loss: r.loss.data[0] as number,
    nllSum: r.nll_sum.data[0] as number,
    count: r.count.data[0] as number,
    grads: trainable.map((_, i) => Float64Array.from(r[`d${i}`].data as Float32Array | Float64Array)),
    vRows,
  };
}

for (const family of ['llama', 'gpt2'] as const) {
  test(`${family}: the fused head's loss and gradients equal the plain path's, with no [N, V] tensor`, async () => {
    const model = await loadModel(`${root}test/fixtures/models/${family}`);
    const names = model.parameters().map((p) => p.name);
    // a projection in the first layer (the gradient crosses every layer) and the final norm (right below the head)
    const trainable = [
      names.find((n) => /(layers|h)\.0\..*(q_proj|c_attn)\.weight$/.test(n))!,
      names.find((n) => /(model\.norm|ln_f)\.weight$/.test(n))!,
    ];
    assert.equal(trainable.filter(Boolean).length, 2, `found ${trainable.join(', ')}`);
    const plain = await run(model, trainable);
    const fused = await run(model, trainable, 8);
    assert.ok(plain.vRows.has(N), 'the plain path builds the [N, V] logits');
    assert.deepEqual([...fused.vRows], [7], 'the fused path builds chunks of logits only');
    assert.equal(fused.count, plain.count);
    assert.ok(plain.count < N, 'some labels are ignored');
    const padded = await run(model, trainable, 5); // 5 chunks of 5 rows, the last with 4 padding rows
    assert.deepEqual([...padded.vRows], [5]);
    for (const r of [fused, padded]) {
      assertAllclose([r.loss, r.nllSum], [plain.loss, plain.nllSum], { rtol: 1e-12, atol: 0, what: 'loss' });
      for (let i = 0; i < trainable.length; i++) {
        assert.ok(
          plain.grads[i].some((x) => x !== 0),
          `${trainable[i]} has a gradient`,
        );
        assertAllclose(r.grads[i], plain.grads[i], { rtol: 1e-9, atol: 1e-14, what: `d/d ${trainable[i]}` });
      }
    }
    await model.close();
  });
}

test('a head that trains keeps the plain path and gets its gradient', async () => {
  const model = await loadModel(`${root}test/fixtures/models/llama`);
  const head = 'lm_head.weight';
  const plain = await run(model, [head]);
  const fused = await run(model, [head], 8);
  assert.ok(fused.vRows.has(N), 'the logits are built whole');
  assert.ok(plain.grads[0].some((x) => x !== 0));
  assertAllclose(fused.grads[0], plain.grads[0], { rtol: 1e-12, atol: 0, what: 'd/d lm_head' });
  await model.close();
});

// gpt2's head is tied: E multiplies by the float embedding the graph holds anyway; llama's is not: E goes through the
// head's int8 backward copy, the same product the plain path's rules use.
for (const [family, trainable] of [
  ['gpt2', ['transformer.ln_f.weight', 'transformer.h.0.ln_1.weight']],
  ['llama', ['model.norm.weight', 'model.layers.0.input_layernorm.weight']],
] as const) {
  test(`${family}: an int8 head takes the fused path, no further from float gradients than the plain one`, async () => {
    // Each chunk picks its own 32 float columns (int8-rows), so the logits may round differently per chunk than over
    // the whole batch.
    const float = await loadModel(`${root}test/fixtures/models/${family}`);
    const opts = { head: true, cacheDir: false, inputs: 'int8-rows', codes: 'u8' } as const;
    const model = await quantizeModel(float, 'int8', opts);
    const plain = await run(model, [...trainable], undefined, 'f32');
    const fused = await run(model, [...trainable], 8, 'f32');
    assert.ok(plain.vRows.has(N));
    assert.ok(!fused.vRows.has(N) && fused.vRows.has(7), 'chunks only ([32, V]: the outlier columns of W)');
    const exact = await run(float, [...trainable], undefined, 'f32');
    const rel = (a: Float64Array, b: Float64Array) =>
      Math.sqrt(a.reduce((t, x, i) => t + (x - b[i]) ** 2, 0) / b.reduce((t, x) => t + x * x, 0));
    // the int8 base's own error (its backward quantizes each output gradient row to 8 bits) is ~1–6 % here; the
    // fused path must not add to it beyond noise (tied: E multiplies by the float W everywhere, the plain path's
    // rules by W̃ on each chunk's 32 outlier columns, 1.1–1.2× either way on these weights), and the loss must
    // agree to float32 rounding of the per-chunk column choice
    assertAllclose([fused.loss], [plain.loss], { rtol: 1e-4, atol: 0, what: 'loss' });
    for (let i = 0; i < trainable.length; i++) {
      const [errPlain, errFused] = [rel(plain.grads[i], exact.grads[i]), rel(fused.grads[i], exact.grads[i])];
      assert.ok(errPlain > 0 && errPlain < 0.1, `${trainable[i]}: the int8 base's error ${errPlain}`);
      assert.ok(errFused <= 1.25 * errPlain, `${trainable[i]}: fused error ${errFused} against plain ${errPlain}`);
    }
    await float.close();
    await model.close();
  });
}

test('a hook that adapts the head keeps the plain path, decided up front; one that does not, fuses', async () => {
  const model = await loadModel(`${root}test/fixtures/models/llama`);
  const headGraphs = (adapts?: (path: string) => boolean) => {
    const g = new Graph('hooked');
    let headCalls = 0;
    const hooks: ModuleHooks = {
      // a side effect at the head (a routing term, say) must happen once, on the path whose loss is used
      linear: (m, x) => {
        if (m.path === 'lm_head') headCalls++;
        return m.base(x);
      },
      ...(adapts ? { adapts } : {}),
    };
    const ctx = model.context(g, { dtype: 'f64', hooks });
    const inputIds = g.input('input_ids', 'i64', [B, T]);
    const labels = g.input('labels', 'i64', [B, T]);
    const out = causalLmLoss({ ctx, inputIds, labels, labelsAre: 'aligned', headChunkRows: 8 });
    g.output('loss', out.loss);
    const whole = g
      .liveNodes()
      .flatMap((n) => n.outputs)
      .some((t: Tensor) => t.rank === 2 && t.shape[0] === N && t.shape[1] === V);
    return { headCalls, whole, adapted: ctx.adapted('lm_head') };
  };
  assert.deepEqual(headGraphs(), { headCalls: 1, whole: true, adapted: true }, 'hooks that do not say: adapted');
  assert.deepEqual(
    headGraphs((p) => p === 'lm_head'),
    { headCalls: 1, whole: true, adapted: true },
  );
  assert.deepEqual(
    headGraphs((p) => p !== 'lm_head'),
    { headCalls: 1, whole: false, adapted: false },
    '21 rows / 8: one Scan body over 3 chunks of 7',
  );
  const g = new Graph('trained');
  assert.equal(model.context(g, { trainable: ['lm_head.weight'] }).adapted('lm_head'), true, 'a trained head');
  assert.equal(model.context(g, {}).adapted('lm_head'), false);
  await model.close();
});
