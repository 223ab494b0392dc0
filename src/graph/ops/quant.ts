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

/**
 * What a quantized weight's input gradient multiplies by: an int8 copy, W̃ [N, K] ≈ diag(scale)·(weight − zero),
 * a float weight [N, K] the graph holds anyway (FloatBackward), the per-channel codes read as blocks over N
 * (VocabBackward), or those codes times dY rounded per row twice (VocabResidual).
 */
export type BackwardWeight = Int8Backward | FloatBackward | VocabBackward | VocabResidual;

/** The int8 copy of a quantized weight that its input gradient multiplies by. */
export interface Int8Backward {
  /** u8 or i8 [N, K]: W̃ requantized per row n, stored as code + zero. */
  weight: Tensor;
  /** f32 [N]. */
  scale: Tensor;
  /** Scalar of the weight's type: the codes' zero point. */
  zero: Tensor;
}

/**
 * A float weight [N, K] for the input gradient: a tied output head's, which the embedding gathers from anyway. Its
 * gradient is over the vocabulary, where an 8-bit grid per row would drop every probability below half a step (the
 * many small ones sum to much of the gradient); in float it costs no memory, only the float product's time.
 */
export interface FloatBackward {
  float: Tensor;
}

/**
 * W̃ = diag(scale)·codes [N, K] for an input gradient over a vocabulary (N), in integers without a per-row grid:
 * dY·W̃ = MatMulNBits(dY·diag(scale), codesᵀ as 8-bit blocks along N, every block's scale 1), whose kernel
 * (accuracy_level 4) rounds each VOCAB_BLOCK entries of a row to int8 by their own largest magnitude, so a block of
 * small probabilities keeps its own fine grid. The codes are W̃'s own, so the only rounding is that of dY's blocks:
 * 0.85 % of E on SmolLM2 and real text against 7 % for a grid per row (bench/head-grad.ts), 1.7–1.8× faster than
 * float32.
 */
export interface VocabBackward {
  /** u8 [K, ⌈N / block⌉, block]: code + 128 (MatMulNBits' implicit zero point), the last block padded by code 0. */
  blocks: Tensor;
  /** f32 [N]. */
  scale: Tensor;
  /** f32 [K · ⌈N / block⌉] of 1s: MatMulNBits' block scales. */
  unit: Tensor;
  /** The codes [K, N] and zero point the blocks were made from (backwardRows reads W̃'s rows from them). */
  codes: Tensor;
  zero: Tensor;
}

/**
 * W̃ = diag(scale)·(weight − zero) [N, K] for an input gradient over a vocabulary (N) where ORT's u8·s8 product
 * is an order faster than MatMulNBits' blocks (AMX: 4.8 against 0.34 TOP/s, bench/precision.ts): each row of
 * a = dY·diag(scale) is rounded to int8 by its largest magnitude, what that left (at most half a step) again on a
 * grid 254× finer, and two integer products (MatMulInteger) add the two. Per [255, 50,257]·[50,257, 768] chunk
 * (scratch ORT script, AMX): 35 ms against float32's 48 and the blocks' 100. On real text E is 0.57 % from the exact
 * one as the fused loss takes it (probabilities only), the blocks' 0.55 % (bench/head-grad.ts).
 */
export interface VocabResidual {
  residual: Int8Backward;
}

/** Entries of dY per int8 block in VocabBackward: 128 measured 1.8× float32's speed against 1.4× for 32. */
export const VOCAB_BLOCK = 128;

/**
 * The VocabBackward of per-channel codes b [K, N] (the layout DynamicQuantizeMatMul multiplies by) with zero point
 * bZero and scales bScale [N]. Made from constants only, so ORT computes the blocks once, at load.
 */
