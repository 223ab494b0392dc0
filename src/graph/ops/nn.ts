// Fused primitives that ONNX Runtime runs as one kernel on CPU and WebGPU (spec §3.3), each with a
// gradient written in standard ops because ORT's *Grad kernels are absent from inference builds.
import { LorakitError } from '../../errors.ts';
import { normAxis } from '../shape.ts';
import type { OpDef, NnOp } from './types.ts';
import { requireFloat } from './util.ts';

export const nnOps: Record<NnOp, OpDef> = {
  Softmax: {
    infer: ([x], at) => {
      requireFloat(x!, 'Softmax');
      normAxis((at.axis as number) ?? -1, x!.rank, 'Softmax');
      return [{ dtype: x!.dtype, shape: [...x!.shape] }];
    },
    // dX = Y ⊙ (dY − Σ_axis dY ⊙ Y)
    vjp: (n, [dy]) => {
      const y = n.outputs[0];
      const axis = (n.attrs.axis as number) ?? -1;
      return [y.mul(dy!.sub(dy!.mul(y).sum(axis, true)))];
    },
  },
  LayerNormalization: {
    // outputs: Y, Mean, InvStdDev (the last two over axes [axis, rank), kept as size-1 dims)
    infer: (ins, at, nOut) => {
      const [x, gamma, beta] = ins;
      requireFloat(x!, 'LayerNormalization');
      const axis = normAxis((at.axis as number) ?? -1, x!.rank, 'LayerNormalization');
      const tail = x!.shape.slice(axis);
      for (const p of [gamma, beta]) {
        if (p && (p.rank > tail.length || p.shape.some((d, i) => d !== tail[tail.length - p.rank + i] && d !== 1))) {
          throw new LorakitError('LK_SHAPE_MISMATCH', `LayerNormalization: scale/bias ${p.toString()} do not fit the normalised dims [${tail}]`);
        }
      }
      const stat = x!.shape.map((d, i) => (i < axis ? d : 1));
      // Mean and InvStdDev use stash_type (default float32) whatever X's type is.
      return [{ dtype: x!.dtype, shape: [...x!.shape] }, { dtype: 'f32' as const, shape: stat }, { dtype: 'f32' as const, shape: stat }].slice(0, nOut);
    },
    // x̂ = (X−μ)·r, g = dY⊙γ: dX = r·(g − mean(g) − x̂·mean(g⊙x̂)); dγ = Σ_rows dY⊙x̂; dβ = Σ_rows dY
    vjp: (n, [dy], need) => {
      if (n.outputs.length < 3) throw new LorakitError('LK_NO_GRADIENT', 'LayerNormalization gradient needs the Mean and InvStdDev outputs; build it with layerNorm()');
      const [x, gamma] = [n.inputs[0]!, n.inputs[1]!];
      const [mu, r] = [n.outputs[1].cast(x.dtype), n.outputs[2].cast(x.dtype)];
      const axis = normAxis((n.attrs.axis as number) ?? -1, x.rank, 'LayerNormalization');
      const normAxes = x.shape.map((_, i) => i).filter((i) => i >= axis);
      const rowAxes = x.shape.map((_, i) => i).filter((i) => i < axis);
      const xhat = x.sub(mu).mul(r);
      const g = dy!.mul(gamma);
      const dx = need[0] ? r.mul(g.sub(g.mean(normAxes, true)).sub(xhat.mul(g.mul(xhat).mean(normAxes, true)))) : null;
      const dgamma = need[1] ? dy!.mul(xhat).sum(rowAxes) : null;
      const dbeta = need[2] ? dy!.sum(rowAxes) : null;
      return [dx, dgamma, dbeta];
    },
  },
};
