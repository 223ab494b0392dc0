// The toy model (toy.ts) twice over, for method tests that compare a graph against a dense reference: its logits as
// lorakit's graph computes them with an adapter bound, and the same model recomputed on the host in float64 with
// explicit ΔW [out, in] matrices added to the adapted layers' weights (the reference y = x·(W0 + ΔW)ᵀ + b).
import assert from 'node:assert/strict';
import { Graph } from '../../src/graph/index.ts';
import type { PeftModel } from '../../src/peft/index.ts';
import { compile } from '../../src/runtime/index.ts';
import { assertAllclose } from '../helpers.ts';
import { D, H, IDS, MODULES, O, toyForward, toyWeights, V } from './toy.ts';

/** Logits [2, 4, V] of the toy model with `peft`'s active adapters (merged ones through the weight overrides). */
export async function graphLogits(peft: PeftModel): Promise<Float32Array> {
  const g = new Graph('toy-host');
  const ids = g.input('ids', 'i64', [2, 4]);
  const w = toyWeights();
  for (const [k, v] of peft.weightOverrides()) w.set(k, v);
  g.output('logits', toyForward(g, ids, w, peft.hooks()).logits);
  return (await (await compile(g, { worker: false })).run({ ids: IDS })).logits.data as Float32Array;
}

/** The toy model in float64 on the host, with ΔW [out, in] (by module path) added to the adapted layers. */
export function hostLogits(deltas: ReadonlyMap<string, ArrayLike<number>>): Float64Array {
  const w = toyWeights();
  const N = IDS.length; // B·T rows
  // x [N, in] · (W + ΔW)ᵀ + b; the stored W is [out, in], or [in, out] for GPT-2's Conv1D
  const linear = (x: Float64Array, path: string, inn: number, out: number) => {
    const m = MODULES.find((q) => q.path === path)!;
    const W = w.get(m.weightName)!;
    const b = m.kind !== 'embedding' && m.biasName ? w.get(m.biasName)! : null;
    const dW = deltas.get(path);
    const y = new Float64Array(N * out);
    for (let n = 0; n < N; n++)
      for (let j = 0; j < out; j++) {
        let s = b ? b[j] : 0;
        for (let k = 0; k < inn; k++) {
          const wjk = (m.kind === 'conv1d' ? W[k * out + j] : W[j * inn + k]) + (dW ? dW[j * inn + k] : 0);
          s += x[n * inn + k] * wjk;
        }
        y[n * out + j] = s;
      }
    return y;
  };
  const E = w.get('model.embed_tokens.weight')!;
  const h = new Float64Array(N * D);
  for (let n = 0; n < N; n++) for (let k = 0; k < D; k++) h[n * D + k] = E[Number(IDS[n]) * D + k];
  const a = linear(h, 'model.layers.0.q_proj', D, H).map(Math.tanh);
  const b = linear(a, 'model.layers.1.q_proj', H, D);
  const c = linear(b, 'model.layers.1.c_fc', D, O).map(Math.tanh);
  return linear(c, 'lm_head', O, V);
}

/**
 * Checks an adapter against its dense reference: the graph's logits equal the float64 host model with `deltas`
 * (which must move the logits), unmerged and after merging, and the merged weights equal W0 + ΔW (stored layout).
 */
export async function checkAgainstHost(peft: PeftModel, deltas: ReadonlyMap<string, ArrayLike<number>>) {
  const want = hostLogits(deltas);
  const base = hostLogits(new Map());
  assert.ok(
    want.some((x, i) => Math.abs(x - base[i]) > 0.05),
    'the adapter changes the logits',
  );
  assertAllclose(await graphLogits(peft), want, { atol: 1e-5, what: 'unmerged logits' });
  await peft.merge();
  const merged = peft.weightOverrides();
  for (const m of MODULES) {
    const dW = deltas.get(m.path);
    if (!dW || m.kind === 'embedding') continue;
    const [out, inn] = [m.outFeatures, m.inFeatures];
    const expected = toyWeights()
      .get(m.weightName)!
      .map((w0, i) => {
        const [j, k] = m.kind === 'conv1d' ? [i % out, Math.floor(i / out)] : [Math.floor(i / inn), i % inn];
        return w0 + dW[j * inn + k]; // Conv1D stores [in, out]: element i is (k, j)
      });
    assertAllclose(merged.get(m.weightName)!, expected, { atol: 1e-6, what: `merged ${m.weightName}` });
  }
  assertAllclose(await graphLogits(peft), want, { atol: 1e-5, what: 'merged logits' });
  peft.unmerge();
}
