// Elementwise primitives. Broadcasting is inferred here; autodiff sums gradients back over broadcast axes, so the
// rules below return gradients of the broadcast shape.
import type { Tensor } from '../graph.ts';
import { LorakitError } from '../../errors.ts';
import { broadcastShapes } from '../shape.ts';
import type { OpDef, InferFn, ElementwiseOp } from './types.ts';
import { one, sameDtype, requireFloat } from './util.ts';

const unary: InferFn = ([x]) => one([...x!.shape], x!.dtype);
const unaryFloat: InferFn = ([x]) => {
  requireFloat(x!, 'this op');
  return one([...x!.shape], x!.dtype);
};
const binary: InferFn = (ins) => one(broadcastShapes(ins[0]!.shape, ins[1]!.shape, 'broadcast'), sameDtype(ins));
const compare: InferFn = (ins) => {
  sameDtype(ins);
  return one(broadcastShapes(ins[0]!.shape, ins[1]!.shape, 'broadcast'), 'bool');
};
const logic: InferFn = (ins) => {
  for (const t of ins)
    if (t!.dtype !== 'bool')
      throw new LorakitError('LK_DTYPE_MISMATCH', `logical ops need bool inputs, got ${t!.dtype}`);
  return one(
    ins.length === 1 ? [...ins[0]!.shape] : broadcastShapes(ins[0]!.shape, ins[1]!.shape, 'broadcast'),
    'bool',
  );
};

const integerBinary: InferFn = (ins) => {
  const d = sameDtype(ins);
  if (d !== 'i32' && d !== 'i64')
    throw new LorakitError('LK_DTYPE_MISMATCH', `bitwise ops need i32 or i64 inputs, got ${d}`);
  return one(broadcastShapes(ins[0]!.shape, ins[1]!.shape, 'broadcast'), d);
};

const x0 = (n: { inputs: readonly (Tensor | null)[] }) => n.inputs[0]!;
const x1 = (n: { inputs: readonly (Tensor | null)[] }) => n.inputs[1]!;

