/**
 * FedSmoothLoRA's client-side algebra (spec methods-c §12; arXiv 2605.29460, the authors' NLG_exp/fedsmoothlora.py),
 * per LoRA module on the host in float64. Everything is kept as a factored product B·A (b [rows, k], a [k, cols]);
 * only the backbone the client trains on is a dense [out, in] matrix. With s the LoRA scale (α/r) and, from the
 * server, the merged factors M = B_m·A_m and this round's global LoRA G_s = B_s·A_s:
 * - backbone: W = W0 + s·(M + G_s) (the server merged every global LoRA so far);
 * - round-matching: W_rm = ζ·(B_c·A_c − G_s), with B_c·A_c the client's previous upload, so W + s·W_rm is where the
 *   client left off (0 in its first round, or after a restart: the state is the process's);
 * - gradient-aligned: the SVD of the full-weight gradient ∂L/∂W at W + s·W_rm, Ŵ_ga = B_ga·A_ga with
 *   B_ga = U[:, r:2r]·d^¼/√γ, A_ga = V[:, :r]ᵀ·d^¼/√γ (d = out; LoRA-GA's `stable` scale, the authors' split);
 * - init: the LoRA starts from the rank-r SVD of Ŵ_ga + W_rm on the backbone W − s·Ŵ_ga, so training starts near
 *   W + s·W_rm (exactly, when Ŵ_ga + W_rm has rank ≤ r) and its first steps follow the gradient's directions;
 * - upload: the rank-r SVD of B·A − Ŵ_ga (the update relative to W), with B = U_r·√S_r and A = √S_r·V_rᵀ.
 * Not here: the messages and the training (fedsmooth-client.ts, lora-client.ts), the server's aggregation
 * (interop/flower_app/lorakit_flower/fedsmooth.py).
 */
import { LorakitError } from '../errors.ts';
import { mm, qr, svd, transposeF64 } from '../linalg/index.ts';

/** A low-rank product B·A of a [rows, cols] matrix: b [rows, k], a [k, cols], row-major float64. */
export interface Factors {
  b: Float64Array;
  a: Float64Array;
  rows: number;
  cols: number;
  k: number;
}

/** The dense product B·A [rows, cols]. */
export function product(f: Factors): Float64Array {
  return mm(f.b, f.a, f.rows, f.k, f.cols);
}

/** Σ c_i·B_i·A_i as one factored product: B = [c_1·B_1 | c_2·B_2 | …] [rows, Σk], A = [A_1; A_2; …] [Σk, cols]. */
export function combine(terms: readonly { f: Factors; c: number }[]): Factors {
  const { rows, cols } = terms[0].f;
  const k = terms.reduce((n, t) => n + t.f.k, 0);
  const b = new Float64Array(rows * k);
  const a = new Float64Array(k * cols);
  let off = 0;
  for (const { f, c } of terms) {
    if (f.rows !== rows || f.cols !== cols) {
      throw new Error(`internal: combine of [${f.rows}, ${f.cols}] with [${rows}, ${cols}]`);
    }
    for (let i = 0; i < rows; i++) for (let j = 0; j < f.k; j++) b[i * k + off + j] = c * f.b[i * f.k + j];
    a.set(f.a, off * cols);
    off += f.k;
  }
  return { b, a, rows, cols, k };
}

/**
 * The rank-r truncated SVD of B·A without forming it, split as B_r = U_r·√S_r [rows, r], A_r = √S_r·V_rᵀ [r, cols]
 * (zero columns and rows where B·A has rank below r). B = Q_b·R_b and Aᵀ = Q_a·R_a give B·A = Q_b·(R_b·R_aᵀ)·Q_aᵀ,
 * so the SVD of the small core R_b·R_aᵀ = U'·S·V'ᵀ gives U = Q_b·U', V = Q_a·V': O((rows + cols)·k²) work.
 */
