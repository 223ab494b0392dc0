// Rng.permutation: Fisher–Yates as documented (replayed from the same stream), every index once, reproducible from
// the seed, and uniform over the 3! orders (a chi-square bound).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, mulberry32Step } from '../../src/linalg/index.ts';

test('permutation: each index once, the documented swaps replayed from the same stream, same seed same order', () => {
  for (const n of [0, 1, 2, 7, 100]) {
    const p = new Rng(42).permutation(n);
    assert.deepEqual(
      [...p].sort((a, b) => a - b),
      Array.from({ length: n }, (_, i) => i),
    );
    // replay: slot i (from the last) swaps with ⌊u·(i + 1)⌋, u the stream's next value
    const r = new Rng(42);
    const want = Array.from({ length: n }, (_, i) => i);
    for (let i = n - 1; i > 0; i--) {
      const j = Math.floor(r.next() * (i + 1));
      [want[i], want[j]] = [want[j], want[i]];
    }
    assert.deepEqual([...p], want);
    assert.deepEqual([...new Rng(42).permutation(n)], [...p]);
  }
  assert.notDeepEqual([...new Rng(1).permutation(20)], [...new Rng(2).permutation(20)]);
});

test('permutation: the 6 orders of 3 come out uniformly (chi-square, 5 d.o.f., p ≈ 1e-4 bound)', () => {
  const rng = new Rng(7);
  const counts = new Map<string, number>();
  const draws = 6000;
  for (let k = 0; k < draws; k++) {
    const key = rng.permutation(3).join('');
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  assert.equal(counts.size, 6);
  const e = draws / 6;
  const chi2 = [...counts.values()].reduce((s, c) => s + (c - e) ** 2 / e, 0);
  assert.ok(chi2 < 25.7, `chi-square ${chi2.toFixed(2)} over 6 orders`); // 25.7: the 1e-4 tail of χ²(5)
});

test('the stream is pinned: adapters initialised before stay reproducible (uniform, normal, the saved state)', () => {
  const r = new Rng(7);
  assert.deepEqual([...r.uniformArray(3, -1, 2)], [-0.9648857116699219, -0.8141252398490906, 1.930722951889038]);
  assert.deepEqual([...r.normalArray(2, 0.5, 1)], [0.23218777775764465, 0.5014975666999817]);
  assert.equal(r.state, 4231026106);
  // next() and the exported step walk the same states
  let s = 7;
  const q = new Rng(7);
  for (let i = 0; i < 5; i++) {
    let u: number;
    [s, u] = mulberry32Step(s);
    assert.equal(q.next(), u);
    assert.equal(q.state, s);
  }
});
