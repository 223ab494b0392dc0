// Matrix products with frozen quantized weights, run by ONNX Runtime's integer kernels (com.microsoft contrib ops
// of the CPU EP): DynamicQuantizeMatMul (int8 weights, the float input quantized to uint8 on the fly) and
// MatMulNBits (4-bit weights in blocks along K). The weights are constants, so the rules give the gradient of the
// float input only, and give it through an integer product too: no float copy of a weight ever enters the graph.
// The gradient is the straight-through one: the derivative of x·W̃ with W̃ the dequantized weight (rounding the
// input has derivative 0 almost everywhere, so the exact derivative would be useless).
// Not here: quantizing weights on the host (nn/quantize.ts), building a layer from them (nn/quant-linear.ts).
import { LorakitError, internal } from '../../errors.ts';
import type { Tensor } from '../graph.ts';
import { memoTable } from '../memo.ts';
import { fmtShape } from '../shape.ts';
import type { OpDef, QuantOp } from './types.ts';

/** The int8 copy of a 4-bit weight that its input gradient multiplies by: W̃ [N, K] ≈ diag(scale)·(weight − zero). */
export interface BackwardWeight {
  /** u8 [N, K]: W̃ requantized per row n, stored as code + zero. */
  weight: Tensor;
  /** f32 [N]. */
  scale: Tensor;
  /** u8 scalar: the codes' zero point. */
  zero: Tensor;
}

/**
 * For each MatMulNBits weight input B (the key), its int8 backward copy. The builder of a 4-bit layer registers it
 * (`graph.memo(NBITS_BACKWARD, b, () => copy)`); the rule reads it. MatMulNBits' inputs cannot carry it, and
 * deriving it in the graph would unpack nibbles into a float matrix that ORT would fold into a float32 initializer.
 */
export const NBITS_BACKWARD = memoTable<Tensor, BackwardWeight>('MatMulNBits: int8 copy of the weight for dX');

/**
 * a·B̃ for float a [..., K] and uint8 b [K, N] with zero point bZero (u8 scalar) and per-column scales bScale [N]
 * (B̃ = (b − bZero)·diag(bScale)), with a quantized per row: each row is divided by its largest magnitude r
 * (detached) before DynamicQuantizeMatMul, whose per-tensor uint8 grid over [−1, 1] is then a per-row grid of step
 * 2r/255, and the product is multiplied back by r. Without it one large row (a token with a large output gradient)
 * would coarsen the grid of every other row. B is uint8, not int8, so that ORT runs its U8U8 kernels, which do not
 * saturate (nn/quantize.ts INT8_LEVELS says why).
 */
export function rowQuantizedMatMul(a: Tensor, b: Tensor, bScale: Tensor, bZero: Tensor): Tensor {
  const r = a.abs().max(-1, true).maximum(1e-30).detach(); // [..., 1]; an all-zero row stays 0
  return a.graph.op('DynamicQuantizeMatMul', [a.div(r), b, bScale, bZero]).mul(r); // [..., N]
}

const intAttr = (v: unknown, what: string): number => {
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0)
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `MatMulNBits: attribute ${what} must be a positive integer, got ${v}`,
    );
  return v;
};

/** The float input's checks shared by both ops: float32 (the kernels' only type), last dim K. */
function checkA(a: Tensor, k: number | string, op: string): void {
  if (a.dtype !== 'f32')
    throw new LorakitError('LK_DTYPE_MISMATCH', `${op}: the input must be f32 (the CPU kernel's type), got ${a.dtype}`);
  const last = a.shape[a.rank - 1];
  if (a.rank < 1 || (typeof last === 'number' && typeof k === 'number' && last !== k))
    throw new LorakitError('LK_SHAPE_MISMATCH', `${op}: input ${fmtShape(a.shape)} does not end in K = ${k}`);
}

export const quantOps: Record<QuantOp, OpDef> = {
  // Y = A·((B − b_zero)·diag(b_scale)), A quantized per tensor to uint8 inside the kernel (lorakit adds biases
  // itself).
  DynamicQuantizeMatMul: {
    domain: 'com.microsoft',
    infer: ([a, b, s, zp, ...rest]) => {
      if (b!.dtype !== 'u8' || b!.rank !== 2 || s!.dtype !== 'f32' || zp?.dtype !== 'u8' || zp.rank !== 0 || rest[0])
        throw new LorakitError(
          'LK_DTYPE_MISMATCH',
          `DynamicQuantizeMatMul: lorakit uses B u8 [K, N] with f32 scales and a u8 scalar zero point, no bias; got ` +
            `${b!.toString()}${zp ? `, zero point ${zp.toString()}` : ', no zero point'}`,
        );
      checkA(a!, b!.shape[0], 'DynamicQuantizeMatMul');
      return [{ dtype: 'f32', shape: [...a!.shape.slice(0, -1), b!.shape[1]] }];
    },
    // dA = dY·B̃ᵀ = (dY·diag(s))·(B − z)ᵀ: the same product with B transposed (ORT folds that uint8 transpose once at
    // load). B, its scales and zero point are constants.
    vjp: (n, [dy], need) => {
      const [, b, s, z] = n.inputs;
      const one = dy!.graph.scalar(1, 'f32');
      return [need[0] ? rowQuantizedMatMul(dy!.mul(s!), b!.transpose([1, 0]), one, z!) : null];
    },
  },
  // Y = A·W̃ᵀ for W̃ [N, K] in blocks of block_size along K: W̃[n, k] = (q − 2^(bits−1))·scale[n, k / block_size]
  // (lorakit uses bits 4 and 8). No zero point: a float one sends ORT to its float kernel.
  MatMulNBits: {
    domain: 'com.microsoft',
    infer: ([a, b, s, zp], at) => {
      const [K, N, bits, bs] = [intAttr(at.K, 'K'), intAttr(at.N, 'N'), intAttr(at.bits, 'bits'), at.block_size];
      const blocks = Math.ceil(K / intAttr(bs, 'block_size'));
      const want = [N, blocks, ((bs as number) * bits) / 8];
      if (b!.dtype !== 'u8' || b!.rank !== 3 || b!.shape.some((d, i) => d !== want[i]) || s!.dtype !== 'f32' || zp)
        throw new LorakitError(
          'LK_SHAPE_MISMATCH',
          `MatMulNBits: lorakit uses B u8 ${fmtShape(want)} with f32 scales and no zero point, got ${b!.toString()}`,
        );
      checkA(a!, K, 'MatMulNBits');
      return [{ dtype: 'f32', shape: [...a!.shape.slice(0, -1), N] }];
    },
    // dA = dY·W̃ ≈ (dY·diag(scale))·(weight − zero) with the registered int8 copy (NBITS_BACKWARD).
    vjp: (n, [dy], need) => {
      const b = n.inputs[1]!;
      if (!need[0]) return [null];
      const back = b.graph.memo(NBITS_BACKWARD, b, () =>
        internal(`MatMulNBits weight ${b.name} has no int8 backward copy; build 4-bit layers with quantizedLinear()`),
      );
      return [rowQuantizedMatMul(dy!.mul(back.scale), back.weight, dy!.graph.scalar(1, 'f32'), back.zero)];
    },
  },
};
