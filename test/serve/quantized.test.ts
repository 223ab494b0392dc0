// Serving over a quantized base (serve/ with a model from quantizeModel): the batched graph multiplies by the
// frozen weights through the integer kernels, a mixed batch gives each row the greedy tokens generate() gives it
// on the same quantized base, the served log-probabilities are those of the quantized model's own forward, and its
// logits stay within the documented distance of the float model's (docs/quantization.md, "Serving").
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { LorakitError } from '../../src/errors.ts';
import { Graph } from '../../src/graph/index.ts';
import type { HfTokenizer } from '../../src/io/index.ts';
import { type LoadedModel, buildCausalLM, quantizeModel } from '../../src/models/index.ts';
import { type QuantInputs, kernelsFor } from '../../src/nn/index.ts';
import { cpuFeatures } from '../../src/io/host.ts';
import { compile, shutdownRuntime } from '../../src/runtime/index.ts';
import { buildBatchGraph, createEngine, loraTargets } from '../../src/serve/index.ts';
import { fixture, makeAdapters, reference } from './helpers.ts';

let model: LoadedModel;
let tokenizer: HfTokenizer;
let root: string;

before(async () => {
  ({ model, tokenizer } = await fixture());
  root = await makeAdapters(model); // made on the float base: an adapter file does not depend on the base's format
});
after(async () => {
  await model.close();
  await shutdownRuntime();
});

/** Logits [T, V] of one prompt through the model's plain forward graph (no cache, no serving code). */
async function forwardLogits(m: LoadedModel, ids: number[]): Promise<Float32Array> {
  const g = new Graph('forward-logits');
  const inputIds = g.input('input_ids', 'i64', [1, ids.length]);
  g.output('logits', buildCausalLM(m.context(g), { inputIds }).logits); // [1, T, V]
  const s = await compile(g, { worker: false });
  const out = await s.run({ input_ids: BigInt64Array.from(ids.map(BigInt)) });
  await s.dispose();
  return out.logits.data as Float32Array;
}

const logSoftmaxAt = (z: Float32Array, row: number, V: number, id: number) => {
  const r = z.subarray(row * V, (row + 1) * V);
  const m = Math.max(...r);
  return r[id] - m - Math.log(r.reduce((s, v) => s + Math.exp(v - m), 0));
};

const PROMPTS = [
  [1, 5, 9, 30],
  [1, 77, 3],
  [1, 200, 201, 202, 203, 17],
];
const NAMES = [null, 'r2', 'r4'];
const NEW = 8;
/**
 * Largest |quantized − float| logit as a fraction of the largest float logit. To first order each of the fixture's
 * 14 quantized products (2 layers × q, k, v, o, gate, up, down) errs by half a weight step times Σ|x|: 1/254 of its
 * block's largest weight for int8's 8-bit blocks, up to 1/8 of its block's for q4 (1/16 on the unclamped side),
 * plus 1/255 of the activation row. Relative to the output's own scale that is a few ‰ (int8) and a few % (q4) per
 * product on random weights; summed over the path to the logits, about 3 % and 15 %. Allowed: 5 % and 25 %.
 */
const LOGIT_BOUND = { int8: 0.05, q4: 0.25 };

for (const mode of ['int8', 'q4'] as const) {
  test(`${mode} base: served rows equal generate() on the same base, and the logits stay near the float model's`, async () => {
    const q = await quantizeModel(model, mode, { cacheDir: false });
    const spec = { cache: model.cache!, targets: loraTargets(q, null), slots: 2, rank: 4, tokens: 64 };
    const ops = new Set(
      buildBatchGraph(q, spec)
        .liveNodes()
        .map((n) => n.op),
    );
    // the forward products are block products, or for int8 on a CPU whose kernels are int8-rows, per-row ones
    const rows = mode === 'int8' && q.quantKernels?.inputs === 'int8-rows';
    assert.ok(ops.has(rows ? 'DynamicQuantizeMatMul' : 'MatMulNBits'), [...ops].join(' '));
    assert.ok(
      !buildBatchGraph(model, spec)
        .liveNodes()
        .some((n) => /Quant|NBits/.test(n.op)),
      'float graph is float',
    );

    const engine = await createEngine({ model: q, tokenizer, adapterDir: root, maxLoras: 4, kvCacheMemory: 2 ** 20 });
    try {
      const served = await Promise.all(
        NAMES.map((adapter, i) =>
          engine.generate({
            adapter,
            promptIds: PROMPTS[i],
            maxTokens: NEW,
            sampling: { temperature: 0 },
            ignoreEos: true,
            logprobs: 0,
          }),
        ),
      );
      const V = model.config.vocab_size;
      let worst = 0;
      let scale = 0;
      for (let i = 0; i < NAMES.length; i++) {
        const ids = served[i].choices[0].tokenIds;
        const ref = await reference(q, tokenizer, NAMES[i] && join(root, NAMES[i]!), PROMPTS[i], NEW);
        assert.deepEqual(ids, ref, `${NAMES[i] ?? 'base'}: served tokens = generate()'s on the ${mode} base`);
        if (NAMES[i] !== null) continue;
        // the base row: its log-probabilities are the quantized forward's, and that forward is near the float one
        const seq = [...PROMPTS[i], ...ids];
        const zq = await forwardLogits(q, seq);
        const zf = await forwardLogits(model, seq);
        const lps = served[i].choices[0].logprobs!;
        for (let t = 0; t < NEW; t++) {
          const row = PROMPTS[i].length - 1 + t;
          const want = logSoftmaxAt(zq, row, V, ids[t]);
          // the batch's activation grid is per tensor over all rows (after each row is scaled to its maximum), the
          // forward's over this row alone: the two differ by activation rounding, ≤ 1/255 per product (measured 2e-3)
          assert.ok(Math.abs(lps[t].logprob - want) < 1e-2, `token ${t}: served ${lps[t].logprob}, forward ${want}`);
        }
        for (let k = 0; k < zf.length; k++) {
          worst = Math.max(worst, Math.abs(zq[k] - zf[k]));
          scale = Math.max(scale, Math.abs(zf[k]));
        }
      }
      // docs/quantization.md, "Serving": measured 3.1 % (int8) and 17 % (q4) of the largest float logit here
      assert.ok(scale > 0.5, `the fixture's logits are not all near zero (${scale})`);
      assert.ok(worst <= LOGIT_BOUND[mode] * scale, `max |Δlogit| ${worst} > ${LOGIT_BOUND[mode]} × ${scale}`);
      assert.ok(worst > 0, 'the quantized logits differ from the float ones at all');
    } finally {
      await engine.close();
      await engine.parts.session.dispose();
    }
  });
}

