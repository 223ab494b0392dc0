// LU with partial pivoting: torch.linalg.lu's P, L and U (LAPACK getrf) for tall, wide, tied-pivot and singular
// input; P·L·U = A with unit-lower L, upper U and every multiplier |L[i, j]| ≤ 1 on random matrices; a partial
// factorisation of s steps gives the full one's P·L[:, :s] and U[:s]; the argument checks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { lu, Rng } from '../../src/linalg/index.ts';
import { LorakitError } from '../../src/errors.ts';
import { assertAllclose } from '../helpers.ts';
import { gaussian, mul } from './helpers.ts';

const fixture = JSON.parse(readFileSync(new URL('../fixtures/linalg/torch.json', import.meta.url), 'utf8'));

/** P·X for P given as `rows` (row j of X goes to row rows[j]), X [m, c]. */
function permute(x: ArrayLike<number>, rows: Int32Array, c: number): Float64Array {
  const out = new Float64Array(rows.length * c);
  rows.forEach((to, j) => {
    for (let t = 0; t < c; t++) out[to * c + t] = x[j * c + t];
  });
  return out;
}

test('lu gives torch.linalg.lu’s P, L and U (row pivots included, ties to the first row, zero columns skipped)', () => {
  assert.equal(fixture.lu.length, 4);
  for (const c of fixture.lu) {
    const f = lu(Float64Array.from(c.a.flat()), c.m, c.n);
    assert.deepEqual([...f.rows], c.rows, `${c.name}: row pivots`);
    assertAllclose(f.l, c.l.flat(), { rtol: 0, atol: 1e-13, what: `${c.name}: L` });
    assertAllclose(f.u, c.u.flat(), { rtol: 0, atol: 1e-13, what: `${c.name}: U` });
  }
});

test('lu: P·L·U = A with unit-lower L (|multipliers| ≤ 1) and upper U, for tall, wide and square matrices', () => {
  const rng = new Rng(4);
  for (const [m, n] of [
    [30, 11],
    [11, 30],
    [17, 17],
  ]) {
    const a = gaussian(rng, m, n);
    const k = Math.min(m, n);
    const f = lu(a, m, n);
    assert.equal(f.steps, k);
    assertAllclose(permute(mul(f.l, f.u, m, k, n), f.rows, n), a, { rtol: 0, atol: 1e-12, what: `[${m}, ${n}]` });
    for (let i = 0; i < m; i++)
      for (let j = 0; j < k; j++) {
        const v = f.l[i * k + j];
        if (j === i) assert.equal(v, 1);
        else if (j > i) assert.equal(v, 0);
        else assert.ok(Math.abs(v) <= 1, `|L[${i}, ${j}]| = ${Math.abs(v)} > 1: not partial pivoting`);
      }
    for (let i = 0; i < k; i++) for (let j = 0; j < i; j++) assert.equal(f.u[i * n + j], 0, `U[${i}, ${j}]`);
    assert.deepEqual(
      [...f.rows].sort((x, y) => x - y),
      Array.from({ length: m }, (_, i) => i),
      'a permutation',
    );
  }
});

test('lu with steps s gives the full factorisation’s P·L[:, :s] and U[:s] (later pivots do not change them)', () => {
  const rng = new Rng(5);
  const [m, n, s] = [24, 16, 5];
  const a = gaussian(rng, m, n);
  const full = lu(a, m, n);
  const part = lu(a, m, n, { steps: s });
  assert.equal(part.steps, s);
  assert.equal(part.l.length, m * s);
  assert.equal(part.u.length, s * n);
  const lFirst = new Float64Array(m * s);
  for (let i = 0; i < m; i++) for (let j = 0; j < s; j++) lFirst[i * s + j] = full.l[i * 16 + j];
  assertAllclose(permute(part.l, part.rows, s), permute(lFirst, full.rows, s), { rtol: 0, atol: 1e-13, what: 'P·L_s' });
  assertAllclose(part.u, full.u.subarray(0, s * n), { rtol: 0, atol: 1e-13, what: 'U_s' });
});

test('lu refuses a step count outside 1..min(m, n) and non-finite input', () => {
  const a = new Float64Array(12).fill(1);
  const code = (e: unknown) => e instanceof LorakitError && e.code === 'LK_INVALID_ARGUMENT';
  assert.throws(() => lu(a, 3, 4, { steps: 4 }), code);
  assert.throws(() => lu(a, 3, 4, { steps: 0 }), code);
  a[5] = Number.NaN;
  assert.throws(() => lu(a, 3, 4), code);
});
