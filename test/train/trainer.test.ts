// The training loop on a small regression task: fitting, metrics, epochs, eval + early stopping, non-finite losses,
// progress output and option errors.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { LorakitError } from '../../src/errors.ts';
import { SafetensorsFile } from '../../src/io/index.ts';
import { defaultRuntime, shutdownRuntime } from '../../src/runtime/index.ts';
import { Rng } from '../../src/linalg/index.ts';
import {
  latestCheckpoint,
  loadCheckpoint,
  lossEvaluator,
  train,
  Trainer,
  type StepRecord,
  type TrainBatch,
  type TrainTask,
} from '../../src/train/index.ts';
import { D, regressionTask } from './fixtures/tasks.ts';

after(() => shutdownRuntime());
const tmp = () => mkdtempSync(join(tmpdir(), 'lorakit-trainer-'));
const quiet = { progress: 'none', plot: false } as const;
const readJsonl = (path: string): StepRecord[] =>
  readFileSync(path, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));

test('a run fits the regression, writes one metrics.jsonl line per step and saves final/ with task.save', async () => {
  const dir = tmp();
  const r = await train(regressionTask(), {
    outputDir: dir,
    steps: 120,
    lr: 0.02,
    schedule: 'cosine',
    warmupSteps: 5,
    ...quiet,
  });
  assert.equal(r.stopReason, 'completed');
  assert.equal(r.step, 120);
  const first = r.history.slice(0, 5).reduce((a, h) => a + h.loss, 0) / 5,
    last = r.history.slice(-5).reduce((a, h) => a + h.loss, 0) / 5;
  assert.ok(last < first / 4, `loss fell only from ${first} to ${last}`);
  const lines = readJsonl(join(dir, 'metrics.jsonl'));
  assert.equal(lines.length, 120);
  for (const k of ['step', 'epoch', 'loss', 'lr', 'grad_norm', 'tokens', 'tokens_per_s', 'elapsed'])
    assert.equal(typeof lines[0][k], 'number', `field ${k}`);
  assert.deepEqual(
    lines.map((l) => l.step),
    Array.from({ length: 120 }, (_, i) => i + 1),
  );
  assert.equal(lines[119].tokens, 120 * 8, 'tokens count every example seen');
  assert.equal(lines[0].lr, 0, 'the first update runs at λ(0) = 0 during warmup, as in transformers');
  assert.equal(lines[5].lr, 0.02, 'λ(5) = 1 at the end of warmup');
  const st = await SafetensorsFile.open(join(dir, 'final', 'model.safetensors'));
  assert.deepEqual(await st.readAs('w2', 'f32'), r.params.get('w2'));
  await st.close();
  assert.equal(await latestCheckpoint(dir), join(dir, 'checkpoint-120'), 'a final checkpoint is always written');
});

test('epochs: the run ends with the last epoch, and a last partial accumulation step takes the rest', async () => {
  const dir = tmp();
  const task = regressionTask({ withEval: false }); // 8 batches per epoch
  const r = await train(task, { outputDir: dir, epochs: 2, gradientAccumulation: 3, lr: 0.01, ...quiet });
  assert.equal(r.stopReason, 'completed');
  assert.equal(r.step, 6, '16 batches in steps of 3 → ⌈16/3⌉ = 6 steps');
  assert.equal(r.history[5].tokens, 16 * 8);
  assert.equal(r.history[5].epoch, 2);
  const ck = await loadCheckpoint((await latestCheckpoint(dir))!);
  assert.deepEqual(ck.state.position, { epoch: 2, index: 0 });
});

test(
  'eval every N steps records eval_loss and eval_ppl; early stopping waits `patience` evaluations; best/ holds ' +
    'the best params',
  async () => {
    const dir = tmp();
    const script = [1.0, 0.8, 0.85, 0.9, 0.5];
    const seen: Map<string, Float32Array>[] = [];
    const task: TrainTask = {
      ...regressionTask({ withEval: false }),
      async evaluate(params) {
        seen.push(new Map(params));
        return { loss: script[seen.length - 1] };
      },
    };
    const r = await train(task, {
      outputDir: dir,
      steps: 50,
      lr: 0.01,
      evalEvery: 2,
      earlyStoppingPatience: 2,
      checkpointEvery: 3,
      ...quiet,
    });
    assert.equal(r.stopReason, 'early_stopping');
    assert.equal(r.step, 8, 'evals at 2, 4 (best), 6 and 8 without improvement → stop at 8');
    assert.equal(r.bestEvalLoss, 0.8);
    assert.equal(r.bestStep, 4);
    const evals = readJsonl(join(dir, 'metrics.jsonl')).filter((l) => l.eval_loss !== undefined);
    assert.deepEqual(
      evals.map((l) => [l.step, l.eval_loss, l.eval_ppl]),
      [
        [2, 1.0, Math.exp(1)],
        [4, 0.8, Math.exp(0.8)],
        [6, 0.85, Math.exp(0.85)],
        [8, 0.9, Math.exp(0.9)],
      ],
    );
    const best = await SafetensorsFile.open(join(dir, 'best', 'model.safetensors'));
    for (const k of ['w1', 'b2'])
      assert.deepEqual(await best.readAs(k, 'f32'), seen[1].get(k), `best/ ${k} is the step-4 value`);
    await best.close();
    const ck = await loadCheckpoint((await latestCheckpoint(dir))!);
    assert.equal(ck.state.step, 8);
    assert.equal(ck.state.evals_without_improvement, 2);
  },
);

