// Reductions over constant axes (opset 18: axes are an i64 input), plus ArgMax and TopK (selections along one axis).
import { LorakitError } from '../../errors.ts';
import type { Tensor } from '../graph.ts';
import { normAxis, type Dim, dimProduct } from '../shape.ts';
import type { OpDef, InferFn, VjpNode, ReduceOp } from './types.ts';
import { constInts, one, shapeTensor, zerosLike } from './util.ts';

function axesOf(n: { inputs: readonly (Tensor | null)[] }): number[] {
  const x = n.inputs[0]!;
  const ax = constInts(n.inputs[1]);
  if (!ax) throw new LorakitError('LK_INVALID_ARGUMENT', 'reduction axes must be constants');
  return ax.map((a) => normAxis(a, x.rank, 'reduce'));
}

const reduceInfer: InferFn = (ins, at) => {
  const x = ins[0]!;
  const axes = axesOf({ inputs: ins });
  const keep = at.keepdims !== 0;
  const out: Dim[] = [];
  x.shape.forEach((d, i) => {
    if (!axes.includes(i)) out.push(d);
    else if (keep) out.push(1);
  });
  return one(out, x.dtype);
};

/** dY (reduced shape) broadcast back to X's shape: re-insert the reduced axes, then expand. */
function expandBack(n: VjpNode, dy: Tensor): Tensor {
  const x = n.inputs[0]!;
  const axes = axesOf(n);
  const kept = n.attrs.keepdims !== 0 ? dy : dy.unsqueeze(axes.sort((a, b) => a - b));
  return kept.expand(shapeTensor(x), x.shape);
}

export const reduceOps: Record<ReduceOp, OpDef> = {
  // d Σx = dY broadcast
  ReduceSum: { infer: reduceInfer, vjp: (n, [dy]) => [expandBack(n, dy!), null] },
  // d mean(x) = dY / count, broadcast
  ReduceMean: {
    infer: reduceInfer,
    vjp: (n, [dy]) => {
      const x = n.inputs[0]!;
      const count = dimProduct(axesOf(n).map((a) => x.shape[a]));
      let g = expandBack(n, dy!);
      if (typeof count === 'number') g = g.div(count);
      else {
        // count known only at run time: the product of the reduced dims of Shape(x)
        const c = x
          .shapeOf()
          .gather(x.graph.constInts(axesOf(n)))
          .cast(x.dtype);
        g = g.div(c.graph.op('ReduceProd', [c, x.graph.constInts([0])], { keepdims: 0 }));
      }
      return [g, null];
    },
  },
  // d max(x) = dY to the positions equal to the max, split evenly between ties
  ReduceMax: {
    infer: reduceInfer,
    vjp: (n, [dy]) => {
      const x = n.inputs[0]!;
      const yk = n.attrs.keepdims !== 0 ? n.outputs[0] : n.outputs[0].unsqueeze(axesOf(n).sort((a, b) => a - b));
      const mask = x.equal(yk).cast(x.dtype);
      const ties = mask.sum(axesOf(n), true);
      return [expandBack(n, dy!).mul(mask).div(ties), null];
    },
  },
  ReduceProd: { infer: reduceInfer, vjp: 'only used on shapes by lorakit' },
  ArgMax: {
    infer: (ins, at) => {
      const x = ins[0]!;
      const axis = normAxis(typeof at.axis === 'number' ? at.axis : 0, x.rank, 'ArgMax');
      const out = x.shape.flatMap((d, i) => (i !== axis ? [d] : at.keepdims === 0 ? [] : [1]));
      return one(out, 'i64');
    },
    vjp: 'ArgMax returns indices',
  },
  // TopK(X, K [1] i64) → values, indices (i64), K entries along `axis` (largest or smallest; ties: lower index first)
  TopK: {
    infer: (ins, at) => {
      const x = ins[0]!;
      const axis = normAxis(typeof at.axis === 'number' ? at.axis : -1, x.rank, 'TopK');
      const k = constInts(ins[1]);
      if (ins[1]!.dtype !== 'i64' || (k && k.length !== 1))
        throw new LorakitError('LK_INVALID_ARGUMENT', `TopK: K must be an i64 tensor of one value, got ${ins[1]}`);
      const d = x.shape[axis];
      if (k && (k[0] < 0 || (typeof d === 'number' && k[0] > d)))
        throw new LorakitError('LK_SHAPE_MISMATCH', `TopK: K = ${k[0]} must lie in 0..${d} (axis ${axis} of ${x})`);
      const out = x.shape.map((s, i) => (i !== axis ? s : k ? k[0] : x.graph.freshDim()));
      return [
        { dtype: x.dtype, shape: out },
        { dtype: 'i64', shape: [...out] },
      ];
    },
    // values = X at the picked indices, so dX = dValues scattered back to them (zero elsewhere; indices are distinct
    // along the axis, so no two updates meet); the indices output has no gradient
    vjp: (n, [dv]) => {
      const x = n.inputs[0]!;
      if (!dv) return [null, null];
      const axis = normAxis(typeof n.attrs.axis === 'number' ? n.attrs.axis : -1, x.rank, 'TopK');
      return [zerosLike(x).scatterElements(n.outputs[1], dv, axis), null];
    },
  },
};
