// The primitive table: every op lorakit emits, each with shape inference and a gradient rule (or the reason it has
// none).
// Typed over the op-name union (types.ts), so a new primitive without an entry does not compile.
import { elementwiseOps } from './elementwise.ts';
import { linalgOps } from './linalg.ts';
import { reduceOps } from './reduce.ts';
import { movementOps } from './movement.ts';
import { nnOps } from './nn.ts';
import { convOps } from './conv.ts';
import { quantOps } from './quant.ts';
import { controlOps } from './control.ts';
import type { OpDef, OpName } from './types.ts';

export const OPS: Record<OpName, OpDef> = {
  ...elementwiseOps,
  ...linalgOps,
  ...reduceOps,
  ...movementOps,
  ...nnOps,
  ...convOps,
  ...quantOps,
  ...controlOps,
};

export type { Attrs, AttrGraph, AttrTensor, OpDef, OpName } from './types.ts';
export { FLOAT_ATTRS } from './types.ts';
export { type Conv2dOptions, type ConvTranspose2dOptions, conv2dAttrs } from './conv.ts';
export {
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
} from './quant.ts';
