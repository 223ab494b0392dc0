// LU decomposition with partial (row) pivoting of a row-major [m, n] matrix, in float64 on the host: LoLDU's
// initialisation (A = P·L·diag(D)·U with U unit-upper, keeping the first r pivots). Not blocked, not parallel:
// O(m·n·s) scalar work for s elimination steps, fine for the weights of initialisations when s is small.
//
// Convention (torch.linalg.lu / LAPACK getrf): A = P·L·U with P [m, m] a permutation, L [m, k] unit lower
// trapezoidal, U [k, n] upper trapezoidal, k = min(m, n). Step j takes as pivot the row of largest |value| in column
// j among rows j…m−1, the first such row on ties (LAPACK's idamax), and a zero column is skipped without a swap (its
// multipliers are 0, U[j, j] = 0), so the factorisation never breaks down. P is returned as `rows`: row j of L·U is
// row rows[j] of A (P[rows[j], j] = 1), so (P·X)[rows[j]] = X[j] for any X with m rows.
//
// Partial factorisation: `steps` s < k stops after s elimination steps, giving L [m, s], U [s, n] and the row order
// after those steps. A full factorisation would go on permuting rows s…m−1 of L, but P·L[:, :s] and U[:s] would not
// change (the later swaps move rows of L and of P together), so the first s pivots cost O(m·n·s), not O(m·n·k).
import { LorakitError } from '../errors.ts';
import { type RealArray, checkMatrix } from './dense.ts';

/** An LU factorisation A = P·L·U (or its first `steps` columns of L and rows of U). */
export interface Lu {
  /** [m]: row j of L·U is row rows[j] of A. */
  rows: Int32Array;
  /** [m, steps], unit lower trapezoidal (ones on the diagonal, zeros above it). */
  l: Float64Array;
  /** [steps, n], upper trapezoidal. */
  u: Float64Array;
  /** Elimination steps taken: min(m, n), or the `steps` asked for. */
  steps: number;
}

/** Options of `lu`. */
export interface LuOptions {
  /** Stop after this many elimination steps (1 ≤ steps ≤ min(m, n)); default min(m, n). */
  steps?: number;
}

/** LU with partial pivoting of an [m, n] matrix (any shape), torch.linalg.lu's convention. */
export function lu(a: RealArray, m: number, n: number, opts: LuOptions = {}): Lu {
  checkMatrix('lu', 'A', a, m, n);
  const k = Math.min(m, n);
  const steps = opts.steps ?? k;
  if (!Number.isInteger(steps) || steps < 1 || steps > k)
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `lu: steps must be an integer in 1..${k} (min(m, n)) for a [${m}, ${n}] matrix, got ${steps}`,
    );
  const w = Float64Array.from(a); // row-major working copy: L's multipliers below the diagonal, U on and above it
  const rows = Int32Array.from({ length: m }, (_, i) => i);
  for (let j = 0; j < steps; j++) {
    let p = j;
    let best = Math.abs(w[j * n + j]);
    for (let i = j + 1; i < m; i++) {
      const v = Math.abs(w[i * n + j]);
      if (v > best) [p, best] = [i, v];
    }
    if (p !== j) {
      for (let c = 0; c < n; c++) [w[j * n + c], w[p * n + c]] = [w[p * n + c], w[j * n + c]];
      [rows[j], rows[p]] = [rows[p], rows[j]];
    }
    const pivot = w[j * n + j];
    if (pivot === 0) continue; // the column is zero from row j down: nothing to eliminate, multipliers stay 0
    for (let i = j + 1; i < m; i++) {
      const f = w[i * n + j] / pivot;
      w[i * n + j] = f;
      if (f === 0) continue;
      for (let c = j + 1; c < n; c++) w[i * n + c] -= f * w[j * n + c]; // row_i ← row_i − f·row_j
    }
  }
  const l = new Float64Array(m * steps);
  const u = new Float64Array(steps * n);
  for (let i = 0; i < m; i++) {
    for (let c = 0; c < Math.min(i, steps); c++) l[i * steps + c] = w[i * n + c];
    if (i < steps) l[i * steps + i] = 1;
  }
  for (let i = 0; i < steps; i++) for (let c = i; c < n; c++) u[i * n + c] = w[i * n + c];
  return { rows, l, u, steps };
}
