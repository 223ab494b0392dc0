/**
 * The form the server runs every adapter in: per adapted Linear (or GPT-2 Conv1D) layer two factors with
 * ΔW = B'·A' exactly, stored transposed as the batched graph multiplies them (Aᵀ [in, r] and (s·B)ᵀ [r, out], the
 * scale folded into B). A plain LoRA is taken as it is. Any other adapter whose method can merge (DoRA, VeRA, DyLoRA,
 * a PiSSA or LoRA-GA adapter saved in trained form, ...) is converted: its ΔW against the untouched base, W_merged −
 * W0, is factorised by a rank-revealing pivoted QR (ΔW·P = Q·R, so B' = Q[:, :k], A' = R[:k]·Pᵀ with k the numerical
 * rank; the rank cut is relative, 1e-5 of the largest pivot, above the float32 rounding of ΔW), and the conversion is
 * checked by its residual, so it is exact to float32 or refused. DoRA's ΔW rescales W0's
 * rows and is usually of full rank: it is served only when the pool's rank allows that (or merged instead).
 * Adapters that change the base itself per request (trained biases, modules_to_save) or adapt layers the batched
 * graph has no slots for (embeddings, convolutions, the LM head) are refused with the reason.
 * Not here: reading adapter folders (peft/format.ts), the pool that holds these (adapter-pool.ts), the graph
 * (batch-graph.ts).
 */
import { LorakitError } from '../errors.ts';
import { qrPivoted } from '../linalg/index.ts';
import {
  type AdaptableBase,
  type Adapter,
  type AdapterLayer,
  type PeftModel,
  mergedWeight,
  toMatrix,
} from '../peft/index.ts';

/** One adapted layer in served form: ΔW = bt'·at' transposed, i.e. y += (x·at)·bt. */
export interface ServedLayer {
  /** HF module path. */
  path: string;
  rank: number;
  inFeatures: number;
  outFeatures: number;
  /** Aᵀ [in, rank], row-major. */
  at: Float32Array;
  /** (s·B)ᵀ [rank, out], row-major: the scale is folded in. */
  bt: Float32Array;
}

/** How an adapter became its served form. */
export type FormOrigin = 'lora' | 'factorised';

/** An adapter in served form. */
export interface LoraForm {
  /** Per adapted layer, by module path. */
  layers: Map<string, ServedLayer>;
  /** The largest rank over its layers. */
  rank: number;
  /** 'lora': the adapter's own factors; 'factorised': ΔW of another method, factorised exactly. */
  origin: FormOrigin;
  /** The composed method's name (lora, lora+dora, vera, ...). */
  method: string;
  /** Float32 values held (Σ rank·(in + out)). */
  floats: number;
}

/** Options of `toLoraForm`. */
export interface LoraFormOptions {
  /** The largest rank a layer may have (the pool's slot rank). */
  maxRank: number;
  /** Module paths the batched graph has slots for; a layer outside them is refused. */
  servedLayers: ReadonlySet<string>;
  /** Largest relative Frobenius residual ‖ΔW − B'A'‖/‖ΔW‖ a factorisation may leave (default 1e-4). */
  tolerance?: number;
}

/** Relative singular-value cut of the rank decision: well above float32 rounding of ΔW, far below any real direction. */
const RANK_TOL = 1e-5;

/** The served form of adapter `name` of `peft` (over `base`, whose stored weights are the untouched W0). */
export async function toLoraForm(
  peft: PeftModel,
  base: AdaptableBase,
  name: string,
  opts: LoraFormOptions,
): Promise<LoraForm> {
  const a = peft.get(name);
  refuseBaseChanges(a);
  const plain = a.resolved.base.name === 'lora' && !hasOwnForward(a) && a.bases.size === 0;
  const layers = new Map<string, ServedLayer>();
  for (const [path, l] of a.layers) {
    if (l.info.kind !== 'linear' && l.info.kind !== 'conv1d') {
      throw new LorakitError(
        'LK_UNSUPPORTED',
        `adapter "${name}" adapts ${path}, a ${l.info.kind} layer; the server batches adapters on Linear layers ` +
          'only (merge the adapter into the model to serve it)',
        { layer: path },
      );
    }
    if (!opts.servedLayers.has(path)) {
      throw new LorakitError(
        'LK_UNSUPPORTED',
        `adapter "${name}" adapts ${path}, which is not among the server's LoRA target modules; start the server ` +
          'with target modules that include it',
        { layer: path },
      );
    }
    const served = plain ? fromFactors(l) : await factorised(peft, base, a, path, opts);
    if (served.rank > opts.maxRank) {
      const what = plain ? `rank ${served.rank}` : `a ΔW of rank above ${opts.maxRank} (${a.method.name})`;
      throw new LorakitError(
        'LK_UNSUPPORTED',
        `adapter "${name}": ${path} has ${what}, above the server's max LoRA rank ${opts.maxRank}; raise ` +
          '--max-lora-rank or merge the adapter into the model',
        { layer: path, rank: served.rank },
      );
    }
    layers.set(path, served);
  }
  const rank = Math.max(0, ...[...layers.values()].map((l) => l.rank));
  const floats = [...layers.values()].reduce((n, l) => n + l.at.length + l.bt.length, 0);
  return { layers, rank, origin: plain ? 'lora' : 'factorised', method: a.method.name, floats };
}

