// lr schedules against values computed by hand from transformers' formulas (optimization.py).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeSchedule, warmupStepsFor } from '../../src/train/index.ts';

const close = (a: number, b: number, what: string) => assert.ok(Math.abs(a - b) <= 1e-15, `${what}: ${a} != ${b}`);

test('linear schedule: warmup from 0, then linear decay to 0 at totalSteps, clamped at 0 after', () => {
  const s = makeSchedule({ kind: 'linear', totalSteps: 10, warmupSteps: 2 });
  // warmup: step/2; decay: (10 - step)/(10 - 2)
  const expected: [number, number][] = [
    [0, 0],
    [1, 0.5],
    [2, 1],
    [3, 0.875],
    [5, 0.625],
    [9, 0.125],
    [10, 0],
    [12, 0],
  ];
  for (const [step, v] of expected) assert.equal(s.multiplier(step), v, `λ(${step})`);
});

test('cosine schedule: half-cosine after warmup, and past totalSteps it rises again as in transformers', () => {
  const s = makeSchedule({ kind: 'cosine', totalSteps: 10, warmupSteps: 2 });
  assert.equal(s.multiplier(1), 0.5);
  assert.equal(s.multiplier(2), 1);
  close(s.multiplier(4), 0.5 * (1 + Math.SQRT1_2), 'λ(4), progress 1/4'); // 0.85355339059327376
  close(s.multiplier(6), 0.5, 'λ(6), progress 1/2');
  close(s.multiplier(8), 0.5 * (1 - Math.SQRT1_2), 'λ(8), progress 3/4'); // 0.14644660940672624
  close(s.multiplier(10), 0, 'λ(10)');
  close(s.multiplier(14), 0.5, 'λ(14), progress 3/2: cos(3π/2) = 0, not clamped');
});

test('cosine with a min-lr ratio decays to the ratio (get_cosine_with_min_lr_schedule_with_warmup)', () => {
  const s = makeSchedule({ kind: 'cosine', totalSteps: 10, warmupSteps: 2, minLrRatio: 0.1 });
  assert.equal(s.multiplier(0), 0, 'warmup is not lifted by the ratio');
  close(s.multiplier(6), 0.5 * 0.9 + 0.1, 'λ(6)');
  close(s.multiplier(10), 0.1, 'λ(10)');
});

test('cosine with numCycles 1 goes down and back up once', () => {
  const s = makeSchedule({ kind: 'cosine', totalSteps: 8, numCycles: 1 });
  assert.equal(s.multiplier(0), 1);
  close(s.multiplier(4), 0, 'λ(4): cos(π) → 0');
  close(s.multiplier(8), 1, 'λ(8): cos(2π) → 1');
});

test('linear with a min-lr ratio blends like cosine: λ·(1 − r) + r', () => {
  const s = makeSchedule({ kind: 'linear', totalSteps: 10, warmupSteps: 2, minLrRatio: 0.2 });
  close(s.multiplier(6), 0.5 * 0.8 + 0.2, 'λ(6)');
  close(s.multiplier(10), 0.2, 'λ(10)');
});

test('constant schedule: warmup then 1; no warmup means 1 from the first step', () => {
  const s = makeSchedule({ kind: 'constant', totalSteps: 100, warmupSteps: 3 });
  assert.deepEqual(
    [0, 1, 2, 3, 99, 150].map((t) => s.multiplier(t)),
    [0, 1 / 3, 2 / 3, 1, 1, 1],
  );
  assert.equal(makeSchedule({ kind: 'constant', totalSteps: 5 }).multiplier(0), 1);
});

test('warmupRatio rounds up like TrainingArguments.get_warmup_steps, float quirks included', () => {
  assert.equal(warmupStepsFor(10, 0.15), 2);
  assert.equal(warmupStepsFor(100, 0.07), 8, "100·0.07 = 7.000000000000001 in floats; Python's math.ceil gives 8 too");
  assert.equal(makeSchedule({ kind: 'linear', totalSteps: 10, warmupRatio: 0.15 }).warmupSteps, 2);
});

test('schedule options are checked and errors name the option', () => {
  const bad: [object, RegExp][] = [
    [{ kind: 'step', totalSteps: 10 }, /kind must be/],
    [{ kind: 'linear', totalSteps: 0 }, /totalSteps must be a positive integer/],
    [{ kind: 'linear', totalSteps: 10, warmupSteps: 2, warmupRatio: 0.1 }, /warmupSteps or warmupRatio, not both/],
    [{ kind: 'linear', totalSteps: 10, warmupRatio: 1.5 }, /warmupRatio must be in \[0, 1\]/],
    [{ kind: 'constant', totalSteps: 10, minLrRatio: 0.1 }, /minLrRatio applies to "linear" and "cosine"/],
    [{ kind: 'linear', totalSteps: 10, numCycles: 2 }, /numCycles applies to "cosine" only/],
  ];
  for (const [opts, re] of bad)
    assert.throws(
      () => makeSchedule(opts as never),
      (e: Error & { code?: string }) => e.code === 'LK_INVALID_ARGUMENT' && re.test(e.message),
    );
});