test('lossEvaluator gives the mean over all held-out examples, not over batches', async () => {
  const task = regressionTask({ dropout: 0 });
  const params = new Map(Object.entries(await task.initialParams(new Rng(1))));
  const [b] = task.evalBatches();
  const part = (from: number, to: number): TrainBatch => {
    const x = b.feeds.x as { data: Float32Array },
      y = b.feeds.y as { data: Float32Array };
    return {
      feeds: {
        x: { data: x.data.slice(from * D, to * D), shape: [to - from, D] },
        y: { data: y.data.slice(from, to), shape: [to - from] },
      },
      weight: to - from,
      next: b.next,
    };
  };
  const whole = await lossEvaluator(task, () => [b])(params);
  const split = await lossEvaluator(task, () => [part(0, 2), part(2, 8)])(params);
  assert.equal(split.weight, 8);
  assert.ok(Math.abs(split.loss - whole.loss) < 1e-6 * whole.loss, `${split.loss} vs ${whole.loss}`);
  const [l2, l6] = [
    await lossEvaluator(task, () => [part(0, 2)])(params),
    await lossEvaluator(task, () => [part(2, 8)])(params),
  ];
  assert.ok(Math.abs((l2.loss + l6.loss) / 2 - whole.loss) > 1e-4, 'the unweighted mean of batch means would differ');
});

for (const k of [1, 2]) {
  test(
    `a NaN loss (accumulation ${k}) stops the run with LK_NON_FINITE naming the step; the last good checkpoint ` +
      `stays latest`,
    async () => {
      const dir = tmp();
      // Batch 4 (0-based) holds NaN targets: with k = 1 that is step 5; with k = 2 it is step 3, micro-batch 1 of 2.
      const task = regressionTask({ nanAtBatch: 4, withEval: false });
      const err = await train(task, {
        outputDir: dir,
        steps: 20,
        lr: 0.01,
        gradientAccumulation: k,
        checkpointEvery: 2,
        ...quiet,
      }).then(
        () => null,
        (e) => e,
      );
      assert.ok(err instanceof LorakitError, `expected a LorakitError, got ${err}`);
      assert.equal(err.code, 'LK_NON_FINITE');
      const step = k === 1 ? 5 : 3,
        good = step - 1 - ((step - 1) % 2);
      assert.match(
        err.message,
        new RegExp(`the loss became NaN at step ${step}${k === 2 ? ' in micro-batch 1 of 2' : ' \\('}`),
      );
      assert.match(err.message, new RegExp(`last good checkpoint is .*checkpoint-${good}`));
      assert.equal(err.details.step, step);
      assert.equal(await latestCheckpoint(dir), join(dir, `checkpoint-${good}`));
      const ck = await loadCheckpoint(join(dir, `checkpoint-${good}`));
      assert.ok([...ck.params.values()].every((v) => v.every(Number.isFinite)));
      assert.equal(readJsonl(join(dir, 'metrics.jsonl')).length, step - 1, 'no metrics line for the bad step');
      assert.ok(!readdirSync(dir).some((n) => n === `checkpoint-${step}`));
    },
  );
}

test('an abort signal stops after the current step and writes a checkpoint', async () => {
  const dir = tmp();
  const ac = new AbortController();
  const r = await train(regressionTask({ withEval: false }), {
    outputDir: dir,
    steps: 100,
    lr: 0.01,
    signal: ac.signal,
    onStep: (rec) => {
      if (rec.step === 7) ac.abort();
    },
    ...quiet,
  });
  assert.equal(r.stopReason, 'aborted');
  assert.equal(r.step, 7);
  assert.equal(r.checkpoint, join(dir, 'checkpoint-7'));
});

test(
  'progress: plain lines every logEvery steps on a non-terminal stream, a cli-progress bar on a ' + 'terminal',
  async () => {
    const collect = (isTTY: boolean) => {
      const s = Object.assign(new PassThrough(), { isTTY, columns: 120 });
      let text = '';
      s.on('data', (d) => {
        text += d;
      });
      return { s, text: () => text };
    };
    const lines = collect(false);
    await train(regressionTask({ withEval: false }), {
      outputDir: tmp(),
      steps: 12,
      lr: 0.01,
      progressStream: lines.s,
      logEvery: 5,
      plot: false,
    });
    const out = lines.text().trim().split('\n');
    assert.deepEqual(
      out.map((l) => l.split(' ')[1]),
      ['5/12', '10/12', '12/12'],
    );
    assert.match(out[0], /^step 5\/12 loss \d+\.\d{4} lr \S+ grad_norm \S+ \S+ tok\/s ETA \S+$/);
    const bar = collect(true);
    await train(regressionTask({ withEval: false }), {
      outputDir: tmp(),
      steps: 12,
      lr: 0.01,
      progressStream: bar.s,
      plot: false,
    });
    assert.match(bar.text(), /step 12\/12 .* loss \d+\.\d{4} \| \S+ tok\/s \| ETA/);
  },
);

