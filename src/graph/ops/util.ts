// Helpers shared by the op families: reading constant inputs, dtype checks, zeros and shapes for gradients.
import { LorakitError } from '../../errors.ts';
import type { Tensor } from '../graph.ts';
import type { DType } from '../dtype.ts';
import { type Dim, type Shape, isStatic } from '../shape.ts';
import type { OutInfo } from './types.ts';

/** The integer values of a constant i64/i32 input, or null when the input is computed at run time. */
export function constInts(t: Tensor | null | undefined): number[] | null {
  if (t?.kind !== 'initializer') return null;
  const init = t.graph.initializers.get(t.name);
  if (init?.data.kind !== 'array') return null;
  return Array.from(init.data.array as ArrayLike<number | bigint>, Number);
}

/** The one dtype shared by all tensors, or a LK_DTYPE_MISMATCH naming them. */
export function sameDtype(ts: readonly (Tensor | null)[]): DType {
  const present = ts.filter((t): t is Tensor => t !== null);
  const d = present[0].dtype;
  for (const t of present) {
    if (t.dtype !== d)
      throw new LorakitError(
        'LK_DTYPE_MISMATCH',
        `inputs must share one dtype, got ${present.map((x) => x.dtype).join(' and ')}`,
      );
  }
  return d;
}

export function requireFloat(t: Tensor, what: string): void {
  if (!['f32', 'f64', 'f16', 'bf16'].includes(t.dtype))
    throw new LorakitError('LK_DTYPE_MISMATCH', `${what} needs a float tensor, got ${t.dtype}`);
}

export const one = (shape: Dim[], dtype: DType): OutInfo[] => [{ dtype, shape }];

/** The shape of `t` as an i64 tensor: a constant when static, else a Shape node. */
export function shapeTensor(t: Tensor | { graph: Tensor['graph']; shape: Shape; like?: Tensor }): Tensor {
  if (isStatic(t.shape)) return t.graph.constInts([...(t.shape as number[])]);
  const like = 'like' in t && t.like ? t.like : (t as Tensor);
  return like.shapeOf();
}

/** Zeros with the shape (and dtype) of `like`. */
export function zerosLike(like: Tensor, dtype: DType = like.dtype): Tensor {
  const g = like.graph;
  const value = {
    dtype,
    dims: [1],
    data: dtype === 'f64' ? new Float64Array(1) : dtype === 'i64' ? new BigInt64Array(1) : new Float32Array(1),
  };
  return g.op('ConstantOfShape', [shapeTensor(like)], { value }, { shape: like.shape });
}

/** Reshape `t` to the shape of `like` (static when known). */
export function reshapeLike(t: Tensor, like: Tensor): Tensor {
  if (isStatic(like.shape)) return t.reshape(like.shape as number[]);
  return t.reshape(like.shapeOf(), like.shape);
}
