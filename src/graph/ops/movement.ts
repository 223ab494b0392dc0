// Shape and data-movement primitives: reshape, transpose, slicing, concatenation, gathers and scatters, casts.
import { LorakitError } from '../../errors.ts';
import type { Graph, Tensor } from '../graph.ts';
import { ONNX_DTYPE, type DType, isFloat } from '../dtype.ts';
import { type Dim, broadcastShapes, dimQuotient, fmtShape, normAxis, numel } from '../shape.ts';
import type { OpDef, MovementOp } from './types.ts';
import { constInts, one, reshapeLike, zerosLike } from './util.ts';

const DTYPE_OF_ONNX = Object.fromEntries(Object.entries(ONNX_DTYPE).map(([k, v]) => [v, k])) as Record<number, DType>;
const BIG = 2 ** 62;

function reshapeInfer(x: Tensor, target: number[]): Dim[] {
  const out: Dim[] = target.map((d, i) => (d === 0 ? x.shape[i] : d));
  const neg = out.indexOf(-1);
  if (out.some((d, i) => typeof d === 'number' && (d < -1 || (d === -1 && i !== neg)))) {
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `Reshape: target ${fmtShape(target)} may hold one -1 and no other negative dim`,
    );
  }
  if (neg >= 0) {
    const rest = out.filter((_, i) => i !== neg);
    const q = dimQuotient(x.shape, rest);
    out[neg] = q === undefined ? x.graph.freshDim() : q;
  }
  const a = numel(x.shape),
    b = numel(out);
  if (a !== undefined && b !== undefined && a !== b) {
    throw new LorakitError(
      'LK_SHAPE_MISMATCH',
      `cannot reshape ${fmtShape(x.shape)} (${a} elements) to ${fmtShape(target)} (${b} elements)`,
    );
  }
  return out;
}

/** Static slice bounds of one axis, clamped like ONNX; a fresh symbol of `g` when the dim is symbolic and the bounds
 * need it. */
function sliceLen(g: Graph, dim: Dim, start: number, end: number, step: number): Dim {
  if (typeof dim === 'number') {
    const clamp = (v: number, lo: number, hi: number) => Math.min(Math.max(v, lo), hi);
    const s =
      step > 0 ? clamp(start < 0 ? start + dim : start, 0, dim) : clamp(start < 0 ? start + dim : start, -1, dim - 1);
    const e = step > 0 ? clamp(end < 0 ? end + dim : end, 0, dim) : clamp(end < 0 ? end + dim : end, -1, dim - 1);
    return Math.max(0, Math.ceil((e - s) / step));
  }
  if (step === 1 && start >= 0 && end >= 0 && end < BIG) return end - start; // assumes dim >= end, as model code does
  if (step === 1 && start >= 0 && end >= BIG) return start === 0 ? dim : g.freshDim();
  return g.freshDim();
}