test('evalOnStart evaluates the initial params once before step 1, and not again on resume', async () => {
  const dir = tmp();
  const seen: Map<string, Float32Array>[] = [];
  const task: TrainTask = {
    ...regressionTask({ withEval: false }),
    async evaluate(params) {
      seen.push(new Map([...params].map(([k, v]) => [k, v.slice()])));
      return { loss: 10 + seen.length };
    },
  };
  const r = await train(task, { outputDir: dir, steps: 2, lr: 0.01, evalOnStart: true, evalEvery: 2, ...quiet });
  assert.equal(r.evalOnStartLoss, 11, 'the first evaluation is the one before step 1');
  assert.equal(seen.length, 2, 'one at the start, one at step 2');
  assert.ok(
    seen[0].get('w1')!.some((v, i) => v !== seen[1].get('w1')![i]),
    'the start evaluation saw params that the steps then changed',
  );
  const evals = readJsonl(join(dir, 'metrics.jsonl')).filter((l) => l.eval_loss !== undefined);
  assert.deepEqual(
    evals.map((l) => l.step),
    [2],
    'metrics.jsonl keeps one line per step (the start loss is returned)',
  );
  const resumed = await train(task, { outputDir: dir, steps: 3, lr: 0.01, evalOnStart: true, resume: true, ...quiet });
  assert.equal(resumed.evalOnStartLoss, null, 'a resumed run was evaluated when it first started');
  assert.equal(seen.length, 2);
  const plain = await train(task, { outputDir: tmp(), steps: 1, lr: 0.01, ...quiet });
  assert.equal(plain.evalOnStartLoss, null);
});

test('options are checked before anything runs, and errors name the option', async () => {
  const task = regressionTask({ withEval: false });
  const cases: [object, RegExp][] = [
    [{ lr: 0.01 }, /exactly one of the options steps and epochs \(got neither\)/],
    [{ lr: 0.01, steps: 5, epochs: 1 }, /exactly one of the options steps and epochs \(got both\)/],
    [{ steps: 5 }, /option lr must be a positive number/],
    [{ lr: 0.01, steps: 5, gradientAccumulation: 0 }, /option gradientAccumulation must be a positive integer, got 0/],
    [{ lr: 0.01, steps: 5, evalEvery: 2 }, /evalEvery needs a task with evaluate\(\)/],
    [{ lr: 0.01, steps: 5, earlyStoppingPatience: 2 }, /earlyStoppingPatience needs evalEvery/],
    [{ lr: 0.01, steps: 5, evalOnStart: true }, /evalOnStart needs a task with evaluate\(\)/],
    [{ lr: 0.01, steps: 5, clipNorm: -1 }, /option clipNorm must be > 0/],
    [{ lr: 0.01, steps: 5, progress: 'off' }, /option progress must be "auto", "bar", "lines" or "none", got "off"/],
  ];
  for (const [opts, re] of cases) {
    assert.throws(
      () => new Trainer(task, { outputDir: tmp(), ...opts } as never),
      (e: LorakitError) => e.code === 'LK_INVALID_ARGUMENT' && re.test(e.message),
      String(re),
    );
  }
  assert.throws(
    () => new Trainer({ ...task, batchesPerEpoch: undefined }, { outputDir: tmp(), lr: 0.01, epochs: 1 }),
    /epochs needs task.batchesPerEpoch/,
  );
});

test('a fresh run refuses an outputDir that already holds checkpoints', async () => {
  const dir = tmp();
  await train(regressionTask({ withEval: false }), { outputDir: dir, steps: 2, lr: 0.01, ...quiet });
  await assert.rejects(
    train(regressionTask({ withEval: false }), { outputDir: dir, steps: 2, lr: 0.01, ...quiet }),
    (e: LorakitError) =>
      e.code === 'LK_INVALID_ARGUMENT' &&
      /already holds checkpoints \(latest: .*checkpoint-2\); pass resume: true/.test(e.message),
  );
  assert.ok(existsSync(join(dir, 'checkpoint-2')));
});

test("a run releases its step's sessions at the end, also when it stops on a non-finite loss", async () => {
  // a process that trains in turn must not keep each run's step session (its arena holds a step's activations)
  const stats = () => defaultRuntime().stats();
  const before = stats();
  await train(regressionTask({ withEval: false }), { outputDir: tmp(), steps: 3, lr: 0.02, ...quiet });
  assert.equal(stats().alive, before.alive, 'no session outlives the run');
  assert.ok(stats().released > before.released, 'the step session was released');
  const nan = regressionTask({ withEval: false, nanAtBatch: 1 });
  await assert.rejects(train(nan, { outputDir: tmp(), steps: 3, lr: 0.02, ...quiet }), { code: 'LK_NON_FINITE' });
  assert.equal(stats().alive, before.alive, 'nor a run that threw');
});
