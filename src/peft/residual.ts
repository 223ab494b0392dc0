/**
 * What every initialisation that replaces the frozen weight shares (PiSSA and OLoRA; LoRA-GA is the next): PEFT's
 * rules on which weights may be decomposed — stored as float32, float16 or bfloat16 (PEFT's pissa_init and
 * olora_init raise a TypeError for any other dtype) and, since the factors are columns of a decomposition,
 * r ≤ min(out, in) — and the residual W_res = W0 − s·B·A computed from the factors actually returned, so that any
 * error of the decomposition (a randomized SVD's, rounding) is absorbed and the model's output is unchanged at init
 * (spec methods-b §0). Everything is on the [out, in] matrix view of the weight (layers.ts), so GPT-2's Conv1D is
 * handled where its weight is read and written, not in each method.
 * Not here: the decompositions (linalg/), how the replaced weight is held, used and saved (model.ts, format.ts).
 */
import { LorakitError } from '../errors.ts';
import { fromMatrix, matrixDims } from './layers.ts';
import type { LayerInfo } from './method.ts';

/** The stored dtypes PEFT decomposes (torch.float32, float16, bfloat16), by their safetensors names. */
const DECOMPOSABLE = ['F32', 'F16', 'BF16'];

/**
 * Refuses a layer that method `method` cannot decompose at rank `r`: a weight stored in a dtype PEFT refuses (F64 is
 * the one lorakit models can hold; integer weights are already refused when a model is opened), or a rank larger
 * than the weight's smaller side.
 */
export function checkDecomposable(method: string, layer: LayerInfo, r: number): void {
  if (!DECOMPOSABLE.includes(layer.weightDtype)) {
    throw new LorakitError(
      'LK_UNSUPPORTED',
      `${method} cannot initialise ${layer.path}: its weight is stored as ${layer.weightDtype}, and PEFT ` +
        `decomposes only ${DECOMPOSABLE.join(', ')} weights (it would refuse the adapter folder); convert the ` +
        'model to float32 or bfloat16 first, or exclude the layer',
      { layer: layer.path, dtype: layer.weightDtype },
    );
  }
  const [o, i] = matrixDims(layer);
  if (r > Math.min(o, i)) {
    throw new LorakitError(
      'LK_CONFIG_INVALID',
      `${method} needs r ≤ min(out, in) for ${layer.path}, whose weight is [${o}, ${i}] as an [out, in] matrix, ` +
        `but r = ${r}; lower r, or give the layer a smaller rank in rank_pattern`,
      { field: 'r', layer: layer.path },
    );
  }
}

/**
 * W_res = W0 − s·B·A in the stored layout: `w` is W0 as its [out, in] matrix, A [r, in], B [out, r] the initial
 * factors (float32, as trained), `scaling` the s the forward uses (alpha/r, or alpha/√r with rsLoRA). Each entry is
 * accumulated in float64 and rounded once.
 */
export function residualWeight(
  layer: LayerInfo,
  w: Float32Array,
  a: Float32Array,
  b: Float32Array,
  r: number,
  scaling: number,
): Float32Array {
  const [o, i] = matrixDims(layer);
  const out = new Float32Array(o * i);
  const row = new Float64Array(i);
  for (let p = 0; p < o; p++) {
    row.fill(0);
    for (let j = 0; j < r; j++) {
      const bj = b[p * r + j];
      if (bj === 0) continue;
      for (let c = 0; c < i; c++) row[c] += bj * a[j * i + c]; // (B·A)[p, :]
    }
    for (let c = 0; c < i; c++) out[p * i + c] = w[p * i + c] - scaling * row[c];
  }
  return fromMatrix(layer, out);
}