export const movementOps: Record<MovementOp, OpDef> = {
  Reshape: {
    infer: (ins) => {
      const x = ins[0]!;
      const target = constInts(ins[1]);
      if (target) return one(reshapeInfer(x, target), x.dtype);
      const r = ins[1]!.shape[0];
      if (typeof r !== 'number')
        throw new LorakitError('LK_INVALID_ARGUMENT', 'Reshape: the shape tensor must have a static length');
      return one(
        Array.from({ length: r }, () => x.graph.freshDim()),
        x.dtype,
      );
    },
    // d reshape(x) = reshape(dY) back to x's shape
    vjp: (n, [dy]) => [reshapeLike(dy!, n.inputs[0]!), null],
  },
  Transpose: {
    infer: ([x], at) => {
      const perm = at.perm as number[];
      if (perm.length !== x!.rank || [...perm].sort().some((p, i) => p !== i)) {
        throw new LorakitError(
          'LK_INVALID_ARGUMENT',
          `Transpose: perm [${perm}] is not a permutation of ${x!.rank} axes`,
        );
      }
      return one(
        perm.map((p) => x!.shape[p]),
        x!.dtype,
      );
    },
    // d transpose(x, p) = transpose(dY, p⁻¹)
    vjp: (n, [dy]) => {
      const perm = n.attrs.perm as number[];
      const inv = perm.map((_, i) => perm.indexOf(i));
      return [dy!.transpose(inv)];
    },
  },
  Unsqueeze: {
    infer: (ins) => {
      const x = ins[0]!;
      const axes = constInts(ins[1]);
      if (!axes) throw new LorakitError('LK_INVALID_ARGUMENT', 'Unsqueeze: axes must be constants');
      const r = x.rank + axes.length;
      const norm = axes.map((a) => normAxis(a, r, 'Unsqueeze'));
      const out: Dim[] = [];
      let j = 0;
      for (let i = 0; i < r; i++) out.push(norm.includes(i) ? 1 : x.shape[j++]);
      return one(out, x.dtype);
    },
    vjp: (n, [dy]) => [reshapeLike(dy!, n.inputs[0]!), null],
  },
  Squeeze: {
    infer: (ins) => {
      const x = ins[0]!;
      const axes = (constInts(ins[1]) ?? []).map((a) => normAxis(a, x.rank, 'Squeeze'));
      for (const a of axes)
        if (x.shape[a] !== 1 && typeof x.shape[a] === 'number')
          throw new LorakitError('LK_SHAPE_MISMATCH', `Squeeze: axis ${a} of ${fmtShape(x.shape)} is not 1`);
      return one(
        x.shape.filter((_, i) => !axes.includes(i)),
        x.dtype,
      );
    },
    vjp: (n, [dy]) => [reshapeLike(dy!, n.inputs[0]!), null],
  },
  Slice: {
    infer: (ins) => {
      const x = ins[0]!;
      const starts = constInts(ins[1]),
        ends = constInts(ins[2]),
        axes = constInts(ins[3]),
        steps = constInts(ins[4]);
      const out = [...x.shape];
      const k = (ins[1]!.shape[0] as number) ?? 0;
      const ax = (axes ?? Array.from({ length: k }, (_, i) => i)).map((a) => normAxis(a, x.rank, 'Slice'));
      ax.forEach((a, i) => {
        out[a] =
          starts && ends ? sliceLen(x.graph, x.shape[a], starts[i], ends[i], steps ? steps[i] : 1) : x.graph.freshDim();
      });
      return one(out, x.dtype);
    },
    // d slice(x) = dY padded with zeros back to x's extent (unit steps)
    vjp: (n, [dy]) => {
      const x = n.inputs[0]!;
      const starts = constInts(n.inputs[1]),
        ends = constInts(n.inputs[2]),
        steps = constInts(n.inputs[4]);
      const axes = (constInts(n.inputs[3]) ?? starts?.map((_, i) => i) ?? []).map((a) => normAxis(a, x.rank, 'Slice'));
      if (!starts || !ends || steps?.some((s) => s !== 1)) {
        throw new LorakitError('LK_NO_GRADIENT', 'Slice gradient needs constant starts/ends and unit steps');
      }
      const pads = new Array(2 * x.rank).fill(0);
      axes.forEach((a, i) => {
        const dim = x.shape[a];
        const s = starts[i],
          e = ends[i];
        if (typeof dim === 'number') {
          const sN = Math.min(Math.max(s < 0 ? s + dim : s, 0), dim),
            eN = Math.min(Math.max(e < 0 ? e + dim : e, 0), dim);
          pads[a] = sN;
          pads[x.rank + a] = dim - Math.max(eN, sN);
        } else if (s >= 0 && (e >= BIG || e < 0)) {
          pads[a] = s;
          pads[x.rank + a] = e >= BIG ? 0 : -e;
        } else
          throw new LorakitError(
            'LK_NO_GRADIENT',
            `Slice gradient: axis ${a} has symbolic size ${dim} and bounds ${s}:${e} that need it`,
          );
      });
      return [
        x.graph.op('Pad', [dy!, x.graph.constInts(pads)], { mode: 'constant' }, { shape: x.shape }),
        null,
        null,
        null,
        null,
      ];
    },
  },
  Pad: {
    infer: (ins) => {
      const x = ins[0]!;
      const pads = constInts(ins[1]);
      if (!pads)
        return one(
          x.shape.map(() => x.graph.freshDim()),
          x.dtype,
        );
      return one(
        x.shape.map((d, i) =>
          typeof d === 'number'
            ? d + pads[i] + pads[x.rank + i]
            : pads[i] + pads[x.rank + i] === 0
              ? d
              : x.graph.freshDim(),
        ),
        x.dtype,
      );
    },
    // d pad(x) = the un-padded window of dY
    vjp: (n, [dy]) => {
      const x = n.inputs[0]!;
      const pads = constInts(n.inputs[1]);
      if (!pads || pads.some((p) => p < 0) || (n.attrs.mode ?? 'constant') !== 'constant')
        throw new LorakitError('LK_NO_GRADIENT', 'Pad gradient needs constant, non-negative pads in constant mode');
      const r = x.rank;
      return [
        dy!.slice(
          pads.slice(0, r),
          pads.slice(r).map((p) => (p === 0 ? BIG : -p)),
        ),
        null,
      ];
    },
  },
  Concat: {
    infer: (ins, at) => {
      const xs = ins as Tensor[];
      const axis = normAxis(at.axis as number, xs[0].rank, 'Concat');
      const out = [...xs[0].shape];
      for (const t of xs) {
        if (t.dtype !== xs[0].dtype)
          throw new LorakitError(
            'LK_DTYPE_MISMATCH',
            `Concat: inputs must share one dtype, got ${xs.map((x) => x.dtype).join(', ')}`,
          );
        if (
          t.rank !== xs[0].rank ||
          t.shape.some((d, i) => i !== axis && d !== out[i] && typeof d === 'number' && typeof out[i] === 'number')
        ) {
          throw new LorakitError(
            'LK_SHAPE_MISMATCH',
            `Concat on axis ${axis}: ${xs.map((x) => fmtShape(x.shape)).join(' and ')} differ off that axis`,
          );
        }
      }
      const dims = xs.map((t) => t.shape[axis]);
      out[axis] = dims.every((d) => typeof d === 'number')
        ? (dims as number[]).reduce((a, b) => a + b, 0)
        : dims.join('+');
      return one(out, xs[0].dtype);
    },
    // d concat(xs) = the matching pieces of dY
    vjp: (n, [dy], need) => {
      const xs = n.inputs as Tensor[];
      const axis = normAxis(n.attrs.axis as number, xs[0].rank, 'Concat');
      const g = dy!.graph;
      let offset: Tensor | number = 0;
      return xs.map((x, i) => {
        const size: Tensor | number =
          typeof x.shape[axis] === 'number' ? (x.shape[axis] as number) : x.shapeOf().gather(g.constInts([axis]));
        const start = offset;
        offset =
          typeof offset === 'number' && typeof size === 'number'
            ? offset + size
            : (typeof offset === 'number' ? g.constInts([offset]) : offset).add(
                typeof size === 'number' ? g.constInts([size]) : size,
              );
        if (!need[i]) return null;
        if (typeof start === 'number' && typeof size === 'number') return dy!.slice([start], [start + size], [axis]);
        const s = typeof start === 'number' ? g.constInts([start]) : start;
        return g.op(
          'Slice',
          [dy!, s, s.add(typeof size === 'number' ? g.constInts([size]) : size), g.constInts([axis])],
          {},
          { shape: x.shape },
        );
      });
    },
  },
  Split: {
    infer: (ins, at, nOut) => {
      const x = ins[0]!;
      const axis = normAxis(at.axis as number, x.rank, 'Split');
      const sizes = constInts(ins[1]);
      if (!sizes || sizes.length !== nOut)
        throw new LorakitError('LK_INVALID_ARGUMENT', 'Split: sizes must be constants, one per output');
      const d = x.shape[axis];
      if (typeof d === 'number' && sizes.reduce((a, b) => a + b, 0) !== d)
        throw new LorakitError(
          'LK_SHAPE_MISMATCH',
          `Split: sizes [${sizes}] do not add up to dim ${d} of ${fmtShape(x.shape)}`,
        );
      return sizes.map((s) => ({ dtype: x.dtype, shape: x.shape.map((dd, i) => (i === axis ? s : dd)) }));
    },
    // d split(x) = concat(dY_i), zeros for pieces without gradient
    vjp: (n, dys) => {
      const axis = normAxis(n.attrs.axis as number, n.inputs[0]!.rank, 'Split');
      const parts = n.outputs.map((y, i) => dys[i] ?? zerosLike(y));
      return [parts[0].graph.op('Concat', parts, { axis }), null];
    },
  },
  Expand: {
    infer: (ins) => {
      const x = ins[0]!;
      const target = constInts(ins[1]);
      if (!target) {
        const r = ins[1]!.shape[0];
        if (typeof r !== 'number')
          throw new LorakitError('LK_INVALID_ARGUMENT', 'Expand: the shape tensor must have a static length');
        return one(
          broadcastShapes(
            x.shape,
            Array.from({ length: r }, () => x.graph.freshDim()),
            'Expand',
          ),
          x.dtype,
        );
      }
      return one(broadcastShapes(x.shape, target, 'Expand'), x.dtype);
    },
    // d expand(x) = dY summed over the broadcast axes (done by autodiff)
    vjp: (_n, [dy]) => [dy, null],
  },
  Gather: {
    infer: (ins, at) => {
      const [x, idx] = [ins[0]!, ins[1]!];
      if (idx.dtype !== 'i64' && idx.dtype !== 'i32')
        throw new LorakitError('LK_DTYPE_MISMATCH', `Gather: indices must be i64 or i32, got ${idx.dtype}`);
      const axis = normAxis((at.axis as number) ?? 0, x.rank, 'Gather');
      return one([...x.shape.slice(0, axis), ...idx.shape, ...x.shape.slice(axis + 1)], x.dtype);
    },
    // d gather(x, idx) = scatter-add of dY into zeros at idx along the axis: rows on axis 0 (an embedding's gradient);
    // on another axis, a 1-D idx spread to dY's shape for ScatterElements (PaCA's selected input columns)
    vjp: (n, [dy]) => {
      const [x, idx] = [n.inputs[0]!, n.inputs[1]!];
      const axis = normAxis((n.attrs.axis as number) ?? 0, x.rank, 'Gather');
      const g = x.graph;
      if (axis === 0) {
        const dx = g.op('ScatterND', [zerosLike(x), idx.cast('i64').unsqueeze(-1), dy!], { reduction: 'add' });
        return [dx, null];
      }
      if (idx.rank !== 1)
        throw new LorakitError(
          'LK_NO_GRADIENT',
          `Gather gradient on axis ${axis} needs 1-D indices, got rank ${idx.rank}`,
        );
      const shape = x.shape.map((_, k) => (k === axis ? -1 : 1));
      const spread = idx.cast('i64').reshape(shape).expand(dy!.shapeOf()); // [.. like dY]: idx along the axis
      return [zerosLike(x).scatterElements(spread, dy!, axis, 'add'), null];
    },
  },
  GatherElements: {
    infer: (ins, at) => {
      const [x, idx] = [ins[0]!, ins[1]!];
      normAxis((at.axis as number) ?? 0, x.rank, 'GatherElements');
      if (idx.rank !== x.rank)
        throw new LorakitError(
          'LK_SHAPE_MISMATCH',
          `GatherElements: indices ${fmtShape(idx.shape)} must have the rank of data ${fmtShape(x.shape)}`,
        );
      return one([...idx.shape], x.dtype);
    },
    // d gatherElements(x, idx) = scatter-add of dY into zeros at idx
    vjp: (n, [dy]) => {
      const [x, idx] = [n.inputs[0]!, n.inputs[1]!];
      return [zerosLike(x).scatterElements(idx, dy!, (n.attrs.axis as number) ?? 0, 'add'), null];
    },
  },
  ScatterElements: {
    infer: (ins) => {
      const [x, , u] = [ins[0]!, ins[1]!, ins[2]!];
      if (u.dtype !== x.dtype)
        throw new LorakitError('LK_DTYPE_MISMATCH', `ScatterElements: updates ${u.dtype} must match data ${x.dtype}`);
      return one([...x.shape], x.dtype);
    },
    // none: dData = dY with the overwritten positions zeroed, dUpdates = dY at idx; add: dData = dY
    vjp: (n, [dy], need) => {
      const [, idx, u] = [n.inputs[0]!, n.inputs[1]!, n.inputs[2]!];
      const axis = (n.attrs.axis as number) ?? 0;
      const add = n.attrs.reduction === 'add';
      const dx = need[0] ? (add ? dy! : dy!.scatterElements(idx, zerosLike(u), axis)) : null;
      return [dx, null, need[2] ? dy!.gatherElements(idx, axis) : null];
    },
  },
  ScatterND: {
    infer: (ins) => one([...ins[0]!.shape], ins[0]!.dtype),
    vjp: 'used only inside gradients (Gather), never differentiated again',
  },
  Cast: {
    infer: ([x], at) => {
      const to = DTYPE_OF_ONNX[at.to as number];
      if (!to) throw new LorakitError('LK_INVALID_ARGUMENT', `Cast: unknown target type ${at.to}`);
      return one([...x!.shape], to);
    },
    // d cast(x) = cast(dY) back, between float types only
    vjp: (n, [dy]) => {
      const x = n.inputs[0]!;
      if (!isFloat(x.dtype) || !isFloat(n.outputs[0].dtype))
        throw new LorakitError(
          'LK_NO_GRADIENT',
          `Cast ${x.dtype} -> ${n.outputs[0].dtype} has no gradient (not float to float)`,
        );
      return [dy!.cast(x.dtype)];
    },
  },
  Trilu: {
    infer: (ins) => {
      if (ins[0]!.rank < 2)
        throw new LorakitError('LK_SHAPE_MISMATCH', `Trilu needs rank >= 2, got ${fmtShape(ins[0]!.shape)}`);
      return one([...ins[0]!.shape], ins[0]!.dtype);
    },
    // d trilu(x) = trilu(dY), same triangle
    vjp: (n, [dy]) => [dy!.graph.op('Trilu', [dy!, n.inputs[1]], n.attrs), null],
  },
  Range: {
    infer: (ins) => {
      const [s, l, d] = [constInts(ins[0]), constInts(ins[1]), constInts(ins[2])];
      const len = s && l && d ? Math.max(0, Math.ceil((l[0] - s[0]) / d[0])) : ins[0]!.graph.freshDim();
      return one([len], ins[0]!.dtype);
    },
    vjp: 'Range makes index sequences',
  },
  Shape: { infer: ([x]) => one([x!.rank], 'i64'), vjp: 'shapes are not differentiable' },
  ConstantOfShape: {
    infer: (ins, at) => {
      const dims = constInts(ins[0]);
      const r = ins[0]!.shape[0];
      const v = at.value as { dtype: DType };
      return one(
        dims ?? Array.from({ length: typeof r === 'number' ? r : 0 }, () => ins[0]!.graph.freshDim()),
        v.dtype,
      );
    },
    vjp: 'a constant',
  },
};
