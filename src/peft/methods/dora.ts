/**
 * DoRA — "DoRA: Weight-Decomposed Low-Rank Adaptation" (Liu et al., ICML 2024, arXiv:2402.09353); in PEFT a LoRA
 * variant (`use_dora`). Adds a magnitude m [out] (key `lora_magnitude_vector`): W' = diag(m/n)·(W0 + s·B·A) with
 * n = ‖W0 + s·B·A‖ per output row, treated as a constant in the backward (paper §4.3). Forward, as PEFT computes it
 * without building W': y = base(x) + (m/n − 1)⊙(base(x) − b) + (m/n)⊙s·B(A(dropout x)).
 * On a Conv2d (PEFT's `_DoraConvNdLayer`) m is stored [1, out, 1, 1], n is the norm over (in, kh, kw) of each output
 * channel of W0 + s·B·A, and the rescaling is per channel. Grouped convs are refused: PEFT reshapes B·A into the
 * grouped kernel's shape there, a norm of no meaning (see convMergeBlock in lora.ts for why B·A is no grouped kernel).
 */
import { LorakitError } from '../../errors.ts';
import { matmul, rowNorms } from '../../linalg/index.ts';
import { fromMatrix, matrixDims, matrixOf, toMatrix } from '../layers.ts';
import type { MethodVariant } from '../method.ts';
import type { LoraConfig, LoraSettings } from './lora.ts';

export const dora: MethodVariant<LoraConfig, LoraSettings> = {
  name: 'dora',
  paper: 'DoRA: Weight-Decomposed Low-Rank Adaptation (arXiv:2402.09353)',
  of: ['lora'],
  applies: (c) => c.use_dora,
  selectedBy: { use_dora: true },
  layers: ['linear', 'conv1d', 'conv2d'],

  checkLayer(layer, _s, _c, source) {
    if ((layer.conv?.groups ?? 1) > 1) {
      throw new LorakitError(
        'LK_UNSUPPORTED',
        `${source}: DoRA cannot wrap ${layer.path}, a Conv2d with groups ${layer.conv!.groups} (PEFT computes its ` +
          'norm from B·A reshaped to the grouped kernel, which is not the adapted weight); use plain LoRA there or ' +
          'exclude the layer',
        { layer: layer.path },
      );
    }
  },

  // PEFT saves a conv's magnitude as [1, out, 1, 1] (the shape it broadcasts with); its values are the same
  params: (layer) => [
    {
      name: 'lora_magnitude_vector',
      shape: layer.conv ? [1, layer.outFeatures, 1, 1] : [layer.outFeatures],
      trainable: true,
      role: 'magnitude',
    },
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
    const [o, i] = matrixDims(layer);
    const W = matrixOf(layer, ctx.weight); // [out, in] (a Conv2d's [out, in, kh, kw] as [out, in·kh·kw])
    const [A, B] = [p['lora_A.weight'], p['lora_B.weight']];
    const BA = layer.conv ? B.reshape([o, s.r]).matmul(A.reshape([s.r, i])) : B.matmul(A); // [out, in]
    const V = W.add(BA.mul(s.scaling)); // [out, in]
    const n = V.mul(V).sum(1).sqrt().detach(); // [out], no gradient (paper §4.3)
    let scale = p.lora_magnitude_vector.reshape([o]).div(n); // [out]
    let bias = ctx.bias;
    if (layer.conv) {
      scale = scale.reshape([1, o, 1, 1]); // per channel of [N, out, H', W']
      bias = bias?.reshape([1, o, 1, 1]) ?? null;
    }
    // PEFT reuses the base output without bias when dropout is off; with dropout it recomputes W0·dropout(x).
    const base = s.dropout > 0 ? droppedBase(ctx) : bias ? ctx.y.sub(bias) : ctx.y;
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

/** The frozen layer without bias on dropout(x): x̃·Wᵀ, or the base convolution of x̃ (PEFT's conv_fn, bias=None). */
function droppedBase(ctx: Parameters<NonNullable<typeof dora.forward>>[0]) {
  const { layer, settings: s } = ctx;
  const x = ctx.dropout(ctx.x, s.dropout);
  const c = layer.conv;
  if (!c) return x.matmul(matrixOf(layer, ctx.weight).T); // [.., out]
  return x.conv2d(ctx.weight, null, { stride: c.stride, padding: c.padding, dilation: c.dilation, groups: c.groups });
}
