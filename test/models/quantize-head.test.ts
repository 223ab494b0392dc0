// The optional quantized output head (quantizeModel's `head`, run config `quantize_head`) on the toy model: the head
// joins the quantized weights, the step's loss and the adapter's gradients stay within the bound derived below of
// the same step with a float head, and a head that would be trained or replaced is refused by name.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { LorakitError } from '../../src/errors.ts';
import { Graph, grad } from '../../src/graph/index.ts';
import { buildCausalLM, loadModel, quantizeBase, quantizeModel, refuseTrainedHead } from '../../src/models/index.ts';
import { join } from 'node:path';
import { FIXTURES } from './helpers.ts';
import { dequantize } from '../../src/nn/index.ts';
import { PeftModel } from '../../src/peft/index.ts';
import { compile, shutdownRuntime } from '../../src/runtime/index.ts';
import { IDS, LABELS, MODULES, O, toyBase, toyLoss, toyWeights } from '../peft/toy.ts';

after(shutdownRuntime);

const CONFIG = { r: 2, lora_alpha: 3, target_modules: ['q_proj', 'c_fc'], init_lora_weights: false };
const read = async (n: string) => Float32Array.from(toyWeights().get(n)!);

/** The toy step's loss and adapter gradients with these quantized weights. */
async function step(peft: PeftModel, quantized: Awaited<ReturnType<typeof quantizeBase>>['weights']) {
  const g = new Graph('head-step');
  const { loss, binding, hidden } = toyLoss(g, peft, 'default', { training: false, quantized });
  const handles = binding.trainables();
  grad(
    loss,
    handles.map((h) => h.tensor),
  ).forEach((d, i) => g.output(`d${i}`, d));
  g.output('loss', loss);
  g.output('hidden', hidden); // [2, 4, O]: the head's input
  const ops = g.liveNodes().map((n) => n.op);
  const s = await compile(g, { worker: false });
  const out = await s.run({ ids: IDS, labels: LABELS, ...Object.fromEntries(peft.trainableValues('default')) });
  await s.dispose();
  return {
    loss: out.loss.data[0] as number,
    hidden: out.hidden.data as Float32Array,
    grads: handles.map((h, i) => ({ name: h.tensor.name, g: out[`d${i}`].data as Float32Array })),
    ops,
  };
}