/** Refuses adapters that change base weights themselves, which one shared base cannot do per request. */
function refuseBaseChanges(a: Adapter): void {
  const why =
    a.weights.size > 0
      ? `it trains base biases (bias "${a.config.bias}")`
      : a.modules.size > 0
        ? `it trains whole modules (modules_to_save: ${[...a.modules.keys()].join(', ')})`
        : null;
  if (why) {
    throw new LorakitError(
      'LK_UNSUPPORTED',
      `adapter "${a.name}" cannot be served over a shared base model: ${why}; merge it into a model of its own`,
    );
  }
  if (!a.method.delta) {
    throw new LorakitError(
      'LK_UNSUPPORTED',
      `adapter "${a.name}" (${a.method.name}) has no LoRA form: ${a.method.unmergeable ?? 'it cannot merge'}`,
    );
  }
}

/** Whether a variant replaced LoRA's forward or merge (DoRA), so its factors alone are not its ΔW. */
const hasOwnForward = (a: Adapter) => a.resolved.variants.some((v) => v.forward || v.merge);

/** A plain LoRA layer: Aᵀ and (s·B)ᵀ from lora_A [r, in] and lora_B [out, r]. */
function fromFactors(l: AdapterLayer): ServedLayer {
  const { r, scaling } = l.settings as { r: number; scaling: number };
  const [I, O] = [l.info.inFeatures, l.info.outFeatures];
  const A = l.values['lora_A.weight'],
    B = l.values['lora_B.weight'];
  const at = new Float32Array(I * r);
  for (let j = 0; j < r; j++) for (let i = 0; i < I; i++) at[i * r + j] = A[j * I + i];
  const bt = new Float32Array(r * O);
  for (let o = 0; o < O; o++) for (let j = 0; j < r; j++) bt[j * O + o] = Math.fround(B[o * r + j] * scaling);
  return { path: l.info.path, rank: r, inFeatures: I, outFeatures: O, at, bt };
}

/** ΔW = W_merged − W0 of one layer, factorised by pivoted QR and checked by its residual. */
async function factorised(
  peft: PeftModel,
  base: AdaptableBase,
  a: Adapter,
  path: string,
  opts: LoraFormOptions,
): Promise<ServedLayer> {
  const tolerance = opts.tolerance ?? 1e-4;
  const l = a.layers.get(path)!;
  const wn = l.module.weightName;
  const v = { layer: l.info, settings: l.settings, config: a.config, p: l.values, shared: a.shared.values };
  const [O, I] = [l.info.outFeatures, l.info.inFeatures];
  const d = new Float64Array(O * I); // [out, in]
  if (a.method.merge || a.bases.size > 0) {
    // ΔW against the untouched base: the merged weight (over a replaced W0, or DoRA's rescaled rows) minus W0
    const merged = toMatrix(l.info, mergedWeight(a.method, v, await peft.frozenWeight(wn)));
    const w0 = toMatrix(l.info, await base.readWeight(wn));
    for (let k = 0; k < d.length; k++) d[k] = merged[k] - w0[k];
  } else d.set(toMatrix(l.info, a.method.delta!(v))); // ΔW itself, without W0's rounding
  let norm2 = 0;
  for (let k = 0; k < d.length; k++) norm2 += d[k] * d[k];
  const empty: ServedLayer = {
    path,
    rank: 0,
    inFeatures: I,
    outFeatures: O,
    at: new Float32Array(0),
    bt: new Float32Array(0),
  };
  if (norm2 === 0) return empty;
  // Householder steps stop one past the largest servable rank: O(out·in·maxRank), and a rank above it shows as
  // steps - 1 < rank (refused by the caller).
  const steps = Math.min(opts.maxRank + 1, O, I);
  const f = qrPivoted(d, O, I, { tol: RANK_TOL, steps });
  const k = f.rank;
  if (k > opts.maxRank) return { ...empty, rank: k };
  const at = new Float32Array(I * k); // Aᵀ[i, j] = R[j, col] at the column perm[col] = i
  for (let j = 0; j < k; j++) for (let c = j; c < I; c++) at[f.perm[c] * k + j] = f.r[j * I + c];
  const bt = new Float32Array(k * O); // Bᵀ[j, o] = Q[o, j]
  for (let o = 0; o < O; o++) for (let j = 0; j < k; j++) bt[j * O + o] = f.q[o * f.k + j];
  let res2 = 0;
  for (let o = 0; o < O; o++) {
    for (let i = 0; i < I; i++) {
      let s = 0;
      for (let j = 0; j < k; j++) s += bt[j * O + o] * at[i * k + j];
      res2 += (d[o * I + i] - s) ** 2;
    }
  }
  const rel = Math.sqrt(res2 / norm2);
  if (rel > tolerance) {
    throw new LorakitError(
      'LK_UNSUPPORTED',
      `adapter "${a.name}": the LoRA form of ${path} (rank ${k}) leaves a relative error of ${rel.toExponential(2)} ` +
        `in ΔW, above ${tolerance}; merge the adapter into the model to serve it`,
      { layer: path },
    );
  }
  return { path, rank: k, inFeatures: I, outFeatures: O, at, bt };
}
