/**
 * Base layers as adapter methods see them: a `LayerInfo` from a model's module list, and the one place where a
 * stored weight is seen as the [out, in] matrix every formula of the specs is written for (GPT-2's Conv1D and
 * embeddings are stored transposed; a conv kernel [out, in/g, kh, kw] is the matrix [out, in/g·kh·kw]).
 * Not here: what methods compute (methods/), how layers are targeted (config.ts).
 */
import { LorakitError } from '../errors.ts';
import type { Tensor } from '../graph/index.ts';
import { transpose } from '../linalg/index.ts';
import { type ModuleInfo, conv2dWeightShape } from '../nn/index.ts';
import { layerIndexOf } from './config.ts';
import type { LayerInfo, LayerKind } from './method.ts';

/** The LayerInfo of a module; `store` reads a stored weight, and tells its stored dtype, by HF name. */
export function layerInfo(
  m: ModuleInfo,
  layersPattern: string | string[] | null,
  store: { read(name: string): Promise<Float32Array>; dtype(name: string): string },
): LayerInfo {
  const common = {
    path: m.path,
    layerIndex: layerIndexOf(m.path, layersPattern),
    weightDtype: store.dtype(m.weightName),
    readWeight: () => store.read(m.weightName),
  };
  if (m.kind === 'embedding') {
    const weightShape = [m.numEmbeddings, m.dim];
    return { ...common, kind: 'embedding', inFeatures: m.numEmbeddings, outFeatures: m.dim, conv: null, weightShape };
  }
  if (m.kind === 'conv2d') {
    const { kernel, stride, padding, dilation, groups } = m;
    const conv = { kernel, stride, padding, dilation, groups };
    const shape = conv2dWeightShape(m);
    return {
      ...common,
      kind: 'conv2d',
      inFeatures: m.inChannels,
      outFeatures: m.outChannels,
      conv,
      weightShape: shape,
    };
  }
  const weightShape = m.kind === 'conv1d' ? [m.inFeatures, m.outFeatures] : [m.outFeatures, m.inFeatures];
  return { ...common, kind: m.kind, inFeatures: m.inFeatures, outFeatures: m.outFeatures, conv: null, weightShape };
}

/** Rows and columns of the [out, in] matrix view of a layer's weight. */
export function matrixDims(layer: LayerInfo): [number, number] {
  const c = layer.conv;
  if (c) return [layer.outFeatures, (layer.inFeatures / c.groups) * c.kernel[0] * c.kernel[1]];
  return [layer.outFeatures, layer.inFeatures];
}

/** Whether the stored weight is the transpose of its matrix view (Conv1D [in, out], embedding [num, dim]). */
const storedTransposed = (layer: LayerInfo) => layer.kind === 'conv1d' || layer.kind === 'embedding';

/** A stored weight (or ΔW) as its [out, in] matrix (a copy only when the layouts differ). */
export function toMatrix(layer: LayerInfo, stored: Float32Array): Float32Array {
  const [o, i] = matrixDims(layer);
  return storedTransposed(layer) ? transpose(stored, i, o) : stored;
}

/** An [out, in] matrix in the stored layout of the layer's weight. */
export function fromMatrix(layer: LayerInfo, m: Float32Array): Float32Array {
  const [o, i] = matrixDims(layer);
  return storedTransposed(layer) ? transpose(m, o, i) : m;
}

/** The weight graph tensor as its [out, in] matrix. */
export function matrixOf(layer: LayerInfo, weight: Tensor): Tensor {
  if (storedTransposed(layer)) return weight.T;
  return layer.conv ? weight.reshape(matrixDims(layer)) : weight;
}

/** The error for a layer kind a method does not support. */
export function unsupportedLayer(method: string, layer: LayerInfo, supported: readonly LayerKind[]): LorakitError {
  return new LorakitError(
    'LK_UNSUPPORTED',
    `${method} cannot wrap ${layer.path}, a ${layer.kind} layer; it supports ${supported.join(', ')} layers` +
      (supported.length ? '; exclude the layer with exclude_modules or target other modules' : ''),
    { layer: layer.path, kind: layer.kind },
  );
}