for (const mode of ['int8', 'q4'] as const) {
  test(`${mode} head: loss and adapter gradients within the derived bound of the float head`, async () => {
    const peft = new PeftModel(toyBase());
    await peft.addAdapter('default', CONFIG, { seed: 3 });
    const blocks = await quantizeBase(MODULES, read, mode);
    const withHead = await quantizeBase(MODULES, read, mode, undefined, { head: true });
    assert.equal(blocks.head, null);
    assert.deepEqual(withHead.head, { path: 'lm_head', weightName: 'lm_head.weight' });
    assert.deepEqual([...withHead.weights.keys()].sort(), [...blocks.weights.keys(), 'lm_head.weight'].sort());

    const float = await step(peft, blocks.weights); // the same quantized blocks, the head in float
    const quant = await step(peft, withHead.weights);
    const count = (ops: string[]) => ops.filter((o) => o === 'DynamicQuantizeMatMul' || o === 'MatMulNBits').length;
    assert.equal(count(quant.ops), count(float.ops) + 2, 'the head forward and input gradient are integer products');

    // Loss bound. With c the head's input (the same in both steps: the blocks are the same), every logit moves by
    //   |z̃ₙᵥ − zₙᵥ| ≤ Σₖ|cₙₖ|·|W̃ᵥₖ − Wᵥₖ| + maxₖ|cₙₖ|/254 · Σₖ|W̃ᵥₖ| =: Bₙᵥ
    // (the weight's rounding, then the input row's 8-bit grid: test/graph/ops/quant.test.ts bounds (1) and (3)).
    // The cross-entropy logsumexp(zₙ) − zₙ,y moves by at most 2 maxᵥ Bₙᵥ, so the mean loss by at most 2B, B = max Bₙᵥ.
    const W = toyWeights().get('lm_head.weight')!; // [V, O]
    const Wq = dequantize(withHead.weights.get('lm_head.weight')!);
    const c = float.hidden;
    assert.deepEqual(quant.hidden, c);
    let B = 0;
    for (let n = 0; n < c.length / O; n++) {
      const row = c.subarray(n * O, (n + 1) * O);
      const r = Math.max(...row.map(Math.abs));
      for (let v = 0; v < W.length / O; v++) {
        let e = 0;
        for (let k = 0; k < O; k++) e += Math.abs(row[k]) * Math.abs(Wq[v * O + k] - W[v * O + k]);
        for (let k = 0; k < O; k++) e += (r / 254) * Math.abs(Wq[v * O + k]);
        B = Math.max(B, e);
      }
    }
    const dLoss = Math.abs(quant.loss - float.loss);
    assert.ok(dLoss > 0, 'the quantized head changes the loss at all');
    assert.ok(dLoss <= 2 * B, `|Δloss| ${dLoss} > 2B = ${2 * B}`);

    // Gradient bound (first order), relative to each tensor's largest entry: dL/dz = softmax − onehot moves by
    // Σᵥ|Δpᵥ| ≤ e^{2B} − 1 (each pᵥ by a factor within e^{±2B}); the input gradient dz·W̃ adds the weight's rounding
    // (Σᵥ|dzᵥ| ≤ 2, times maxᵥₖ|ΔW|, taken relative to max|W|) and dz's 8-bit grid (1/254). Downstream everything is
    // linear in that input gradient (tanh' ≤ 1), so each adapter gradient errs by about the same fraction of its
    // scale: tol = (e^{2B} − 1) + 2·max|ΔW|/max|W| + 1/254, plus 10 % for the first-order steps.
    const maxW = Math.max(...W.map(Math.abs));
    const maxDw = Math.max(...W.map((w, i) => Math.abs(Wq[i] - w)));
    const tol = 1.1 * (Math.expm1(2 * B) + (2 * maxDw) / maxW + 1 / 254);
    for (const [i, { name, g }] of float.grads.entries()) {
      const got = quant.grads[i].g;
      const scale = Math.max(...g.map(Math.abs));
      const worst = Math.max(...got.map((v, k) => Math.abs(v - g[k])));
      assert.ok(scale > 0, `${name}: the gradient is not zero`);
      assert.ok(worst <= tol * scale, `${name}: worst ${worst} > ${tol.toFixed(4)} × ${scale}`);
    }
  });
}

test('a quantized head that would be trained or replaced is refused, naming why', async () => {
  const model = await loadModel('test/fixtures/models/llama');
  try {
    const q = await quantizeModel(model, 'int8', { head: true, cacheDir: false });
    assert.deepEqual(q.quantizedBase!.head, { path: 'lm_head', weightName: 'lm_head.weight' });
    const refused = (re: RegExp) => (e: unknown) =>
      e instanceof LorakitError && e.code === 'LK_INVALID_ARGUMENT' && re.test(e.message);
    assert.throws(() => q.context(new Graph('t'), { trainable: ['lm_head.weight'] }), refused(/is trained here/));
    const overrides = new Map([['lm_head.weight', new Float32Array(1)]]);
    assert.throws(() => q.context(new Graph('o'), { overrides }), refused(/is replaced here/));
    assert.throws(() => refuseTrainedHead(q.quantizedBase, { saved: ['lm_head'] }), refused(/modules_to_save/));
    q.context(new Graph('ok'), { trainable: ['model.layers.0.self_attn.q_proj.bias'] }); // other weights: fine
    await assert.rejects(quantizeModel(model, 'none', { head: true }), refused(/mode is none/));
  } finally {
    await model.close();
  }
});

