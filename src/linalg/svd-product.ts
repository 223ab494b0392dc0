// Exact thin SVD of a product B·A (B [m, r], A [r, n]) without forming the [m, n] product: the SVD merges of LoRAs,
// whose ΔW = Σ wᵢsᵢBᵢAᵢ = [w₁s₁B₁ …]·[A₁; …] has inner size Σrᵢ ≪ m, n. The dense `svd` of the formed 576×576 ΔW
// took 20–65 s on this machine; this is two thin QRs and an r×r SVD (O((m + n)·r²)).
//
// B = Q_b·R_b and Aᵀ = Q_a·R_a (thin Householder QR) give B·A = Q_b·(R_b·R_aᵀ)·Q_aᵀ; the SVD of the small core
// R_b·R_aᵀ = U_c·S·V_cᵀ rotates back to U = Q_b·U_c, V = Q_a·V_c. Q_b and Q_a have orthonormal columns whatever the
// rank of B and A (Householder never breaks down; see qr.ts), so U and V are orthonormal and the singular values are
// the core's: exactly those of B·A, the rest being zero.
import { type RealArray, checkMatrix, mm, mmTB, transposeF64 } from './dense.ts';
import { qr } from './qr.ts';
import { type Svd, svd } from './svd.ts';

/**
 * Thin SVD of B·A for B [m, r], A [r, n]: U [m, k], S [k] descending, V [n, k] with k = min(m, n, r), and
 * B·A = U·diag(S)·Vᵀ. Cheap when r ≪ m, n; correct for any r (r ≥ min(m, n) just makes the core as big as the
 * smaller side).
 */
export function svdOfProduct(b: RealArray, a: RealArray, m: number, r: number, n: number): Svd {
  checkMatrix('svdOfProduct', 'B', b, m, r);
  checkMatrix('svdOfProduct', 'A', a, r, n);
  const fb = qr(b, m, r); // Q_b [m, kb], R_b [kb, r], kb = min(m, r)
  const fa = qr(transposeF64(a, r, n), n, r); // Q_a [n, ka], R_a [ka, r]
  const core = mmTB(fb.r, fa.r, fb.k, r, fa.k); // R_b·R_aᵀ [kb, ka]
  const c = svd(core, fb.k, fa.k); // k = min(kb, ka) = min(m, n, r)
  return { u: mm(fb.q, c.u, m, fb.k, c.k), s: c.s, v: mm(fa.q, c.v, n, fa.k, c.k), k: c.k };
}