test('a bad quantize mode is refused by name before anything is built', async () => {
  await assert.rejects(
    quantizeModel(model, 'int4' as 'int8'),
    (e) =>
      e instanceof LorakitError && e.code === 'LK_INVALID_ARGUMENT' && /none, int8 or q4, got int4/.test(e.message),
  );
});

test("int8's kernels: auto follows the CPU's dot-product flags, a choice sets the forward's op and codes", async () => {
  const [float8, blocks] = [{ inputs: 'float', codes: 'u8', vocab: 'blocks' }, { vocab: 'blocks' }];
  assert.deepEqual(kernelsFor(new Set()), float8); // no /proc/cpuinfo (macOS, a browser)
  assert.deepEqual(kernelsFor(new Set(['avx2', 'fma', 'avx512f'])), float8);
  for (const flag of ['avx512_vnni', 'avx_vnni'])
    assert.deepEqual(kernelsFor(new Set(['avx2', flag])), { inputs: 'int8-rows', codes: 's8', ...blocks }, flag);
  // AMX: the head's vocabulary gradient as residual rows (its MatMulNBits blocks run slower than float32 there)
  const amx = kernelsFor(new Set(['avx512_vnni', 'amx_int8']));
  assert.deepEqual(amx, { inputs: 'int8-rows', codes: 's8', vocab: 'residual' });
  assert.deepEqual(kernelsFor(new Set(['asimd', 'asimddp'])), { inputs: 'int8', codes: 'u8', ...blocks });
  const spec = { cache: model.cache!, targets: loraTargets(model, null), slots: 1, rank: 4, tokens: 16 };
  const ops = async (inputs: 'auto' | QuantInputs, codes: 'auto' | 'u8' | 's8' = 'u8') => {
    const q = await quantizeModel(model, 'int8', { cacheDir: false, inputs, codes });
    const nodes = buildBatchGraph(q, spec).liveNodes();
    const dq = nodes.filter((n) => n.op === 'DynamicQuantizeMatMul');
    return {
      chosen: q.quantKernels,
      levels: new Set(nodes.filter((n) => n.op === 'MatMulNBits').map((n) => n.attrs.accuracy_level)),
      products: dq.length,
      codes: new Set(dq.map((n) => n.inputs[1]!.dtype)),
    };
  };
  const float = await ops('float');
  assert.deepEqual(float.levels, new Set([0]));
  assert.deepEqual((await ops('int8')).levels, new Set([4]));
  // int8-rows: no block product at all, one DynamicQuantizeMatMul per Linear, on the codes asked for
  const rows = await ops('int8-rows', 's8');
  assert.deepEqual(rows.chosen, { inputs: 'int8-rows', codes: 's8', vocab: kernelsFor(cpuFeatures()).vocab });
  assert.deepEqual(rows.levels, new Set());
  assert.ok(rows.products > 0);
  assert.deepEqual(rows.codes, new Set(['i8']));
  assert.deepEqual((await ops('auto', 'auto')).chosen, kernelsFor(cpuFeatures()));
  await assert.rejects(
    quantizeModel(model, 'int8', { vocab: 'rows' as 'blocks' }),
    (e) => e instanceof LorakitError && /auto, blocks, residual or float, got rows/.test(e.message),
  );
  await assert.rejects(
    quantizeModel(model, 'int8', { inputs: 'int4' as 'int8' }),
    (e) =>
      e instanceof LorakitError &&
      e.code === 'LK_INVALID_ARGUMENT' &&
      /auto, float, int8 or int8-rows, got int4/.test(e.message),
  );
  await assert.rejects(
    quantizeModel(model, 'int8', { codes: 'i4' as 'u8' }),
    (e) => e instanceof LorakitError && /auto, u8 or s8, got i4/.test(e.message),
  );
});
