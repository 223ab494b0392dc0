// What every primitive declares: how to infer its outputs, and its vector-Jacobian product (or why it has none).
import type { Node, Tensor } from '../graph.ts';
import type { AnyTypedArray, DType } from '../dtype.ts';
import type { Dim } from '../shape.ts';

/** A tensor-valued attribute (ConstantOfShape's value). */
export interface AttrTensor {
  dtype: DType;
  dims: number[];
  data: AnyTypedArray;
}
/** A graph-valued attribute (Scan's body): its nodes in order, its inputs, its outputs (see Graph.scan). */
export interface AttrGraph {
  nodes: readonly Node[];
  inputs: readonly Tensor[];
  outputs: readonly Tensor[];
}
/** ONNX attributes; numbers under FLOAT_ATTRS are written as floats, other numbers as ints. */
export type Attrs = Record<string, number | number[] | string | AttrTensor | AttrGraph>;
export const FLOAT_ATTRS: ReadonlySet<string> = new Set(['alpha', 'beta', 'epsilon']);

export interface OutInfo {
  dtype: DType;
  shape: Dim[];
}

/** node inputs, attributes, output count → dtype and shape of each output. Throws LorakitError on misuse. */
export type InferFn = (inputs: readonly (Tensor | null)[], attrs: Attrs, nOut: number) => OutInfo[];

/** Given the node and the gradient of each output (null: none flows), returns the gradient of each input that needs
 * one. */
export type VjpFn = (node: VjpNode, dys: readonly (Tensor | null)[], needs: readonly boolean[]) => (Tensor | null)[];
export interface VjpNode {
  inputs: readonly (Tensor | null)[];
  outputs: readonly Tensor[];
  attrs: Attrs;
}

export interface OpDef {
  infer: InferFn;
  /** The gradient rule, or a string saying why the op has none. */
  vjp: VjpFn | string;
  /** ONNX domain when not the default one. */
  domain?: string;
}

// The primitive names, by family. Each family file is typed `Record<FamilyOp, OpDef>`, so a name listed here
// without a definition (or a definition not listed) does not compile.
export type ElementwiseOp =
  | 'Add'
  | 'Sub'
  | 'Mul'
  | 'Div'
  | 'Pow'
  | 'Max'
  | 'Min'
  | 'Neg'
  | 'Exp'
  | 'Log'
  | 'Sqrt'
  | 'Tanh'
  | 'Erf'
  | 'Sigmoid'
  | 'Reciprocal'
  | 'Abs'
  | 'Relu'
  | 'Sign'
  | 'Sin'
  | 'Cos'
  | 'Floor'
  | 'Where'
  | 'Equal'
  | 'Greater'
  | 'Less'
  | 'And'
  | 'Or'
  | 'Not'
  | 'BitwiseXor'
  | 'Identity';
export type LinalgOp = 'MatMul' | 'Gemm';
export type ReduceOp = 'ReduceSum' | 'ReduceMean' | 'ReduceMax' | 'ReduceProd' | 'ArgMax' | 'TopK';
export type MovementOp =
  | 'Reshape'
  | 'Transpose'
  | 'Unsqueeze'
  | 'Squeeze'
  | 'Slice'
  | 'Pad'
  | 'Concat'
  | 'Split'
  | 'Expand'
  | 'Gather'
  | 'GatherElements'
  | 'ScatterElements'
  | 'ScatterND'
  | 'Cast'
  | 'Trilu'
  | 'Range'
  | 'Shape'
  | 'ConstantOfShape';
export type NnOp =
  | 'Softmax'
  | 'LogSoftmax'
  | 'LayerNormalization'
  | 'SoftmaxCrossEntropyLoss'
  | 'FastGelu'
  | 'QuickGelu'
  | 'RotaryEmbedding'
  | 'SimplifiedLayerNormalization';
export type ConvOp = 'Conv' | 'ConvTranspose';
export type QuantOp = 'DynamicQuantizeMatMul' | 'MatMulNBits' | 'QuantizeLinear' | 'DequantizeLinear' | 'MatMulInteger';
export type ControlOp = 'Scan';
/** Names of the primitives, equal to the ONNX op each one emits. */
export type OpName = ElementwiseOp | LinalgOp | ReduceOp | MovementOp | NnOp | ConvOp | QuantOp | ControlOp;