export function vocabBackward(b: Tensor, bZero: Tensor, bScale: Tensor): VocabBackward {
  const g = b.graph;
  const [K, N] = b.shape as number[];
  const nb = Math.ceil(N / VOCAB_BLOCK);
  let u = b.cast('i32').sub(bZero.cast('i32')).add(128).cast('u8'); // [K, N]: code + 128
  if (nb * VOCAB_BLOCK > N) u = g.concat([u, g.scalar(128, 'u8').expand([K, nb * VOCAB_BLOCK - N])], 1);
  const unit = g.scalar(1, 'f32').expand([K * nb]);
  return { blocks: u.reshape([K, nb, VOCAB_BLOCK]), scale: bScale, unit, codes: b, zero: bZero };
}

/**
 * Rows `ids` [n] of the W̃ [N, K] that backwardProduct multiplies by, as f32 [n, K]: backwardProduct of one-hot
 * rows, exactly and without the one-hot (the fused head's E = softmax·W̃ − W̃[target], train/loss.ts).
 */
export function backwardRows(back: BackwardWeight, ids: Tensor): Tensor {
  if ('float' in back) return back.float.gather(ids, 0);
  const codes = (c: Tensor, zero: Tensor, scale: Tensor) =>
    c.cast('f32').sub(zero.cast('f32')).mul(scale.gather(ids).unsqueeze(-1));
  if ('blocks' in back) return codes(back.codes.gather(ids, 1).transpose([1, 0]), back.zero, back.scale);
  const b = 'residual' in back ? back.residual : back;
  return codes(b.weight.gather(ids, 0), b.zero, b.scale);
}

/** dA = dY·W̃ through `back`. */
export function backwardProduct(dy: Tensor, back: BackwardWeight): Tensor {
  if ('float' in back) return dy.matmul(back.float);
  if ('blocks' in back) {
    const [K, , block] = back.blocks.shape as number[];
    const attrs = { K: back.scale.shape[0], N: K, bits: 8, block_size: block, accuracy_level: 4 };
    return dy.graph.op('MatMulNBits', [dy.mul(back.scale), back.blocks, back.unit], attrs);
  }
  if ('residual' in back)
    return residualRowsMatMul(dy.mul(back.residual.scale), back.residual.weight, back.residual.zero);
  return rowQuantizedMatMul(dy.mul(back.scale), back.weight, dy.graph.scalar(1, 'f32'), back.zero);
}

/**
 * a·(b − bZero) for float a [..., K] and int8 codes b [K, N], a rounded per row in two levels (VocabResidual):
 * v = a·127/r with r the row's largest magnitude (detached), q1 = round(v), q2 = round(254·(v − q1)), so
 * a ≈ (q1 + q2/254)·r/127 with an error of at most r/(2·127·254) per entry.
 */
export function residualRowsMatMul(a: Tensor, b: Tensor, bZero: Tensor): Tensor {
  const g = a.graph;
  const step = rowAbsMax(a).div(127); // [..., 1]
  const v = a.div(step);
  const [one, zero] = [g.scalar(1, 'f32'), g.scalar(128, 'u8')];
  const q1 = g.op('QuantizeLinear', [v, one, zero]); // u8: round(v) + 128
  const rest = v.sub(g.op('DequantizeLinear', [q1, one, zero]));
  const q2 = g.op('QuantizeLinear', [rest, g.scalar(1 / 254, 'f32'), zero]);
  const times = (q: Tensor) => g.op('MatMulInteger', [q, b, zero, bZero]).cast('f32');
  return times(q1).add(times(q2).div(254)).mul(step); // [..., N]
}

/**
 * For each quantized weight input B (the key), the int8 copy its input gradient multiplies by. MatMulNBits has no
 * transposed form, so the builder of a block layer registers one (`graph.memo(INT8_BACKWARD, b, () => copy)`), and
 * deriving it in the graph would unpack nibbles into a float matrix that ORT would fold into a float32 initializer.
 * DynamicQuantizeMatMul's rule transposes B when nothing is registered (ORT folds that transpose into a new
 * initializer at load); a builder that has the transposed codes in a file registers them instead.
 */
export const INT8_BACKWARD = memoTable<Tensor, BackwardWeight>('int8 copy of a quantized weight for dX');

