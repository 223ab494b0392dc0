// Logits processors against hand-computed values (transformers' semantics), the seeded RNG and stop strings.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { assertAllclose } from '../helpers.ts';
import {
  applyRepetitionPenalty,
  applyTemperature,
  applyTopK,
  applyTopP,
  argmax,
  chooseToken,
  createRng,
  eosSet,
  resolveSampling,
  sample,
  softmax,
  StopStrings,
} from '../../src/models/sampling.ts';
import { LorakitError } from '../../src/errors.ts';

const f32 = (xs: number[]) => Float32Array.from(xs);
const NEG = -Infinity;

test('repetition penalty divides positive and multiplies negative logits of seen ids, once per id', () => {
  const l = f32([2, -1, 0.5, 3, -2]);
  applyRepetitionPenalty(l, [0, 1, 1, 4, 0], 2);
  assert.deepEqual([...l], [1, -2, 0.5, 3, -4]);
});

test('repetition penalty is float32 arithmetic like torch (x / 1.3f)', () => {
  const l = f32([1, -1]);
  applyRepetitionPenalty(l, [0, 1], 1.3);
  assert.equal(l[0], Math.fround(1 / Math.fround(1.3)));
  assert.equal(l[1], Math.fround(-1 * Math.fround(1.3)));
});

test('repetition penalty below 1 favours seen tokens and a zero logit stays zero', () => {
  const l = f32([0, 1, -1]);
  applyRepetitionPenalty(l, [0, 1, 2], 0.5);
  assert.deepEqual([...l], [0, 2, -0.5]);
});

test('temperature divides every logit', () => {
  const l = f32([1, -2, 4]);
  applyTemperature(l, 0.5);
  assert.deepEqual([...l], [2, -4, 8]);
});

test('top-k keeps the k largest and ties with the k-th', () => {
  const l = f32([1, 5, 3, 3, 0]);
  applyTopK(l, 2);
  assert.deepEqual([...l], [NEG, 5, 3, 3, NEG]);
  const m = f32([1, 5, 3]);
  applyTopK(m, 10); // k >= V keeps everything
  assert.deepEqual([...m], [1, 5, 3]);
});

test('top-p removes the unlikely tail whose cumulative probability is <= 1 - p', () => {
  // probs 0.5, 0.25, 0.125, 0.125 (ascending: 0.125, 0.125, 0.25, 0.5; cumulative 0.125, 0.25, 0.5, 1)
  const base = [Math.log(0.5), Math.log(0.25), Math.log(0.125), Math.log(0.125)];
  const l = f32(base);
  applyTopP(l, 0.7); // 1 - p = 0.3: removes the two 0.125 tokens (0.125, 0.25 <= 0.3), keeps 0.25 (0.5 > 0.3)
  assert.deepEqual(
    [...l].map((x) => x === NEG),
    [false, false, true, true],
  );
  const m = f32(base);
  applyTopP(m, 0.75); // 1 - p = 0.25: cumulative 0.25 <= 0.25 removes both 0.125 (boundary is inclusive)
  assert.deepEqual(
    [...m].map((x) => x === NEG),
    [false, false, true, true],
  );
  const n = f32(base);
  applyTopP(n, 0.9); // 1 - p = 0.1: nothing is <= 0.1
  assert.deepEqual(
    [...n].map((x) => x === NEG),
    [false, false, false, false],
  );
});

test('top-p always keeps the most likely token', () => {
  const l = f32([0, 10, 0]);
  applyTopP(l, 1e-9);
  assert.deepEqual([...l], [NEG, 10, NEG]);
});

test('argmax takes the first of equal maxima', () => {
  assert.equal(argmax([1, 3, 3, 2]), 1);
  assert.equal(argmax(f32([-5])), 0);
});

test('softmax gives zero probability to -Infinity and sums to 1', () => {
  const p = softmax([Math.log(1), Math.log(3), NEG]);
  assertAllclose(p, [0.25, 0.75, 0], { atol: 1e-15 });
});

test('sample inverts the CDF at the rng draw', () => {
  const logits = [Math.log(0.2), NEG, Math.log(0.5), Math.log(0.3)];
  assert.equal(
    sample(logits, () => 0.1),
    0,
  );
  assert.equal(
    sample(logits, () => 0.21),
    2,
  );
  assert.equal(
    sample(logits, () => 0.69),
    2,
  );
  assert.equal(
    sample(logits, () => 0.71),
    3,
  );
  assert.equal(
    sample(logits, () => 0.9999999999),
    3,
  );
});

test('sampled frequencies follow the probabilities', () => {
  const rng = createRng(7);
  const counts = [0, 0, 0];
  const logits = [Math.log(0.2), Math.log(0.3), Math.log(0.5)];
  for (let i = 0; i < 20000; i++) counts[sample(logits, rng)]++;
  assertAllclose(
    counts.map((c) => c / 20000),
    [0.2, 0.3, 0.5],
    { atol: 0.015 },
  );
});

