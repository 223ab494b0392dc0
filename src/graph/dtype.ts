// Element types of graph tensors, with their ONNX enum values and JS array types.

/** lorakit's dtype names. bf16 exists only as stored weights (ONNX Runtime has no bf16 CPU MatMul); cast it to f32. */
export type DType = 'f32' | 'f16' | 'bf16' | 'f64' | 'i64' | 'i32' | 'u8' | 'i8' | 'bool';

/** ONNX TensorProto.DataType value of each dtype. */
export const ONNX_DTYPE: Record<DType, number> = {
  f32: 1,
  u8: 2,
  i8: 3,
  i32: 6,
  i64: 7,
  bool: 9,
  f16: 10,
  f64: 11,
  bf16: 16,
};

/** onnxruntime-common's type string of each dtype. */
export const ORT_TYPE: Record<DType, string> = {
  f32: 'float32',
  f16: 'float16',
  bf16: 'bfloat16',
  f64: 'float64',
  i64: 'int64',
  i32: 'int32',
  u8: 'uint8',
  i8: 'int8',
  bool: 'bool',
};

/** Bytes per element. */
export const DTYPE_SIZE: Record<DType, number> = {
  f32: 4,
  f16: 2,
  bf16: 2,
  f64: 8,
  i64: 8,
  i32: 4,
  u8: 1,
  i8: 1,
  bool: 1,
};

export const FLOAT_DTYPES: readonly DType[] = ['f32', 'f16', 'bf16', 'f64'];

export function isFloat(d: DType): boolean {
  return FLOAT_DTYPES.includes(d);
}

/** The typed array that carries each dtype in JS (f16/bf16 as raw Uint16 bits, bool as Uint8). */
export type TypedArrayFor<D extends DType> = D extends 'f32'
  ? Float32Array
  : D extends 'f64'
    ? Float64Array
    : D extends 'i64'
      ? BigInt64Array
      : D extends 'i32'
        ? Int32Array
        : D extends 'f16' | 'bf16'
          ? Uint16Array
          : D extends 'i8'
            ? Int8Array
            : Uint8Array;

export type AnyTypedArray =
  | Float32Array
  | Float64Array
  | BigInt64Array
  | Int32Array
  | Uint16Array
  | Uint8Array
  | Int8Array;

/** Which dtype a JS typed array carries; ambiguous ones (Uint16Array, Uint8Array) need an explicit dtype. */
export function arrayMatchesDtype(a: AnyTypedArray, d: DType): boolean {
  switch (d) {
    case 'f32':
      return a instanceof Float32Array;
    case 'f64':
      return a instanceof Float64Array;
    case 'i64':
      return a instanceof BigInt64Array;
    case 'i32':
      return a instanceof Int32Array;
    case 'f16':
    case 'bf16':
      return a instanceof Uint16Array;
    case 'u8':
    case 'bool':
      return a instanceof Uint8Array;
    case 'i8':
      return a instanceof Int8Array;
  }
}

/** Allocates a typed array of n elements of dtype d. */
export function allocArray(d: DType, n: number): AnyTypedArray {
  switch (d) {
    case 'f32':
      return new Float32Array(n);
    case 'f64':
      return new Float64Array(n);
    case 'i64':
      return new BigInt64Array(n);
    case 'i32':
      return new Int32Array(n);
    case 'f16':
    case 'bf16':
      return new Uint16Array(n);
    case 'u8':
    case 'bool':
      return new Uint8Array(n);
    case 'i8':
      return new Int8Array(n);
  }
}

/** Builds a typed array of dtype d from JS numbers (f16/bf16 are not accepted here: convert with io/half). */
export function arrayFrom(d: DType, values: ArrayLike<number> | ArrayLike<bigint>): AnyTypedArray {
  const n = values.length;
  const out = allocArray(d, n);
  if (d === 'i64') {
    for (let i = 0; i < n; i++) (out as BigInt64Array)[i] = BigInt(values[i] as number | bigint);
  } else if (d === 'f16' || d === 'bf16') {
    throw new Error(`internal: arrayFrom cannot build ${d} from numbers`);
  } else {
    for (let i = 0; i < n; i++) (out as Float64Array)[i] = Number(values[i]);
  }
  return out;
}
