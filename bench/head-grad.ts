/**
 * How exact the quantized tied head's input gradient is on real text: E = (softmax − one-hot)·W̃ for SmolLM2 (from
 * the shared GGUF) with `quantize: int8, quantize_head`, on 4 × 256 tokens of Pride and Prejudice: through each
 * integer path of int8-rows CPUs (VocabBackward's blocks, VocabResidual's rows rounded twice), as the training loss
 * takes it (softmax·W̃ − W̃[target]) and with the one-hot inside the rounded product ((softmax − one-hot)·W̃), in
 * float32 against W̃ itself (the exact gradient of the forward the step runs) and against the float embedding W (the
 * path before VocabBackward). Prints each one's relative error against the exact one (Frobenius norms over the batch).
 *   node --import tsx bench/head-grad.ts
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Graph } from '../src/graph/index.ts';
import { HfTokenizer } from '../src/io/index.ts';
import { buildCausalLM, loadModel, quantizeModel } from '../src/models/index.ts';
import { compile, shutdownRuntime } from '../src/runtime/index.ts';

const SHARED = join(import.meta.dirname, '..', '..', 'shared', 'data');
const GGUF = join(SHARED, 'models', 'smollm2-135m-instruct-q4_1', 'SmolLM2-135M-Instruct.Q4_1.gguf');
const [B, T] = [4, 256];

async function main(): Promise<void> {
  const model = await loadModel(GGUF);
  const tok = await HfTokenizer.fromDir(model.dir);
  const text = readFileSync(join(SHARED, 'pride_and_prejudice', '1342-0.txt'), 'utf8').slice(20_000, 80_000);
  const ids = tok.encode(text, { addSpecialTokens: false }).slice(0, B * T + 1);
  const N = B * T;
  console.log(`E over ${N} tokens of Pride and Prejudice, SmolLM2 int8 + quantized head, relative to dz·W̃:`);
  for (const vocab of ['blocks', 'residual'] as const) {
    const q = await quantizeModel(model, 'int8', { head: true, inputs: 'int8-rows', vocab });
    const g = new Graph('head-grad');
    const ctx = q.context(g);
    const input = g.input('input_ids', 'i64', [B, T]);
    const out = buildCausalLM(ctx, { inputIds: input });
    const head = out.frozenHead;
    if (!head) throw new Error('the head is not frozen: no separate input gradient');
    const h = out.hidden.reshape([N, -1]).detach();
    const logits = out.lmHead(h); // [N, V]: the quantized forward
    const targets = g.constant(BigInt64Array.from(ids.slice(1), BigInt), 'i64', [N, 1]);
    const lp = g.op('LogSoftmax', [logits], { axis: -1 });
    const dz = lp.exp().scatterElements(targets, g.scalar(-1, 'f32').expand([N, 1]), 1, 'add'); // softmax − one-hot
    const lin = ctx.linearModule('lm_head');
    // as the training loss takes it (loss.ts eagerHeadNll): softmax·W̃ − W̃[target]; and (softmax − one-hot)·W̃ whole
    g.output('kernel', head.inputGrad(lp.exp(), h).sub(head.rows(targets.reshape([N]))));
    g.output('kernelDz', head.inputGrad(dz, h));
    g.output('exact', dz.matmul(lin.weight)); // W̃ [V, D], dequantized
    g.output('float', dz.matmul(ctx.embeddingModule('model.embed_tokens').weight));
    const s = await compile(g, { worker: false });
    const r = await s.run({ input_ids: { data: BigInt64Array.from(ids.slice(0, N), BigInt), shape: [B, T] } });
    await s.dispose();
    const exact = r.exact.data as Float32Array;
    const rel = (a: Float32Array) => {
      let [num, den] = [0, 0];
      for (let k = 0; k < a.length; k++) [num, den] = [num + (a[k] - exact[k]) ** 2, den + exact[k] ** 2];
      return Math.sqrt(num / den);
    };
    const [p, whole] = [rel(r.kernel.data as Float32Array), rel(r.kernelDz.data as Float32Array)];
    console.log(
      `  int8-rows, ${vocab}: softmax·W̃ − W̃[t] ${p.toExponential(2)}; (softmax − 1ₜ)·W̃ ${whole.toExponential(2)}`,
    );
    if (vocab === 'blocks')
      console.log(`  float32 dz·W (the float embedding):  ${rel(r.float.data as Float32Array).toExponential(2)}`);
  }
  await model.close();
  await shutdownRuntime();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