export function truncatedSvd(f: Factors, r: number): Factors {
  const qb = qr(f.b, f.rows, f.k); // q [rows, kb], r [kb, k]
  const qa = qr(transposeF64(f.a, f.k, f.cols), f.cols, f.k); // q [cols, ka], r [ka, k]
  const core = mm(qb.r, transposeF64(qa.r, qa.k, f.k), qb.k, f.k, qa.k); // [kb, ka]
  const c = svd(core, qb.k, qa.k); // u [kb, kc], v [ka, kc]
  const u = mm(qb.q, c.u, f.rows, qb.k, c.k); // [rows, kc]
  const v = mm(qa.q, c.v, f.cols, qa.k, c.k); // [cols, kc]
  const b = new Float64Array(f.rows * r);
  const a = new Float64Array(r * f.cols);
  for (let j = 0; j < Math.min(r, c.k); j++) {
    const root = Math.sqrt(c.s[j]);
    for (let i = 0; i < f.rows; i++) b[i * r + j] = u[i * c.k + j] * root;
    for (let i = 0; i < f.cols; i++) a[j * f.cols + i] = v[i * c.k + j] * root;
  }
  return { b, a, rows: f.rows, cols: f.cols, k: r };
}

/**
 * Ŵ_ga's factors from the full-weight gradient g [out, in]: B_ga = U[:, r:2r]·out^¼/√γ, A_ga = V[:, :r]ᵀ·out^¼/√γ.
 * The signs of singular vectors are arbitrary (so are the authors'); B_ga·A_ga pairs different singular vectors,
 * which is why it is a direction to start from, not an approximation of g.
 */
export function gradientAligned(g: Float32Array | Float64Array, out: number, inp: number, r: number, gamma: number) {
  if (2 * r > Math.min(out, inp)) {
    throw new LorakitError(
      'LK_CONFIG_INVALID',
      `FedSmoothLoRA: the gradient-aligned init takes 2r singular vectors of a [${out}, ${inp}] weight's gradient, ` +
        `so it needs 2r ≤ ${Math.min(out, inp)}, but r = ${r}; lower r, or set fedsmooth-ga-batches=0 on the server`,
    );
  }
  const { u, v, k } = svd(g, out, inp); // u [out, k], v [in, k]
  const scale = out ** 0.25 / Math.sqrt(gamma);
  const b = new Float64Array(out * r);
  const a = new Float64Array(r * inp);
  for (let j = 0; j < r; j++) {
    for (let i = 0; i < out; i++) b[i * r + j] = u[i * k + r + j] * scale;
    for (let i = 0; i < inp; i++) a[j * inp + i] = v[i * k + j] * scale;
  }
  return { b, a, rows: out, cols: inp, k: r };
}

/** W_rm = ζ·(B_c·A_c − B_s·A_s) (rank ≤ 2r), or null when there is no previous upload or no global LoRA. */
export function roundMatching(last: Factors | null, global: Factors | null, zeta: number): Factors | null {
  if (!last || !global || zeta === 0) return null;
  return combine([
    { f: last, c: zeta },
    { f: global, c: -zeta },
  ]);
}

/** The LoRA the round starts from: the rank-r SVD of Ŵ_ga + W_rm (null when both are absent). */
export function initFactors(ga: Factors | null, rm: Factors | null, r: number): Factors | null {
  const terms = [ga, rm].filter((f): f is Factors => f !== null).map((f) => ({ f, c: 1 }));
  return terms.length ? truncatedSvd(combine(terms), r) : null;
}

/** What the client sends: the rank-r SVD of B·A − Ŵ_ga, its update relative to the round's backbone. */
export function uploadFactors(trained: Factors, ga: Factors | null, r: number): Factors {
  return truncatedSvd(
    ga
      ? combine([
          { f: trained, c: 1 },
          { f: ga, c: -1 },
        ])
      : trained,
    r,
  );
}

/** W + Σ c_i·B_i·A_i as a dense float32 matrix, summed in float64 and rounded once (the backbone shifts). */
export function shifted(w: Float32Array, terms: readonly { f: Factors | null; c: number }[]): Float32Array {
  const live = terms.filter((t): t is { f: Factors; c: number } => t.f !== null && t.c !== 0);
  if (!live.length) return Float32Array.from(w);
  const p = product(combine(live));
  return Float32Array.from(w, (x, i) => x + p[i]);
}
