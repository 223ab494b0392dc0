// Shared test helpers: one allclose check used by every numeric test, and a seeded RNG.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { mulberry32 } from '../src/linalg/index.ts';

type Num = ArrayLike<number> | ArrayLike<bigint>;

/** Asserts |a - b| <= atol + rtol·|b| elementwise and equal lengths; the message shows the worst element. */
export function assertAllclose(actual: Num, expected: Num, { rtol = 1e-5, atol = 1e-6, what = 'value' } = {}): void {
  assert.equal(actual.length, expected.length, `${what}: length ${actual.length} != ${expected.length}`);
  let worst = -1,
    worstErr = 0;
  for (let i = 0; i < actual.length; i++) {
    const a = Number(actual[i]),
      b = Number(expected[i]);
    const err = Math.abs(a - b) - (atol + rtol * Math.abs(b));
    if (!(err <= 0) && (worst < 0 || !(err <= worstErr))) {
      worst = i;
      worstErr = err;
    }
  }
  if (worst >= 0) {
    assert.fail(
      `${what}: element ${worst} is ${Number(actual[worst])}, expected ${Number(expected[worst])} (rtol ${rtol}, ` +
        `atol ${atol})`,
    );
  }
}

/** A small deterministic PRNG (mulberry32) for test data. */
export function rng(seed: number): () => number {
  return mulberry32(seed);
}

/** n uniform values in [lo, hi). */
export function randArray(n: number, seed: number, lo = -1, hi = 1): Float64Array {
  const r = rng(seed);
  return Float64Array.from({ length: n }, () => lo + (hi - lo) * r());
}

/**
 * Central differences of a scalar `loss()` with respect to every element of `v` (changed in place and restored):
 * (L(v + h·eₖ) − L(v − h·eₖ)) / 2h for each k.
 */
export async function centralDifferences(
  v: Float32Array | Float64Array,
  h: number,
  loss: () => Promise<number>,
): Promise<Float64Array> {
  const numeric = new Float64Array(v.length);
  for (let k = 0; k < v.length; k++) {
    const v0 = v[k];
    v[k] = v0 + h;
    const lp = await loss();
    v[k] = v0 - h;
    const lm = await loss();
    v[k] = v0;
    numeric[k] = (lp - lm) / (2 * h);
  }
  return numeric;
}

/** The workplace's real data sets (../shared/data beside the repository), which a fresh clone may not have. */
export const SHARED_DATA = fileURLToPath(new URL('../../shared/data/', import.meta.url));

/** false when ../shared/data/<rel> exists, else the one-line note a test that needs it skips with. */
export function needsShared(rel: string): string | false {
  return existsSync(SHARED_DATA + rel) ? false : `../shared/data/${rel} is absent (the real data sets are not here)`;
}