test('chooseToken applies penalty, temperature, top-k, top-p in transformers order', () => {
  // penalty 2 on id 3: 4 -> 2; temperature 0.5 doubles; top-k 2 keeps ids 0 and 3 (6 and 4)... then top-p keeps id 0
  // only
  const s = resolveSampling({ temperature: 0.5, topK: 2, topP: 0.5, repetitionPenalty: 2 });
  const l = f32([3, 1, 0, 4]);
  const tok = chooseToken(l, [3], s, () => 0.999);
  assert.deepEqual([...l], [6, NEG, NEG, NEG]);
  assert.equal(tok, 0);
  // greedy ignores temperature/top-k/top-p and takes the penalised argmax
  const g = f32([3, 1, 0, 4]);
  assert.equal(
    chooseToken(g, [3], resolveSampling({ repetitionPenalty: 2 }), () => 0),
    0,
  );
  assert.equal(
    chooseToken(f32([3, 1, 0, 4]), [], resolveSampling({}), () => 0),
    3,
  );
});

test('resolveSampling: greedy by default, sampling when asked, errors name the option', () => {
  assert.equal(resolveSampling({}).doSample, false);
  assert.equal(resolveSampling({ temperature: 0.7 }).doSample, true);
  assert.equal(resolveSampling({ topK: 5 }).doSample, true);
  assert.equal(resolveSampling({ temperature: 0, topK: 5 }).doSample, false);
  const err = (o: object, re: RegExp) =>
    assert.throws(
      () => resolveSampling(o),
      (e: unknown) => e instanceof LorakitError && e.code === 'LK_INVALID_ARGUMENT' && re.test(e.message),
    );
  err({ temperature: -1 }, /^temperature must be a finite number >= 0, got -1$/);
  err({ topK: 1.5 }, /^topK must be a non-negative integer \(0 = off\), got 1.5$/);
  err({ topP: 0 }, /^topP must be a number in \(0, 1\], got 0$/);
  err({ topP: 1.2 }, /^topP must be/);
  err({ repetitionPenalty: 0 }, /^repetitionPenalty must be a finite number > 0, got 0$/);
});

test('createRng is reproducible per (seed, stream) and streams differ', () => {
  const a = createRng(42),
    b = createRng(42),
    c = createRng(42, 1),
    d = createRng(43);
  const xa = Array.from({ length: 5 }, a),
    xb = Array.from({ length: 5 }, b);
  assert.deepEqual(xa, xb);
  assert.notDeepEqual(Array.from({ length: 5 }, c), xa);
  assert.notDeepEqual(Array.from({ length: 5 }, d), xa);
  for (const x of xa) assert.ok(x >= 0 && x < 1);
  assert.throws(() => createRng(1.5), /seed must be a safe integer, got 1.5/);
});

test('eosSet accepts one id, a list or nothing', () => {
  assert.deepEqual([...eosSet(2)], [2]);
  assert.deepEqual([...eosSet([2, 7])], [2, 7]);
  assert.deepEqual([...eosSet(null)], []);
  assert.throws(() => eosSet([-1]), /eosTokenId must be a non-negative integer/);
});

test('stop strings cut the text before the stop string and hold back possible prefixes', () => {
  const s = new StopStrings(['END', '\n\n']);
  assert.deepEqual(s.push('hello E'), { text: 'hello ', stopped: false }); // "E" may start "END"
  assert.deepEqual(s.push('N'), { text: '', stopped: false });
  assert.deepEqual(s.push('Dless'), { text: '', stopped: true }); // "hello " + "" then stop: nothing more
  assert.deepEqual(s.push('more'), { text: '', stopped: true });
  assert.equal(s.flush(), '');
});

test('a held-back prefix that does not complete is released', () => {
  const s = new StopStrings('END');
  assert.deepEqual(s.push('a EN'), { text: 'a ', stopped: false });
  assert.deepEqual(s.push('x'), { text: 'ENx', stopped: false });
  assert.deepEqual(s.push('E'), { text: '', stopped: false });
  assert.equal(s.flush(), 'E');
});

test('the earliest stop string wins and text before it in the same piece is kept', () => {
  const s = new StopStrings(['abcd', 'bc']);
  assert.deepEqual(s.push('xxabc'), { text: 'xxa', stopped: true });
  const t = new StopStrings(['cd', 'abcde']);
  assert.deepEqual(t.push('abcd'), { text: 'ab', stopped: true });
});

test('empty stop strings are rejected', () => {
  assert.throws(() => new StopStrings(['x', '']), /stop\[1\] must be a non-empty string, got ""/);
});