/**
 * a·B̃ for float a [..., K] and int8 codes b [K, N] with zero point bZero (scalar) and per-column scales bScale [N]
 * (B̃ = (b − bZero)·diag(bScale)), with a quantized per row: each row is divided by its largest magnitude r
 * (detached) before DynamicQuantizeMatMul, whose per-tensor uint8 grid over [−1, 1] is then a per-row grid of step
 * 2r/255, and the product is multiplied back by r. Without it one large row (a token with a large output gradient)
 * would coarsen the grid of every other row. The codes are uint8 with zero point 128 (ORT's U8U8 kernels, which do
 * not saturate; nn/quantize.ts INT8_LEVELS says why) or, where the CPU multiplies u8·s8 in int32 without that
 * saturation (VNNI, AMX), int8 with zero point 0, which ORT runs ~2.5× faster there (nn/quant-linear.ts Int8Codes).
 */
export function rowQuantizedMatMul(a: Tensor, b: Tensor, bScale: Tensor, bZero: Tensor): Tensor {
  const { unit, r } = perRow(a);
  return a.graph.op('DynamicQuantizeMatMul', [unit, b, bScale, bZero]).mul(r); // [..., N]
}

/** The largest magnitude of each row of a, [..., 1], detached; 1e-30 for an all-zero row, which then stays 0. */
const rowAbsMax = (a: Tensor): Tensor => a.abs().max(-1, true).maximum(1e-30).detach();

/** a divided by its rows' largest magnitudes r (detached): entries in [−1, 1]. */
function perRow(a: Tensor): { unit: Tensor; r: Tensor } {
  const r = rowAbsMax(a);
  return { unit: a.div(r), r };
}

/** What int8RowsMatMul derives from its input alone, shared by the products that read one input (q, k, v). */
interface RowsInput {
  /** [k] i64: the outlier columns. */
  cols: Tensor;
  /** [..., k]: those columns of a. */
  outliers: Tensor;
  /** The other columns divided by their rows' largest magnitude r (the outlier columns zeroed). */
  unit: Tensor;
  r: Tensor;
  /** [K]: 0 at the outlier columns, 1 elsewhere. */
  keep: Tensor;
  /** [K, k]: the one-hot matrix S whose product a·S takes the outlier columns out. */
  select: Tensor;
}

/** Per graph, by input tensor and outlier count (`${k}`), its RowsInput. */
const ROWS_INPUT = memoTable<Tensor, Map<number, RowsInput>>('int8RowsMatMul: the prepared rows of one input');

/**
 * rowQuantizedMatMul with LLM.int8()'s decomposition (Dettmers et al., 2022) at a fixed count: the `outliers` input
 * columns with the largest magnitude in this batch (detached: the choice has no gradient) multiply in float32 by
 * their rows of B̃, the other columns through the per-row int8 product, so a few outlier channels of the hidden
 * states no longer set every row's grid. A fixed count, not bitsandbytes' threshold 6.0, keeps the graph's shapes
 * static. The float rows are gathered from the codes (k × N), so no float copy of B̃ is made; the autodiff gives
 * the input gradient as dY·B̃ through DynamicQuantizeMatMul's rule on the masked part plus the small float product's.
 * The outlier rows come from the codes even where a float weight is at hand (a tied head's embedding, FloatBackward):
 * k contiguous rows of B, where k columns of a float [N, K] cost a strided gather over all N rows (25 ms of a 50k
 * vocabulary's 256-row chunk, measured; bench/RESULTS.md). Products that read the same input (q, k and v of one
 * layer) share its column choice and quantized rows.
 */
