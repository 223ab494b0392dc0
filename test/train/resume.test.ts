// Resuming says where it continues from, and refuses settings that would not continue the saved run (each named),
// unless overridden; the run's length may change.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LorakitError } from '../../src/errors.ts';
import { adamw } from '../../src/optim/index.ts';
import { shutdownRuntime } from '../../src/runtime/index.ts';
import { loadCheckpoint, train, type Notice, type TrainOptions } from '../../src/train/index.ts';
import { regressionTask } from './fixtures/tasks.ts';

after(() => shutdownRuntime());
const tmp = () => mkdtempSync(join(tmpdir(), 'lorakit-resume-'));
const base = (outputDir: string, extra: Partial<TrainOptions> = {}): TrainOptions => ({
  outputDir,
  steps: 4,
  lr: 0.01,
  warmupSteps: 1,
  gradientAccumulation: 2,
  progress: 'none',
  plot: false,
  ...extra,
});

test('a resume with a changed lr, accumulation, optimizer setting or batch size is refused naming each key', async () => {
  const dir = tmp();
  await train(regressionTask({ withEval: false }), base(dir, { steps: 2 }));
  const before = readFileSync(join(dir, 'metrics.jsonl'), 'utf8');
  const refused = async (o: Partial<TrainOptions>, keys: RegExp, task = regressionTask({ withEval: false })) =>
    assert.rejects(train(task, base(dir, { resume: true, ...o })), (e: LorakitError) => {
      assert.equal(e.code, 'LK_INVALID_ARGUMENT');
      assert.match(e.message, /cannot resume exactly from .*checkpoint-2/);
      assert.match(e.message, keys);
      assert.match(e.message, /resume_override/);
      return true;
    });
  await refused({ lr: 0.02 }, /learning_rate \(lr\): the checkpoint has 0\.01, this run 0\.02/);
  await refused({ gradientAccumulation: 1, seed: 3 }, /gradient_accumulation_steps .*: the checkpoint has 2, .*seed/);
  await refused({ optimizer: adamw({ beta2: 0.99 }) }, /optim_args \(optimizer\): .*beta2=0\.999.*beta2=0\.99/);
  await refused({ schedule: 'cosine', clipNorm: 1 }, /lr_scheduler_type .*"linear".*"cosine".*max_grad_norm/);
  await refused({}, /batch_size: the checkpoint has 8, this run 4/, regressionTask({ withEval: false, batchSize: 4 }));
  assert.equal(readFileSync(join(dir, 'metrics.jsonl'), 'utf8'), before, 'a refused resume leaves the run as it was');
});

test('resumeOverride resumes with the new settings, warning about each; notices say where the run resumed', async () => {
  const dir = tmp();
  await train(regressionTask({ withEval: false }), base(dir, { steps: 2 }));
  const notices: Notice[] = [];
  const r = await train(
    regressionTask({ withEval: false }),
    base(dir, { resume: true, resumeOverride: true, lr: 0.02, steps: 5, onNotice: (n) => notices.push(n) }),
  );
  assert.equal(r.step, 5);
  assert.deepEqual(
    notices.map((n) => n.level),
    ['warning', 'info', 'info'],
  );
  assert.match(notices[0].message, /changed setting \(resume_override\): learning_rate \(lr\): .*0\.01.*0\.02/);
  assert.match(notices[1].message, new RegExp(`resumed from ${join(dir, 'checkpoint-2')} \\(step 2 of 5\\)`));
  assert.match(notices[2].message, /length changed from 2 to 5 steps; the linear schedule now spans the new length/);
  assert.equal(r.history[2].lr, 0.02 * ((5 - 2) / (5 - 1)), 'step 3 runs at the new lr, λ(2) of the 5-step schedule');
  const ck = await loadCheckpoint(r.checkpoint);
  assert.equal(ck.state.settings?.learning_rate, 0.02, 'later checkpoints record the settings the run went on with');
  // the next resume compares against what the run went on with
  const again = await train(regressionTask({ withEval: false }), base(dir, { resume: true, lr: 0.02, steps: 6 }));
  assert.equal(again.step, 6);
});

test('extending a run (more steps, same settings) resumes without override; the notice goes to the progress stream', async () => {
  const dir = tmp();
  await train(regressionTask({ withEval: false }), base(dir, { steps: 2, schedule: 'constant' }));
  let out = '';
  const stream = Object.assign(new (await import('node:stream')).PassThrough(), { isTTY: false });
  stream.on('data', (d) => (out += d));
  await train(
    regressionTask({ withEval: false }),
    base(dir, { steps: 3, schedule: 'constant', resume: true, progress: 'lines', progressStream: stream }),
  );
  assert.match(out, /^resumed from .*checkpoint-2 \(step 2 of 3\)\nthe run's length changed from 2 to 3 steps\n/);
});
