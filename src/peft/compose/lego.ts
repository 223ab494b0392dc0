/**
 * LoRA-LEGO (Zhao et al., "Merging LoRAs like Playing LEGO: Pushing the Modularity of LoRA to Extremes Through
 * Rank-Wise Clustering", ICLR 2025, arXiv 2409.16167), one module at a time:
 *  1. disassemble every source into rank-1 "minimal semantic units" u = [bᵢ; aᵢ] ∈ R^(out+in) (column i of B, row i
 *     of A). The source's weight and scaling are folded in (b·√|ws|, a·sign(ws)·√|ws|), so units of sources with
 *     other α/r compare, and each unit's sign is fixed (largest-|·| entry of its a-part positive): (b, a) and
 *     (−b, −a) are the same update, and averaging the two would cancel it;
 *  2. k-means (kmeans.ts) of the pooled units into k clusters; centroid j becomes rank j of the merged LoRA;
 *  3. parameter reweighting (against norm decay: averaging unaligned units shrinks a centroid): centroid j is scaled
 *     to the mean norm of its members;
 *  4. output reweighting (against variance expansion): one factor γ on the merged output. The paper's factor could not
 *     be read (only its abstract and reviews were reachable); the default γ = √(r̄/k) (r̄: mean source rank) follows
 *     from summing k independent units where a source sums r̄, so γ = 1 at k = r̄; 'none' or a number override it.
 * Not here: the folders and the other merge types (merge.ts), k-means itself (kmeans.ts).
 */
import { LorakitError } from '../../errors.ts';
import type { ModuleSource } from './combine.ts';
import { kmeans, type KmeansOptions } from './kmeans.ts';

/** Options of lego. */
export interface LegoOptions extends KmeansOptions {
  /** k: the merged rank (at most the number of pooled units; the rest are zero). */
  rank: number;
  /** Scale each centroid to its members' mean norm (default true). */
  parameterReweighting?: boolean;
  /** γ on the merged output: 'sqrt' = √(r̄/k) (default), 'none' = 1, or a number. */
  outputReweighting?: 'sqrt' | 'none' | number;
}

/** The pooled units of a module's sources: [n, out + in], sign-fixed, weight and scaling folded in. */
export function disassemble(
  sources: readonly ModuleSource[],
  out: number,
  inF: number,
): { u: Float64Array; n: number } {
  const n = sources.reduce((s, src) => s + src.r, 0);
  const d = out + inF;
  const u = new Float64Array(n * d);
  let row = 0;
  for (const s of sources) {
    const ws = s.weight * s.scaling;
    const c = Math.sqrt(Math.abs(ws));
    for (let i = 0; i < s.r; i++, row++) {
      let big = 0;
      for (let e = 0; e < inF; e++) if (Math.abs(s.a[i * inF + e]) > Math.abs(big)) big = s.a[i * inF + e];
      const flip = (big < 0 ? -1 : 1) * (ws < 0 ? -1 : 1); // the sign of ws goes on a; then a's largest entry > 0
      for (let o = 0; o < out; o++) u[row * d + o] = s.b[o * s.r + i] * c * flip;
      for (let e = 0; e < inF; e++) u[row * d + out + e] = s.a[i * inF + e] * c * (ws < 0 ? -1 : 1) * flip;
    }
  }
  return { u, n };
}

const norm = (x: Float64Array, off: number, d: number) => {
  let s = 0;
  for (let e = 0; e < d; e++) s += x[off + e] * x[off + e];
  return Math.sqrt(s);
};

/** The LoRA-LEGO merge of one module: A [rank, in], B [out, rank], scaling 1. */
export function lego(
  sources: readonly ModuleSource[],
  out: number,
  inF: number,
  o: LegoOptions,
): { a: Float64Array; b: Float64Array } {
  const k = o.rank;
  if (!Number.isInteger(k) || k < 1) throw new LorakitError('LK_INVALID_ARGUMENT', `lego: rank must be >= 1, got ${k}`);
  const d = out + inF;
  const { u, n } = disassemble(sources, out, inF);
  const kk = Math.min(k, n);
  const { centroids, assign } = kmeans(u, n, d, kk, o);
  if (o.parameterReweighting ?? true) {
    for (let j = 0; j < kk; j++) {
      let sum = 0;
      let count = 0;
      for (let i = 0; i < n; i++) {
        if (assign[i] !== j) continue;
        sum += norm(u, i * d, d);
        count++;
      }
      const cn = norm(centroids, j * d, d);
      if (count > 0 && cn > 0) for (let e = 0; e < d; e++) centroids[j * d + e] *= sum / count / cn;
    }
  }
  const rw = o.outputReweighting ?? 'sqrt';
  const meanRank = n / sources.length;
  const gamma = rw === 'sqrt' ? Math.sqrt(meanRank / k) : rw === 'none' ? 1 : rw;
  const a = new Float64Array(k * inF);
  const b = new Float64Array(out * k);
  for (let j = 0; j < kk; j++) {
    for (let r = 0; r < out; r++) b[r * k + j] = centroids[j * d + r] * gamma;
    for (let e = 0; e < inF; e++) a[j * inF + e] = centroids[j * d + out + e];
  }
  return { a, b };
}