export function int8RowsMatMul(a: Tensor, b: Tensor, bScale: Tensor, bZero: Tensor, outliers: number): Tensor {
  const g = a.graph;
  const K = b.shape[0] as number;
  const k = Math.min(outliers, K);
  if (k <= 0) return rowQuantizedMatMul(a, b, bScale, bZero);
  const byCount = g.memo(ROWS_INPUT, a, () => new Map<number, RowsInput>());
  let p = byCount.get(k);
  if (!p) {
    const lead = Array.from({ length: a.rank - 1 }, (_, i) => i);
    const [, cols] = a.detach().abs().max(lead).topk(k); // [k] i64
    const keep = g
      .constant(new Float32Array(K).fill(1), 'f32', [K])
      .scatterElements(cols, g.constant(new Float32Array(k), 'f32', [k]));
    // the outlier columns as a·S with S [K, k] one-hot (exact: each output sums one product by 1): a product and its
    // transpose in the backward, where a Gather of k columns and its ScatterElements gradient took 0.7–1.8 ms each
    // per [1024, K] input (profile)
    const select = g
      .constant(new Float32Array(K * k), 'f32', [K, k])
      .scatterElements(cols.reshape([1, k]), g.constant(new Float32Array(k).fill(1), 'f32', [1, k]));
    p = { cols, outliers: a.matmul(select), keep, select, ...perRow(a.mul(keep)) };
    byCount.set(k, p);
  }
  const product = g.op('DynamicQuantizeMatMul', [p.unit, b, bScale, bZero]).mul(p.r);
  return product.add(p.outliers.matmul(outlierRows(p.cols, b, bScale, bZero))); // [..., N]
}

/** Per graph, by codes b and then by column choice, the float rows B̃[cols] [k, N] (forward and input gradient). */
const OUTLIER_ROWS = memoTable<Tensor, Map<Tensor, Tensor>>('int8RowsMatMul: the float rows of its outlier columns');

function outlierRows(cols: Tensor, b: Tensor, bScale: Tensor, bZero: Tensor): Tensor {
  const byCols = b.graph.memo(OUTLIER_ROWS, b, () => new Map<Tensor, Tensor>());
  let rows = byCols.get(cols);
  if (!rows) {
    rows = b.gather(cols, 0).cast('f32').sub(bZero.cast('f32')).mul(bScale); // [k, N] of B̃
    byCols.set(cols, rows);
  }
  return rows;
}

/**
 * The input gradient of int8RowsMatMul(a, b, …) written out, for a caller that takes it without differentiating the
 * product (loss.ts's fused head): dY·B̃ᵀ through `back` on the quantized columns, and in float32 on the outlier
 * columns, where the forward multiplied in float, as the product's own rules give it: (dY·B̃[cols]ᵀ)·Sᵀ. Outlier
 * columns hold the input's largest values, so an 8-bit grid there would weigh most in what the gradient feeds (a
 * norm's weight: 2× the error of the rules on the test model). `a` must be the tensor the forward multiplied;
 * without its column choice in this graph the whole product goes through `back`.
 */