const [WTE, LM_HEAD] = ['transformer.wte.weight', 'lm_head.weight'];
const HEADS = [
  { model: 'gpt2', inputs: 'float', vocab: 'blocks', weight: WTE }, // tied: the float embedding
  { model: 'gpt2', inputs: 'int8-rows', vocab: 'blocks', weight: WTE },
  { model: 'llama', inputs: 'int8-rows', vocab: 'blocks', weight: LM_HEAD }, // untied: no float copy at all
  { model: 'gpt2', inputs: 'int8-rows', vocab: 'residual', weight: WTE },
  { model: 'llama', inputs: 'int8-rows', vocab: 'residual', weight: LM_HEAD },
  { model: 'gpt2', inputs: 'int8-rows', vocab: 'float', weight: WTE }, // asked for: the tied embedding's product
] as const;
for (const { model: name, inputs, vocab, weight } of HEADS)
  test(`a quantized head's input gradient keeps the small probabilities (${name}, ${inputs}, ${vocab})`, async () => {
    // dY over the vocabulary is one large entry and many small ones, as softmax − onehot is: an 8-bit grid per row
    // would drop the small ones (the many small probabilities that sum to much of the gradient). With float inputs
    // (AVX2) a tied head's E comes from the float embedding; with int8-rows (VNNI) any head's from W̃'s own codes,
    // dY rounded per block of 128 entries (graph/ops/quant.ts VocabBackward: bound (3) of
    // test/graph/ops/quant.test.ts), or (AMX) per row twice (VocabResidual: bound (4), ~7 % of each 1e-4 entry
    // here, a grid 254× finer than the row's step 1/127). This is the product the fused head's E uses.
    const model = await loadModel(join(FIXTURES, name));
    const q = await quantizeModel(model, 'int8', { head: true, cacheDir: false, inputs, codes: 'u8', vocab });
    const g = new Graph('head');
    const ids = g.input('input_ids', 'i64', [1, 5]);
    const out = buildCausalLM(q.context(g), { inputIds: ids });
    const V = out.logits.shape[2] as number;
    const D = out.hidden.shape[2] as number;
    // row t: 1 at its target, ±1e-4 outside the target's block of 128 (inside it a block grid drops them too)
    const target = (t: number) => (7 * t) % V;
    const R = new Float32Array(5 * V).map((_, k) => {
      const [t, v] = [Math.floor(k / V), k % V];
      if (v === target(t)) return 1;
      return v >> 7 === target(t) >> 7 ? 0 : 1e-4 * ((k % 3) - 1);
    });
    assert.ok(out.frozenHead, 'a frozen head');
    g.output('dh', out.frozenHead.inputGrad(g.constant(R, 'f32', [1, 5, V]), out.hidden));
    const s = await compile(g, { worker: false });
    const got = (await s.run({ input_ids: BigInt64Array.from([1n, 5n, 9n, 2n, 7n]) })).dh.data as Float32Array;
    await s.dispose();
    const w = q.quantizedBase!.weights.get(weight)!;
    assert.equal(w.kind, inputs === 'int8-rows' ? 'int8' : 'q8');
    const float = inputs === 'float' || vocab === 'float';
    const W = float ? await model.read(weight) : dequantize(w); // [V, D]
    let [err2, small2] = [0, 0]; // squared error, and the squared part of the small entries (a row grid's loss)
    for (let t = 0; t < 5; t++)
      for (let d = 0; d < D; d++) {
        let [want, abs, bound, small] = [0, 0, 0, 0];
        for (let v = 0; v < V; v++) {
          want += R[t * V + v] * W[v * D + d];
          abs += Math.abs(R[t * V + v] * W[v * D + d]);
          if (v !== target(t)) small += R[t * V + v] * W[v * D + d];
        }
        [err2, small2] = [err2 + (got[t * D + d] - want) ** 2, small2 + small ** 2];
        const block = vocab === 'residual' ? V : 128; // residual: the row's step, 254× finer
        if (!float && w.kind === 'int8')
          for (let v0 = 0; v0 < V; v0 += block) {
            let [amax, codes] = [0, 0];
            for (let v = v0; v < Math.min(V, v0 + block); v++) {
              amax = Math.max(amax, Math.abs(R[t * V + v] * w.scale[v]));
              codes += Math.abs(w.q[v * D + d]);
            }
            bound += (amax / (vocab === 'residual' ? 64516 : 254)) * codes;
          }
        assert.ok(
          Math.abs(got[t * D + d] - want) <= bound + 1e-5 * abs + 1e-12,
          `dh[${t}, ${d}] = ${got[t * D + d]}, R·W ${want}`,
        );
      }
    const keep = vocab === 'residual' ? 0.05 : 1e-4; // squared: within 22 % (1 %) of what a row grid drops
    assert.ok(err2 < keep * small2, `error ${Math.sqrt(err2)} against the small entries' ${Math.sqrt(small2)}`);
    await model.close();
  });
