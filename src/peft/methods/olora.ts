/**
 * OLoRA — "OLoRA: Orthonormal Low-Rank Adaptation of Large Language Models" (Büyükakyüz, 2024, arXiv:2406.01775); in
 * PEFT a LoRA initialisation, `init_lora_weights: "olora"` (peft/tuners/lora/layer.py `olora_init`). The adapter
 * starts as the first r columns of W0's QR factorisation and the frozen weight becomes the residual (spec methods-b
 * §4):  W0 = Q·R,  B = Q[:, :r] [out, r] (orthonormal columns),  A = R[:r, :] [r, in],  W_res = W0 − s·B·A,
 * on the [out, in] matrix view of the weight. s·B·A = s·Q_r·Q_rᵀ·W0 is s times W0 projected on the span of its
 * first r columns.
 *
 * Computed as the spec's cheap equivalent: Householder's first r reflectors see only W0[:, :r], so Q[:, :r] is the Q
 * of the thin QR of W0[:, :r] and R[:r, :] = Q_rᵀ·W0 (O(out·r² + out·in·r) instead of a full QR). linalg's `qr` keeps
 * LAPACK's signs, so B and A equal PEFT's column for column. Where W0[:, :r] is numerically rank-deficient, Q_r's
 * extra columns would be decided by rounding (or by LAPACK's convention for exact zeros); lorakit then takes the
 * pivoted QR's r columns instead (`qrPivoted`, the r most independent columns of all of W0) — the one case where it
 * departs from PEFT, whose re-initialisation of an unconverted folder then gives another residual.
 *
 * PEFT's olora_init factors the weight as stored, without fan_in_fan_out's transpose: on GPT-2's Conv1D (stored
 * [in, out]) it gives lora_B [in, r] and lora_A [r, out], which fail in the forward when in ≠ out and change the
 * model's output when in = out. lorakit factors the [out, in] matrix, so OLoRA on Conv1D is the same as on Linear.
 * Not here: the residual and PEFT's dtype and rank rules (peft/residual.ts), the QR (linalg/qr.ts).
 */
import { matmul, qr, qrPivoted, transpose } from '../../linalg/index.ts';
import { matrixDims, toMatrix } from '../layers.ts';
import type { MethodVariant } from '../method.ts';
import { checkDecomposable, residualWeight } from '../residual.ts';
import type { LoraConfig, LoraSettings } from './lora.ts';

/** Orthonormal columns Q_r [out, r] spanning W[:, :r], or the pivoted QR's r columns when that block is deficient. */
function leadingBasis(w: Float32Array, o: number, i: number, r: number): Float64Array {
  const block = new Float64Array(o * r); // W[:, :r]
  let largest = 0; // the largest column norm of the block bounds every |R[j, j]|
  for (let row = 0; row < o; row++) for (let j = 0; j < r; j++) block[row * r + j] = w[row * i + j];
  for (let j = 0; j < r; j++) {
    let n = 0;
    for (let row = 0; row < o; row++) n += block[row * r + j] ** 2;
    largest = Math.max(largest, Math.sqrt(n));
  }
  const f = qr(block, o, r); // q [o, r], r [r, r]
  const tol = Math.max(o, r) * 2 ** -52 * largest; // numpy.linalg.matrix_rank's tolerance
  let deficient = largest === 0;
  for (let j = 0; j < r; j++) if (Math.abs(f.r[j * r + j]) <= tol) deficient = true;
  return deficient ? qrPivoted(w, o, i, { steps: r }).q : f.q;
}

export const olora: MethodVariant<LoraConfig, LoraSettings> = {
  name: 'olora',
  paper: 'OLoRA: Orthonormal Low-Rank Adaptation of Large Language Models (arXiv:2406.01775)',
  of: ['lora'],
  // PEFT compares init_lora_weights.lower() == "olora"
  applies: (c) => typeof c.init_lora_weights === 'string' && c.init_lora_weights.toLowerCase() === 'olora',
  selectedBy: { init_lora_weights: 'olora' },
  claims: { field: 'init_lora_weights', describe: '"olora"' },
  layers: ['linear', 'conv1d'],

  async init({ layer, settings: s, readBase }) {
    checkDecomposable('olora', layer, s.r);
    const [o, i] = matrixDims(layer);
    const r = s.r;
    const w = toMatrix(layer, await readBase()); // [out, in]
    const b = Float32Array.from(leadingBasis(w, o, i, r)); // B = Q_r [out, r]
    const a = matmul(transpose(b, o, r), w, r, o, i); // A = Q_rᵀ·W0 = R[:r, :] [r, in]
    return {
      values: { 'lora_A.weight': a, 'lora_B.weight': b },
      base: residualWeight(layer, w, a, b, r, s.scaling),
    };
  },
};
