// Matrix products. MatMul follows numpy (batch dims broadcast); Gemm is the 2-D BLAS form with transposes.
import type { Tensor } from '../graph.ts';
import { LorakitError } from '../../errors.ts';
import { broadcastShapes, fmtShape, type Dim } from '../shape.ts';
import type { OpDef, LinalgOp } from './types.ts';
import { one, sameDtype } from './util.ts';

const mismatch = (a: readonly Dim[], b: readonly Dim[]) =>
  new LorakitError('LK_SHAPE_MISMATCH', `cannot multiply ${fmtShape(a)} by ${fmtShape(b)}: inner dims differ`);

const attr = (v: unknown, d: number) => (typeof v === 'number' ? v : d);

export const linalgOps: Record<LinalgOp, OpDef> = {
  MatMul: {
    infer: (ins) => {
      const [a, b] = [ins[0]!, ins[1]!];
      const d = sameDtype(ins);
      if (a.rank === 0 || b.rank === 0)
        throw new LorakitError(
          'LK_SHAPE_MISMATCH',
          `MatMul needs tensors of rank >= 1, got ${fmtShape(a.shape)} and ${fmtShape(b.shape)}`,
        );
      const as = a.rank === 1 ? [1, a.shape[0]] : [...a.shape];
      const bs = b.rank === 1 ? [b.shape[0], 1] : [...b.shape];
      const k1 = as[as.length - 1],
        k2 = bs[bs.length - 2];
      if (k1 !== k2 && typeof k1 === 'number' && typeof k2 === 'number') throw mismatch(a.shape, b.shape);
      const batch = broadcastShapes(as.slice(0, -2), bs.slice(0, -2), 'MatMul batch dims');
      const out = [
        ...batch,
        ...(a.rank === 1 ? [] : [as[as.length - 2]]),
        ...(b.rank === 1 ? [] : [bs[bs.length - 1]]),
      ];
      return one(out, d);
    },
    // dA = dY·Bᵀ, dB = Aᵀ·dY (batch dims are summed back by autodiff). A 2-D B gets one Gemm over all rows.
    vjp: (n, [dy], need) => {
      const [a, b] = [n.inputs[0]!, n.inputs[1]!];
      if (a.rank < 2 || b.rank < 2)
        throw new LorakitError(
          'LK_NO_GRADIENT',
          'MatMul gradient needs operands of rank >= 2; unsqueeze vectors first',
        );
      const da = need[0] ? dy!.matmul(b.T) : null;
      let db: Tensor | null = null;
      if (need[1]) {
        const [k, nn] = b.shape;
        if (b.rank === 2 && a.rank > 2 && typeof k === 'number' && typeof nn === 'number') {
          db = a.reshape([-1, k]).gemm(dy!.reshape([-1, nn]), null, { transA: 1 });
        } else db = a.T.matmul(dy!);
      }
      return [da, db];
    },
  },
  Gemm: {
    infer: (ins, at) => {
      const [a, b] = [ins[0]!, ins[1]!];
      const d = sameDtype(ins);
      if (a.rank !== 2 || b.rank !== 2)
        throw new LorakitError(
          'LK_SHAPE_MISMATCH',
          `Gemm needs 2-D tensors, got ${fmtShape(a.shape)} and ${fmtShape(b.shape)}`,
        );
      const [m, k1] = attr(at.transA, 0) ? [a.shape[1], a.shape[0]] : [a.shape[0], a.shape[1]];
      const [k2, nn] = attr(at.transB, 0) ? [b.shape[1], b.shape[0]] : [b.shape[0], b.shape[1]];
      if (k1 !== k2 && typeof k1 === 'number' && typeof k2 === 'number') throw mismatch(a.shape, b.shape);
      const out = [m, nn];
      if (ins[2]) broadcastShapes(out, ins[2].shape, 'Gemm bias');
      return one(out, d);
    },
    // Y = α·op(A)·op(B) + β·C; the four transpose cases of ORT's gradient builder, α kept, β·dY for C.
    vjp: (n, [dy], need) => {
      const [a, b] = [n.inputs[0]!, n.inputs[1]!];
      const tA = attr(n.attrs.transA, 0),
        tB = attr(n.attrs.transB, 0);
      const alpha = attr(n.attrs.alpha, 1),
        beta = attr(n.attrs.beta, 1);
      const o = { alpha, beta: 0 };
      let da: Tensor | null = null,
        db: Tensor | null = null;
      if (need[0])
        da = !tA ? dy!.gemm(b, null, { ...o, transB: tB ? 0 : 1 }) : b.gemm(dy!, null, { ...o, transA: tB, transB: 1 });
      if (need[1])
        db = !tB ? a.gemm(dy!, null, { ...o, transA: tA ? 0 : 1 }) : dy!.gemm(a, null, { ...o, transA: 1, transB: tA });
      const dc = need[2] ? (beta === 1 ? dy! : dy!.mul(beta)) : null;
      return [da, db, dc];
    },
  },
};
