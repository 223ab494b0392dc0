// Householder QR: A = Q·R with orthonormal Q and upper-triangular R for tall, wide and square input; LAPACK's signs
// (torch.linalg.qr fixture); rank-deficient blocks (OLoRA's W0[:, :r]) with and without column pivoting.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { qr, qrPivoted, Rng } from '../../src/linalg/index.ts';
import { LorakitError } from '../../src/errors.ts';
import { assertAllclose } from '../helpers.ts';
import { gaussian, mul, orthoError, relError } from './helpers.ts';

const fixture = JSON.parse(readFileSync(new URL('../fixtures/linalg/torch.json', import.meta.url), 'utf8'));
const code = (c: string) => (e: unknown) => e instanceof LorakitError && e.code === c;

/** Column perm[j] of A for each j: A·P [m, n]. */
function permuted(a: Float64Array, m: number, n: number, perm: Int32Array): Float64Array {
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) out[i * n + j] = a[i * n + perm[j]];
  return out;
}

function assertUpper(r: Float64Array, k: number, n: number): void {
  for (let i = 0; i < k; i++) for (let j = 0; j < Math.min(i, n); j++) assert.equal(r[i * n + j], 0, `R[${i}, ${j}]`);
}

test('qr reconstructs tall, wide and square matrices with orthonormal Q and upper-triangular R', () => {
  const rng = new Rng(1);
  for (const [m, n] of [
    [40, 12],
    [12, 40],
    [17, 17],
    [1, 5],
    [5, 1],
  ]) {
    const a = gaussian(rng, m, n);
    const { q, r, k } = qr(a, m, n);
    assert.equal(k, Math.min(m, n));
    assert.equal(q.length, m * k);
    assert.equal(r.length, k * n);
    assert.ok(relError(mul(q, r, m, k, n), a) < 1e-14, `[${m}, ${n}]: Q·R != A`);
    assert.ok(orthoError(q, m, k) < 1e-14, `[${m}, ${n}]: QᵀQ != I`);
    assertUpper(r, k, n);
  }
});

test('qr matches torch.linalg.qr column for column, signs included (LAPACK reflector convention)', () => {
  for (const c of fixture.qr) {
    const { q, r } = qr(Float64Array.from(c.a.flat()), c.m, c.n);
    assertAllclose(q, c.q.flat(), { rtol: 0, atol: 1e-13, what: `${c.name}: Q` });
    assertAllclose(r, c.r.flat(), { rtol: 0, atol: 1e-13, what: `${c.name}: R` });
  }
});

test('qr accepts float32 input and computes in float64', () => {
  const a = new Float32Array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8]);
  const { q, r } = qr(a, 4, 3);
  assert.ok(q instanceof Float64Array);
  assert.ok(relError(mul(q, r, 4, 3, 3), a) < 1e-15);
});

test('a rank-deficient block still gives Q·R = A and orthonormal Q; R exposes the dependent column', () => {
  // OLoRA's block W0[:, :r] with column 2 = column 0 − 2·column 1: R[2, 2] collapses to rounding level.
  const rng = new Rng(2);
  const m = 30,
    r = 5;
  const a = gaussian(rng, m, r);
  for (let i = 0; i < m; i++) a[i * r + 2] = a[i * r] - 2 * a[i * r + 1];
  const f = qr(a, m, r);
  assert.ok(relError(mul(f.q, f.r, m, r, r), a) < 1e-14);
  assert.ok(orthoError(f.q, m, r) < 1e-14);
  assert.ok(Math.abs(f.r[2 * r + 2]) < 1e-13 * Math.abs(f.r[0]), `R[2,2] = ${f.r[2 * r + 2]}`);
});

test('qrPivoted finds the rank of a rank-deficient block and orders |R[i,i]| decreasingly', () => {
  const rng = new Rng(3);
  const m = 30,
    n = 6;
  const a = gaussian(rng, m, n);
  for (let i = 0; i < m; i++) {
    a[i * n + 1] = 3 * a[i * n]; // two dependent columns: rank 4
    a[i * n + 4] = a[i * n + 2] + a[i * n + 3];
  }
  const f = qrPivoted(a, m, n);
  assert.equal(f.rank, 4);
  assert.deepEqual([...f.perm].sort(), [0, 1, 2, 3, 4, 5]);
  assert.ok(relError(mul(f.q, f.r, m, n, n), permuted(a, m, n, f.perm)) < 1e-14, 'Q·R != A[:, perm]');
  assert.ok(orthoError(f.q, m, n) < 1e-14);
  assertUpper(f.r, n, n);
  for (let i = 1; i < n; i++)
    assert.ok(Math.abs(f.r[i * n + i]) <= Math.abs(f.r[(i - 1) * n + i - 1]) * (1 + 1e-12), `|R[${i},${i}]| grew`);
  assert.ok(Math.abs(f.r[4 * n + 4]) < 1e-13 * Math.abs(f.r[0]));
});

test('qrPivoted with steps = r gives r orthonormal columns spanning r independent columns (OLoRA fallback)', () => {
  const rng = new Rng(4);
  const m = 24,
    n = 16,
    r = 4;
  const w = gaussian(rng, m, n);
  for (let i = 0; i < m; i++) for (const c of [1, 2, 3]) w[i * n + c] = (c + 1) * w[i * n]; // W[:, :4] has rank 1
  const f = qrPivoted(w, m, n, { steps: r });
  assert.equal(f.k, r);
  assert.equal(f.q.length, m * r);
  assert.equal(f.r.length, r * n);
  assert.equal(f.rank, r);
  assert.ok(orthoError(f.q, m, r) < 1e-14);
  // R holds Qᵀ·W[:, perm], and the first r pivots reproduce their columns exactly.
  const qtw = mul(
    Float64Array.from({ length: r * m }, (_, i) => f.q[(i % m) * r + Math.floor(i / m)]),
    permuted(w, m, n, f.perm),
    r,
    m,
    n,
  );
  assert.ok(relError(f.r, qtw) < 1e-14, 'R != Qᵀ·W[:, perm]');
  const picked = new Set([...f.perm.slice(0, r)]);
  assert.ok([0, 1, 2, 3].filter((c) => picked.has(c)).length <= 1, 'two dependent columns were picked');
});

test('a zero matrix factors as Q = I[:, :k], R = 0, and has rank 0', () => {
  const { q, r } = qr(new Float64Array(12), 4, 3);
  assertAllclose(q, [1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0], { rtol: 0, atol: 0 });
  assert.ok(r.every((x) => x === 0));
  assert.equal(qrPivoted(new Float64Array(12), 4, 3).rank, 0);
});

test('qr rejects wrong sizes, non-finite entries and bad step counts with lorakit errors', () => {
  assert.throws(() => qr(new Float64Array(5), 2, 3), code('LK_SHAPE_MISMATCH'));
  assert.throws(() => qr(new Float64Array([1, Number.NaN, 2, 3]), 2, 2), /non-finite value NaN at \[0, 1\]/);
  assert.throws(() => qr(new Float64Array(0), 0, 3), code('LK_INVALID_ARGUMENT'));
  assert.throws(() => qrPivoted(new Float64Array(6), 2, 3, { steps: 3 }), /steps must be an integer in 1..2/);
});
