// graph/: symbolic tensors, primitives with gradient rules, autodiff, composites and ONNX serialisation.
export { Graph, Tensor, type Node, type InitData, type TensorLike } from './graph.ts';
export { memoTable, type MemoTable } from './memo.ts';
export { grad, sumToShape } from './autodiff.ts';
export {
  logSoftmax,
  layerNorm,
  rmsNorm,
  gelu,
  silu,
  crossEntropy,
  tokenNll,
  hashUniformLike,
  dropout,
  sweepInverse,
} from './functions.ts';
export { toOnnx, OPSET, IR_VERSION } from './onnx.ts';
export {
  OPS,
  type OpName,
  type AttrGraph,
  INT8_BACKWARD,
  backwardProduct,
  backwardRows,
  type BackwardWeight,
  type FloatBackward,
  type Int8Backward,
  int8RowsMatMul,
  int8RowsInputGrad,
  rowQuantizedMatMul,
  type VocabBackward,
  vocabBackward,
  VOCAB_BLOCK,
} from './ops/index.ts';
export { type DType, ONNX_DTYPE, DTYPE_SIZE, type AnyTypedArray, allocArray, arrayFrom, isFloat } from './dtype.ts';
export { type Dim, type Shape, fmtShape, numel, broadcastShapes } from './shape.ts';