export const elementwiseOps: Record<ElementwiseOp, OpDef> = {
  // d(a+b) = da + db
  Add: { infer: binary, vjp: (_n, [dy]) => [dy, dy] },
  // d(a-b) = da - db
  Sub: { infer: binary, vjp: (_n, [dy], need) => [dy, need[1] ? dy!.neg() : null] },
  // d(ab) = b·da + a·db
  Mul: { infer: binary, vjp: (n, [dy], need) => [need[0] ? dy!.mul(x1(n)) : null, need[1] ? dy!.mul(x0(n)) : null] },
  // d(a/b) = da/b − (a/b)/b·db
  Div: {
    infer: binary,
    vjp: (n, [dy], need) => [need[0] ? dy!.div(x1(n)) : null, need[1] ? dy!.mul(n.outputs[0]).div(x1(n)).neg() : null],
  },
  // d(a^b) = b·a^(b−1)·da + a^b·ln(a)·db
  Pow: {
    infer: binary,
    vjp: (n, [dy], need) => [
      need[0] ? dy!.mul(x1(n)).mul(x0(n).pow(x1(n).sub(1))) : null,
      need[1] ? dy!.mul(n.outputs[0]).mul(x0(n).log()) : null,
    ],
  },
  // d max(a,b): to a where a >= b, else to b (ties go to a)
  Max: {
    infer: binary,
    vjp: (n, [dy], need) => {
      const ge = x0(n).less(x1(n)).not();
      return [need[0] ? ge.where(dy!, 0) : null, need[1] ? ge.where(0, dy!) : null];
    },
  },
  // d min(a,b): to a where a <= b, else to b
  Min: {
    infer: binary,
    vjp: (n, [dy], need) => {
      const le = x0(n).greater(x1(n)).not();
      return [need[0] ? le.where(dy!, 0) : null, need[1] ? le.where(0, dy!) : null];
    },
  },
  // d(−x) = −dx
  Neg: { infer: unary, vjp: (_n, [dy]) => [dy!.neg()] },
  // d exp(x) = exp(x)·dx
  Exp: { infer: unaryFloat, vjp: (n, [dy]) => [dy!.mul(n.outputs[0])] },
  // d log(x) = dx/x
  Log: { infer: unaryFloat, vjp: (n, [dy]) => [dy!.div(x0(n))] },
  // d sqrt(x) = dx / (2·sqrt(x))
  Sqrt: { infer: unaryFloat, vjp: (n, [dy]) => [dy!.div(n.outputs[0].mul(2))] },
  // d tanh(x) = (1 − tanh²(x))·dx
  Tanh: {
    infer: unaryFloat,
    vjp: (n, [dy]) => {
      const y = n.outputs[0];
      return [dy!.mul(y.lift(1).sub(y.mul(y)))];
    },
  },
  // d erf(x) = 2/√π·exp(−x²)·dx
  Erf: {
    infer: unaryFloat,
    vjp: (n, [dy]) => {
      const x = x0(n);
      return [
        dy!.mul(
          x
            .mul(x)
            .neg()
            .exp()
            .mul(2 / Math.sqrt(Math.PI)),
        ),
      ];
    },
  },
  // d σ(x) = σ(x)(1 − σ(x))·dx
  Sigmoid: {
    infer: unaryFloat,
    vjp: (n, [dy]) => {
      const y = n.outputs[0];
      return [dy!.mul(y.mul(y.lift(1).sub(y)))];
    },
  },
  // d(1/x) = −dx/x²
  Reciprocal: {
    infer: unaryFloat,
    vjp: (n, [dy]) => {
      const y = n.outputs[0];
      return [dy!.mul(y.mul(y)).neg()];
    },
  },
  // d|x| = sign(x)·dx
  Abs: { infer: unary, vjp: (n, [dy]) => [dy!.mul(x0(n).graph.op('Sign', [x0(n)]))] },
  // d relu(x) = dx where x > 0
  Relu: { infer: unary, vjp: (n, [dy]) => [x0(n).greater(0).where(dy!, 0)] },
  Sign: { infer: unary, vjp: 'piecewise constant: its gradient is zero almost everywhere' },
  // d sin(x) = cos(x)·dx
  Sin: { infer: unaryFloat, vjp: (n, [dy]) => [dy!.mul(x0(n).graph.op('Cos', [x0(n)]))] },
  // d cos(x) = −sin(x)·dx
  Cos: { infer: unaryFloat, vjp: (n, [dy]) => [dy!.mul(x0(n).graph.op('Sin', [x0(n)])).neg()] },
  Floor: { infer: unaryFloat, vjp: 'piecewise constant: its gradient is zero almost everywhere' },
  // d where(c, a, b) = where(c, da, 0) + where(c, 0, db)
  Where: {
    infer: (ins) => {
      if (ins[0]!.dtype !== 'bool')
        throw new LorakitError('LK_DTYPE_MISMATCH', `Where: the condition must be bool, got ${ins[0]!.dtype}`);
      const d = sameDtype(ins.slice(1));
      return one(
        broadcastShapes(broadcastShapes(ins[0]!.shape, ins[1]!.shape, 'broadcast'), ins[2]!.shape, 'broadcast'),
        d,
      );
    },
    vjp: (n, [dy], need) => [
      null,
      need[1] ? n.inputs[0]!.where(dy!, 0) : null,
      need[2] ? n.inputs[0]!.where(0, dy!) : null,
    ],
  },
  Equal: { infer: compare, vjp: 'comparisons are not differentiable' },
  Greater: { infer: compare, vjp: 'comparisons are not differentiable' },
  Less: { infer: compare, vjp: 'comparisons are not differentiable' },
  And: { infer: logic, vjp: 'logical ops are not differentiable' },
  Or: { infer: logic, vjp: 'logical ops are not differentiable' },
  Not: { infer: logic, vjp: 'logical ops are not differentiable' },
  BitwiseXor: { infer: integerBinary, vjp: 'integer ops are not differentiable' },
  // identity (also detach(), whose node autodiff skips)
  Identity: { infer: unary, vjp: (_n, [dy]) => [dy] },
};