export function int8RowsInputGrad(
  dy: Tensor,
  a: Tensor,
  b: Tensor,
  bScale: Tensor,
  bZero: Tensor,
  back: BackwardWeight,
  outliers: number,
): Tensor {
  const k = Math.min(outliers, b.shape[0] as number);
  const p = k > 0 ? a.graph.memo(ROWS_INPUT, a, () => new Map<number, RowsInput>()).get(k) : undefined;
  if (!p) return backwardProduct(dy, back);
  const rows = outlierRows(p.cols, b, bScale, bZero); // [k, N]
  const outlierGrad = dy.gemm(rows, null, { transB: 1 }).gemm(p.select, null, { transB: 1 }); // [n, K]
  return backwardProduct(dy, back).mul(p.keep).add(outlierGrad);
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

/** A scalar zero point of a u8 or i8 tensor, as lorakit passes it to the integer ops. */
const isZero = (t: Tensor | null | undefined, of: Tensor): boolean => t?.dtype === of.dtype && t.rank === 0;
const isCodes = (t: Tensor): boolean => t.dtype === 'u8' || t.dtype === 'i8';
const ROUNDING = 'rounding to integers: no gradient (lorakit builds these only inside gradient products)';

export const quantOps: Record<QuantOp, OpDef> = {
  // y = saturate(round_half_even(x / scale) + zero), per tensor: scalar scale and zero point, whose type y takes
  QuantizeLinear: {
    infer: ([x, s, z]) => {
      if (x!.dtype !== 'f32' || s!.dtype !== 'f32' || s!.rank !== 0 || !z || !isCodes(z) || z.rank !== 0)
        throw new LorakitError(
          'LK_DTYPE_MISMATCH',
          'QuantizeLinear: lorakit uses f32 x, scalar f32 scale and u8/i8 zero',
        );
      return [{ dtype: z.dtype, shape: [...x!.shape] }];
    },
    vjp: ROUNDING,
  },
  // y = (x − zero)·scale, per tensor
  DequantizeLinear: {
    infer: ([x, s, z]) => {
      if (!isCodes(x!) || s!.dtype !== 'f32' || s!.rank !== 0 || !isZero(z, x!))
        throw new LorakitError(
          'LK_DTYPE_MISMATCH',
          'DequantizeLinear: lorakit uses u8/i8 x, scalar f32 scale and zero',
        );
      return [{ dtype: 'f32', shape: [...x!.shape] }];
    },
    vjp: ROUNDING,
  },
  // Y = (A − a_zero)·(B − b_zero) in int32, A [..., K] and B [K, N] u8 or i8, scalar zero points
  MatMulInteger: {
    infer: ([a, b, az, bz]) => {
      const k = a!.shape[a!.rank - 1];
      const ok = isCodes(a!) && isCodes(b!) && b!.rank === 2 && isZero(az, a!) && isZero(bz, b!);
      if (!ok || (typeof k === 'number' && typeof b!.shape[0] === 'number' && k !== b!.shape[0]))
        throw new LorakitError(
          'LK_SHAPE_MISMATCH',
          `MatMulInteger: lorakit uses u8/i8 A [..., K], B [K, N] and scalar zero points, got ` +
            `${a!.toString()}, ${b!.toString()}`,
        );
      return [{ dtype: 'i32', shape: [...a!.shape.slice(0, -1), b!.shape[1]] }];
    },
    vjp: ROUNDING,
  },
  // Y = A·((B − b_zero)·diag(b_scale)), A quantized per tensor to uint8 inside the kernel (lorakit adds biases
  // itself); B uint8 or int8.
  DynamicQuantizeMatMul: {
    domain: 'com.microsoft',
    infer: ([a, b, s, zp, ...rest]) => {
      const codes = b!.dtype === 'u8' || b!.dtype === 'i8';
      if (!codes || b!.rank !== 2 || s!.dtype !== 'f32' || zp?.dtype !== b!.dtype || zp.rank !== 0 || rest[0])
        throw new LorakitError(
          'LK_DTYPE_MISMATCH',
          `DynamicQuantizeMatMul: lorakit uses B u8 or i8 [K, N] with f32 scales and a scalar zero point of B's type, ` +
            `no bias; got ` +
            `${b!.toString()}${zp ? `, zero point ${zp.toString()}` : ', no zero point'}`,
        );
      checkA(a!, b!.shape[0], 'DynamicQuantizeMatMul');
      return [{ dtype: 'f32', shape: [...a!.shape.slice(0, -1), b!.shape[1]] }];
    },
    // dA = dY·B̃ᵀ = (dY·diag(s))·(B − z)ᵀ: the same product with B transposed, or with the transposed codes
    // registered for B (INT8_BACKWARD). B, its scales and zero point are constants.
    vjp: (n, [dy], need) => {
      const [, b, s, z] = n.inputs;
      if (!need[0]) return [null];
      const back = b!.graph.memo(INT8_BACKWARD, b!, () => ({ weight: b!.transpose([1, 0]), scale: s!, zero: z! }));
      return [backwardProduct(dy!, back)];
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
    // dA = dY·W̃ ≈ (dY·diag(scale))·(weight − zero) with the registered int8 copy (INT8_BACKWARD).
    vjp: (n, [dy], need) => {
      const b = n.inputs[1]!;
      if (!need[0]) return [null];
      const back = b.graph.memo(INT8_BACKWARD, b, () =>
        internal(`MatMulNBits weight ${b.name} has no int8 backward copy; build 4-bit layers with quantizedLinear()`),
      );
      return [backwardProduct(dy!, back)];
    },
  },
};
