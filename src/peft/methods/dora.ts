/**
 * DoRA — "DoRA: Weight-Decomposed Low-Rank Adaptation" (Liu et al., ICML 2024, arXiv:2402.09353); in PEFT a LoRA
 * variant (`use_dora`). Adds a magnitude m [out] (key `lora_magnitude_vector`): W' = diag(m/n)·(W0 + s·B·A) with
 * n = ‖W0 + s·B·A‖ per output row, treated as a constant in the backward (paper §4.3). Forward, as PEFT computes it
 * without building W': y = base(x) + (m/n − 1)⊙(base(x) − b) + (m/n)⊙s·B(A(dropout x)).
 */
import { LorakitError } from '../../errors.ts';
import { matmul, rowNorms, transpose } from '../../linalg/index.ts';
import type { LoraVariant } from './lora.ts';

export const dora: LoraVariant = {
  name: 'dora',

  params(layer) {
    if (layer.kind !== 'linear')
      throw new LorakitError(
        'LK_UNSUPPORTED',
        `DoRA on ${layer.kind} layers (${layer.path}) is not supported yet; target Linear layers`,
      );
    return [{ name: 'lora_magnitude_vector', shape: [layer.outFeatures], trainable: true }];
  },

  // m = ‖W0 + s·B·A‖ per output row, so that W' = W0 at init
  async init(layer, s, values) {
    const w0 = await layer.readWeight();
    const [o, i] = [layer.outFeatures, layer.inFeatures];
    const w = layer.fanInFanOut ? transpose(w0, i, o) : w0;
    const ba = matmul(values['lora_B.weight'], values['lora_A.weight'], o, s.r, i);
    for (let k = 0; k < w.length; k++) ba[k] = w[k] + s.scaling * ba[k];
    return { lora_magnitude_vector: rowNorms(ba, o, i) };
  },

  forward(ctx, lora) {
    const { p, settings: s, layer } = ctx;
    const W = layer.fanInFanOut ? ctx.weight.T : ctx.weight; // [out, in]
    const V = W.add(p['lora_B.weight'].matmul(p['lora_A.weight']).mul(s.scaling)); // [out, in]
    const n = V.mul(V).sum(1).sqrt().detach(); // [out], no gradient (paper §4.3)
    const scale = p.lora_magnitude_vector.div(n); // [out]
    // PEFT reuses the base output without bias when dropout is off; with dropout it recomputes W0·dropout(x).
    const base = s.dropout > 0 ? ctx.dropout(ctx.x).matmul(W.T) : ctx.bias ? ctx.y.sub(ctx.bias) : ctx.y;
    return ctx.y.add(scale.sub(1).mul(base)).add(scale.mul(lora));
  },

  // W' = (m/n)·(W0 + ΔW) row-wise, n = ‖W0 + ΔW‖ per row (in [out, in] orientation)
  merge(layer, _s, p, w0, delta) {
    const [o, i] = [layer.outFeatures, layer.inFeatures];
    const v = new Float32Array(w0.length);
    for (let k = 0; k < v.length; k++) v[k] = w0[k] + delta[k];
    const vo = layer.fanInFanOut ? transpose(v, i, o) : v;
    const n = rowNorms(vo, o, i);
    const m = p.lora_magnitude_vector;
    for (let r = 0; r < o; r++) {
      const f = m[r] / n[r];
      for (let c = 0; c < i; c++) vo[r * i + c] *= f;
    }
    return layer.fanInFanOut ? transpose(vo, o, i) : vo;
  },
};
