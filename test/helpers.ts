// Shared test helpers: one allclose check used by every numeric test, and a seeded RNG.
import assert from 'node:assert/strict';

type Num = ArrayLike<number> | ArrayLike<bigint>;

/** Asserts |a - b| <= atol + rtol·|b| elementwise and equal lengths; the message shows the worst element. */
export function assertAllclose(actual: Num, expected: Num, { rtol = 1e-5, atol = 1e-6, what = 'value' } = {}): void {
  assert.equal(actual.length, expected.length, `${what}: length ${actual.length} != ${expected.length}`);
  let worst = -1, worstErr = 0;
  for (let i = 0; i < actual.length; i++) {
    const a = Number(actual[i]), b = Number(expected[i]);
    const err = Math.abs(a - b) - (atol + rtol * Math.abs(b));
    if (!(err <= 0) && (worst < 0 || !(err <= worstErr))) { worst = i; worstErr = err; }
  }
  if (worst >= 0) {
    assert.fail(`${what}: element ${worst} is ${Number(actual[worst])}, expected ${Number(expected[worst])} (rtol ${rtol}, atol ${atol})`);
  }
}

/** A small deterministic PRNG (mulberry32) for test data. */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** n uniform values in [lo, hi). */
export function randArray(n: number, seed: number, lo = -1, hi = 1): Float64Array {
  const r = rng(seed);
  return Float64Array.from({ length: n }, () => lo + (hi - lo) * r());
}
