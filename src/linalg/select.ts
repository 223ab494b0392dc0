// Order statistics without sorting: magnitude pruning's threshold (the k-th largest |value| of a 576×576 ΔW, four
// times per module) and torch.quantile's two neighbouring order statistics. A full sort is O(n log n) with a
// comparator call per step; selection is O(n) expected.
//
// Algorithm: Hoare's FIND (quickselect) with Wirth's two-pointer partition and a median-of-three pivot. Equal values
// stop both pointers and are swapped, so arrays of many ties split evenly instead of degrading to O(n²).
import { LorakitError } from '../errors.ts';

/**
 * The k-th smallest value (0-based) of `a`, rearranging `a` in place so that a[k] is that value, everything before
 * it is ≤ a[k] and everything after it ≥ a[k]. `a` must hold no NaN.
 */
export function selectInPlace(a: Float64Array, k: number): number {
  if (!Number.isInteger(k) || k < 0 || k >= a.length)
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `selectInPlace: k must be an integer in 0..${a.length - 1}, got ${k}`,
    );
  let lo = 0;
  let hi = a.length - 1;
  while (hi > lo) {
    const mid = (lo + hi) >>> 1;
    if (a[mid] < a[lo]) swap(a, lo, mid);
    if (a[hi] < a[lo]) swap(a, lo, hi);
    if (a[hi] < a[mid]) swap(a, mid, hi);
    const pivot = a[mid];
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i] < pivot) i++;
      while (a[j] > pivot) j--;
      if (i <= j) swap(a, i++, j--);
    }
    // now a[lo..j] ≤ pivot ≤ a[i..hi], and a[j+1..i−1] (if any) equal the pivot
    if (k <= j) hi = j;
    else if (k >= i) lo = i;
    else return a[k];
  }
  return a[k];
}

function swap(a: Float64Array, i: number, j: number): void {
  const t = a[i];
  a[i] = a[j];
  a[j] = t;
}
