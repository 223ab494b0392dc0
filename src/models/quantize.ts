/**
 * A quantized frozen base (QLoRA-style): every Linear/Conv1D of the transformer blocks gets its weight quantized
 * once on the host (nn/quantize.ts), and every graph built from the returned model multiplies by it through
 * ORT's integer kernels. Embeddings, norms and the output head stay in float, as bitsandbytes keeps lm_head: the
 * head's product over the vocabulary is the most sensitive one, and tied to the embedding it is no Linear here.
 * Not here: the quantization formats (nn/quantize.ts), the graph ops (graph/ops/quant.ts).
 */
import { LorakitError } from '../errors.ts';
import { type ModuleInfo, type QuantMode, type QuantizedWeight, quantizedBytes, quantizeWeight } from '../nn/index.ts';
import type { LoadedModel } from './load.ts';

/** What quantizeBase did: the weights by HF name, and the bytes before (float32) and after. */
export interface QuantizedBase {
  mode: Exclude<QuantMode, 'none'>;
  weights: Map<string, QuantizedWeight>;
  /** float32 bytes of the quantized weights. */
  floatBytes: number;
  /** Bytes of their quantized form (for q4 including the int8 copy its input gradient uses). */
  quantizedBytes: number;
}

/** Whether a module of the list is quantized: Linears and Conv1Ds except the output head and tied weights. */
export function quantizable(m: ModuleInfo, all: readonly ModuleInfo[]): boolean {
  if (m.kind !== 'linear' && m.kind !== 'conv1d') return false;
  if (/(^|\.)lm_head$/.test(m.path)) return false;
  return !all.some((o) => o !== m && o.kind === 'embedding' && o.weightName === m.weightName);
}

/**
 * Quantizes the weights of the quantizable modules in `modules`, reading each (as float32, in its stored layout)
 * with `read`. Weights shared by several modules are quantized once.
 */
export async function quantizeBase(
  modules: readonly ModuleInfo[],
  read: (name: string) => Promise<Float32Array>,
  mode: Exclude<QuantMode, 'none'>,
): Promise<QuantizedBase> {
  const weights = new Map<string, QuantizedWeight>();
  let floatBytes = 0;
  let qBytes = 0;
  for (const m of modules) {
    if (!quantizable(m, modules) || m.kind === 'embedding' || m.kind === 'conv2d' || weights.has(m.weightName))
      continue;
    const { inFeatures: inF, outFeatures: out } = m;
    const stored = await read(m.weightName);
    const w = m.kind === 'conv1d' ? transpose(stored, inF, out) : stored; // [out, in]
    const q = quantizeWeight(w, out, inF, mode);
    weights.set(m.weightName, q);
    floatBytes += 4 * w.length;
    qBytes += quantizedBytes(q);
  }
  return { mode, weights, floatBytes, quantizedBytes: qBytes };
}

/**
 * The model with its frozen Linears quantized in `mode`: its contexts (and so every graph: train step, eval,
 * generation) multiply by the quantized weights. 'none' returns the model itself.
 */
export async function quantizeModel(model: LoadedModel, mode: QuantMode): Promise<LoadedModel> {
  if (mode === 'none') return model;
  if (mode !== 'int8' && mode !== 'q4')
    throw new LorakitError('LK_INVALID_ARGUMENT', `quantize: mode must be none, int8 or q4, got ${String(mode)}`);
  const base = await quantizeBase(model.modules(), (n) => model.read(n), mode);
  return {
    ...model,
    context: (graph, opts = {}) => model.context(graph, { quantized: base.weights, ...opts }),
    quantizedBase: base,
  };
}

function transpose(w: Float32Array, rows: number, cols: number): Float32Array {
  const t = new Float32Array(w.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[c * rows + r] = w[r * cols + c];
  return t;
}
