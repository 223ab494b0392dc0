// S-LoRA's admission rule against a brute-force simulation of the worst case, and the FCFS admission round.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Scheduler, worstCaseTokens, type CacheDemand, type Schedulable } from '../../src/serve/index.ts';
import { mulberry32 } from '../../src/linalg/index.ts';

/** Every row grows one token per step until its `left` runs out, then frees everything: the largest total held. */
function simulate(rows: readonly CacheDemand[]): number {
  const held = rows.map((r) => r.held);
  const left = rows.map((r) => r.left);
  let peak = held.reduce((a, b) => a + b, 0);
  for (let i = 0; i < held.length; i++) if (left[i] === 0) held[i] = 0; // finished: freed before the next step
  while (left.some((l) => l > 0)) {
    for (let i = 0; i < held.length; i++) {
      if (left[i] > 0) {
        held[i]++;
        left[i]--;
      }
    }
    peak = Math.max(
      peak,
      held.reduce((a, b) => a + b, 0),
    );
    // a row that has just run out finishes before the next step (its slots are freed)
    for (let i = 0; i < held.length; i++) if (left[i] === 0) held[i] = 0;
  }
  return peak;
}

test('worstCaseTokens equals the peak of a step-by-step simulation where every row runs to its limit', () => {
  const rng = mulberry32(7);
  for (let trial = 0; trial < 300; trial++) {
    const n = 1 + Math.floor(rng() * 8);
    const rows = Array.from({ length: n }, () => ({
      held: 1 + Math.floor(rng() * 50),
      left: Math.floor(rng() * 40),
    }));
    assert.equal(worstCaseTokens(rows), simulate(rows), JSON.stringify(rows));
  }
});

test('the worst case is below the sum of every row at its limit when rows end at different times', () => {
  const rows = [
    { held: 10, left: 100 },
    { held: 10, left: 1 },
  ];
  assert.equal(worstCaseTokens(rows), 110); // row 2 ends after one step, row 1 alone reaches 110
  assert.ok(worstCaseTokens(rows) < 10 + 100 + 10 + 1);
});

const req = (promptTokens: number, maxTokens: number, adapterKey: string | null = null, n = 1): Schedulable => ({
  n,
  promptTokens,
  maxTokens,
  adapterKey,
  adapterTokens: adapterKey ? 20 : 0,
});

test('admission stops at the first request that would overflow the pool, and counts the adapters of the batch', () => {
  const s = new Scheduler<Schedulable>({ kvTokens: 100, maxRows: 8, maxPrefillTokens: 1000 });
  const a = req(20, 20, 'x'); // worst 39 + adapter 20
  const b = req(20, 20, 'y'); // with a: 78 + 40 > 100
  const c = req(5, 5); // would fit, but FCFS keeps it behind b
  s.push(a);
  s.push(b);
  s.push(c);
  const taken = s.admit({ rows: [], adapters: new Map() }, () => true);
  assert.deepEqual(taken, [a]);
  assert.deepEqual(s.waiting, [b, c]);
  // the same adapter as a running row costs nothing more
  const s2 = new Scheduler<Schedulable>({ kvTokens: 100, maxRows: 8, maxPrefillTokens: 1000 });
  s2.push(req(20, 20, 'x'));
  const running = { rows: [{ held: 20, left: 19 }], adapters: new Map([['x', 20]]) };
  assert.equal(s2.admit(running, () => true).length, 1);
});

test('admission respects rows, padded prefill tokens and adapter slots', () => {
  const s = new Scheduler<Schedulable>({ kvTokens: 10_000, maxRows: 3, maxPrefillTokens: 60 });
  for (let i = 0; i < 5; i++) s.push(req(25, 4, null, i === 0 ? 2 : 1));
  // 2 rows + 1 row = 3 rows; the padded prefill 2 × 25 = 50 ≤ 60
  assert.equal(s.admit({ rows: [], adapters: new Map() }, () => true).length, 2);
  const t = new Scheduler<Schedulable>({ kvTokens: 10_000, maxRows: 8, maxPrefillTokens: 1000 });
  t.push(req(5, 5, 'a'));
  t.push(req(5, 5, 'b'));
  let slots = 1;
  assert.equal(t.admit({ rows: [], adapters: new Map() }, () => slots-- > 0).length, 1);
});
