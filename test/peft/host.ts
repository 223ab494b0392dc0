// The toy model (test/peft/toy.ts) in float64 on the host, with a ΔW [out, in] added to any adapted layer: the
// independent reference method tests compare the graph's logits with, each forming its ΔW explicitly from the
// paper's formula and the stored tensors.
import { D, H, IDS, MODULES, O, V, toyWeights } from './toy.ts';

/** Logits [8, V] of the toy model on IDS in float64, with `deltas` (by layer path, [out, in]) added to W. */
export function hostLogits(deltas: Map<string, Float64Array>, weights = toyWeights()): Float64Array {
  const N = IDS.length; // B·T rows
  // x [N, in] · (W + ΔW)ᵀ + b; the stored W is [out, in], or [in, out] for Conv1D
  const linear = (x: Float64Array, path: string, inn: number, out: number, conv1d = false) => {
    const m = MODULES.find((q) => q.path === path)!;
    const W = weights.get(m.weightName)!;
    const b = m.kind !== 'embedding' && m.biasName ? weights.get(m.biasName)! : null;
    const dW = deltas.get(path);
    const y = new Float64Array(N * out);
    for (let n = 0; n < N; n++)
      for (let j = 0; j < out; j++) {
        let s = b ? b[j] : 0;
        for (let k = 0; k < inn; k++) {
          const wjk = (conv1d ? W[k * out + j] : W[j * inn + k]) + (dW ? dW[j * inn + k] : 0);
          s += x[n * inn + k] * wjk;
        }
        y[n * out + j] = s;
      }
    return y;
  };
  const E = weights.get('model.embed_tokens.weight')!;
  const h = new Float64Array(N * D);
  for (let n = 0; n < N; n++) for (let k = 0; k < D; k++) h[n * D + k] = E[Number(IDS[n]) * D + k];
  const a = linear(h, 'model.layers.0.q_proj', D, H).map(Math.tanh);
  const b = linear(a, 'model.layers.1.q_proj', H, D);
  const c = linear(b, 'model.layers.1.c_fc', D, O, true).map(Math.tanh);
  return linear(c, 'lm_head', O, V);
}

/** C [m, n] = A [m, k] · B [k, n] in float64 (row-major), for ΔW formulas. */
export function mm64(a: ArrayLike<number>, b: ArrayLike<number>, m: number, k: number, n: number): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let p = 0; p < k; p++) {
      const av = a[i * k + p];
      for (let j = 0; j < n; j++) c[i * n + j] += av * b[p * n + j];
    }
  return c;
}

/** The [out, in] matrix of a toy layer's stored weight in float64 (Conv1D's [in, out] transposed). */
export function toyMatrix(path: string, weights = toyWeights()): Float64Array {
  const m = MODULES.find((q) => q.path === path)!;
  if (m.kind === 'embedding') throw new Error(`toyMatrix: ${path} is an embedding`);
  const W = weights.get(m.weightName)!;
  const [out, inn] = [m.outFeatures, m.inFeatures];
  return Float64Array.from({ length: out * inn }, (_, i) => {
    const [j, k] = [Math.floor(i / inn), i % inn];
    return m.kind === 'conv1d' ? W[k * out + j] : W[j * inn + k];
  });
}
