// Quickselect against a full sort: every order statistic of random arrays, of arrays made mostly of ties, of sorted
// and reversed input; and magnitude pruning / the quantile built on it against their sort-based definitions.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Rng, selectInPlace } from '../../src/linalg/index.ts';
import { magnitudePrune, quantile } from '../../src/peft/compose/index.ts';

function inputs(): Float64Array[] {
  const rng = new Rng(11);
  const random = Float64Array.from(rng.normalArray(257));
  const ties = Float64Array.from(rng.normalArray(300), (x) => Math.round(x * 2)); // ~9 distinct values
  const ascending = Float64Array.from({ length: 64 }, (_, i) => i);
  return [random, ties, ascending, ascending.slice().reverse(), new Float64Array(33), Float64Array.of(4)];
}

test('selectInPlace returns every order statistic a sort gives, and partitions around it', () => {
  for (const x of inputs()) {
    const sorted = x.slice().sort();
    for (let k = 0; k < x.length; k++) {
      const a = x.slice();
      const v = selectInPlace(a, k);
      assert.ok(v === sorted[k], `k = ${k} of ${x.length}: ${v} vs ${sorted[k]}`); // === : −0 and 0 tie
      assert.ok(a[k] === v);
      for (let i = 0; i < k; i++) assert.ok(a[i] <= v, `a[${i}] = ${a[i]} > a[k] = ${v}`);
      for (let i = k + 1; i < a.length; i++) assert.ok(a[i] >= v, `a[${i}] = ${a[i]} < a[k] = ${v}`);
      assert.deepEqual(a.slice().sort(), sorted, 'a permutation of the input');
    }
  }
  assert.throws(() => selectInPlace(new Float64Array(3), 3), /k must be an integer in 0\.\.2, got 3/);
});

/** magnitude_based_pruning by its definition: a stable sort by |value| descending, the first k kept. */
function pruneBySort(t: Float64Array, density: number): Float64Array {
  const k = Math.trunc(density * t.length);
  const order = Array.from(t.keys()).sort((i, j) => Math.abs(t[j]) - Math.abs(t[i]) || i - j);
  const out = new Float64Array(t.length);
  for (const i of order.slice(0, k)) out[i] = t[i];
  return out;
}

test('magnitudePrune keeps the same entries as the sort, ties broken toward the earlier index', () => {
  for (const x of inputs()) {
    const signed = x.map((v, i) => (i % 3 === 0 ? -v : v)); // equal magnitudes of both signs
    for (const d of [0, 0.01, 0.3, 0.5, 0.77, 0.999, 1, 1.5])
      assert.deepEqual(magnitudePrune(signed, d), pruneBySort(signed, d), `density ${d}, n ${x.length}`);
  }
});

test('quantile equals linear interpolation between the sorted neighbours (torch.quantile)', () => {
  for (const x of inputs()) {
    const s = x.slice().sort();
    for (const q of [0, 0.1, 0.25, 0.5, 0.9, 0.999, 1]) {
      const pos = q * (s.length - 1);
      const lo = Math.floor(pos);
      const hi = Math.min(lo + 1, s.length - 1);
      assert.equal(quantile(x, q), s[lo] + (pos - lo) * (s[hi] - s[lo]), `q ${q}, n ${x.length}`);
    }
  }
});
