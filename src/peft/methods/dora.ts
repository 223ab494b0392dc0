/**
 * DoRA — "DoRA: Weight-Decomposed Low-Rank Adaptation" (Liu et al., ICML 2024, arXiv:2402.09353); in PEFT a LoRA
 * variant (`use_dora`). Adds a magnitude m [out] (key `lora_magnitude_vector`): W' = diag(m/n)·(W0 + s·B·A) with
 * n = ‖W0 + s·B·A‖ per output row, treated as a constant in the backward (paper §4.3). Forward, as PEFT computes it
 * without building W': y = base(x) + (m/n − 1)⊙(base(x) − b) + (m/n)⊙s·B(A(dropout x)).
 */
import { matmul, rowNorms } from '../../linalg/index.ts';
import { fromMatrix, matrixDims, matrixOf, toMatrix } from '../layers.ts';
import type { MethodVariant } from '../method.ts';
import type { LoraConfig, LoraSettings } from './lora.ts';

export const dora: MethodVariant<LoraConfig, LoraSettings> = {
  name: 'dora',
  paper: 'DoRA: Weight-Decomposed Low-Rank Adaptation (arXiv:2402.09353)',
  of: ['lora'],
  applies: (c) => c.use_dora,
  layers: ['linear', 'conv1d'],

  params: (layer) => [
    { name: 'lora_magnitude_vector', shape: [layer.outFeatures], trainable: true, role: 'magnitude' },
  ],

  // m = ‖W + s·B·A‖ per output row (W the frozen weight after any earlier init variant), so that W' = W at init
  async init({ layer, settings: s, values, readBase }) {
    const [o, i] = matrixDims(layer);
    const w = toMatrix(layer, await readBase());
    const ba = matmul(values['lora_B.weight'], values['lora_A.weight'], o, s.r, i);
    for (let k = 0; k < ba.length; k++) ba[k] = w[k] + s.scaling * ba[k];
    return { values: { lora_magnitude_vector: rowNorms(ba, o, i) } };
  },

  forward(ctx, { lora }) {
    const { p, settings: s, layer } = ctx;
    const W = matrixOf(layer, ctx.weight); // [out, in]
    const V = W.add(p['lora_B.weight'].matmul(p['lora_A.weight']).mul(s.scaling)); // [out, in]
    const n = V.mul(V).sum(1).sqrt().detach(); // [out], no gradient (paper §4.3)
    const scale = p.lora_magnitude_vector.div(n); // [out]
    // PEFT reuses the base output without bias when dropout is off; with dropout it recomputes W0·dropout(x).
    const base = s.dropout > 0 ? ctx.dropout(ctx.x, s.dropout).matmul(W.T) : ctx.bias ? ctx.y.sub(ctx.bias) : ctx.y;
    return ctx.y.add(scale.sub(1).mul(base)).add(scale.mul(lora));
  },

  trainableCount: (_c, layers) => layers.reduce((n, { layer }) => n + layer.outFeatures, 0),

  // W' = (m/n)·(W0 + ΔW) row-wise, n = ‖W0 + ΔW‖ per row of the [out, in] matrix
  merge({ layer, p }, w0, delta) {
    const [o, i] = matrixDims(layer);
    const v = toMatrix(
      layer,
      Float32Array.from(w0, (w, k) => w + delta[k]),
    );
    const n = rowNorms(v, o, i);
    const m = p.lora_magnitude_vector;
    for (let r = 0; r < o; r++) {
      const f = m[r] / n[r];
      for (let c = 0; c < i; c++) v[r * i + c] *= f;
    }
    return fromMatrix(layer, v);
  },
};
