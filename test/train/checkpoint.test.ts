// Checkpoints: layout and pruning, exact (bit-for-bit) resume, and loading errors that name the broken file.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  copyFileSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  truncateSync,
  writeFileSync,
  statSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LorakitError } from '../../src/errors.ts';
import { sgd } from '../../src/optim/index.ts';
import { shutdownRuntime } from '../../src/runtime/index.ts';
import {
  latestCheckpoint,
  loadCheckpoint,
  removeLeftovers,
  StepEngine,
  train,
  type StepRecord,
  type TrainOptions,
} from '../../src/train/index.ts';
import { paramBytes, regressionTask } from './fixtures/tasks.ts';

after(() => shutdownRuntime());
const tmp = () => mkdtempSync(join(tmpdir(), 'lorakit-ckpt-'));
const quiet = { progress: 'none', plot: false } as const;

test(
  'checkpoint-<step>/ holds params, optimizer state and trainer state; latest names the newest; keepCheckpoints ' +
    'prunes',
  async () => {
    const dir = tmp();
    await train(regressionTask({ withEval: false }), {
      outputDir: dir,
      steps: 7,
      lr: 0.01,
      checkpointEvery: 2,
      keepCheckpoints: 2,
      ...quiet,
    });
    assert.deepEqual(readdirSync(dir).sort(), ['checkpoint-6', 'checkpoint-7', 'final', 'latest', 'metrics.jsonl']);
    assert.equal(readFileSync(join(dir, 'latest'), 'utf8'), 'checkpoint-7\n');
    for (const c of ['checkpoint-6', 'checkpoint-7'])
      assert.deepEqual(readdirSync(join(dir, c)).sort(), [
        'optimizer.safetensors',
        'params.safetensors',
        'trainer_state.json',
      ]);
    const ck = await loadCheckpoint(join(dir, 'checkpoint-7'));
    assert.deepEqual([...ck.params.keys()].sort(), ['b1', 'b2', 'w1', 'w2']);
    assert.deepEqual([...ck.optimizer.keys()].sort(), [
      'b1::m',
      'b1::v',
      'b2::m',
      'b2::v',
      'w1::m',
      'w1::v',
      'w2::m',
      'w2::v',
    ]);
    assert.equal(ck.state.step, 7);
    assert.deepEqual(ck.state.position, { epoch: 0, index: 7 });
    assert.equal(ck.state.history.length, 7);
    assert.equal(ck.state.schedule.kind, 'linear');
  },
);

// Everything that a checkpoint must carry for an exact resume is switched on: accumulation, cosine warmup, clipping,
// weight decay, LoRA+ groups, eval, dropout drawn from the run's rng, and data reshuffled each epoch.
const full = (outputDir: string, extra: Partial<TrainOptions> = {}): TrainOptions => ({
  outputDir,
  steps: 12,
  lr: 0.02,
  schedule: 'cosine',
  warmupSteps: 2,
  gradientAccumulation: 2,
  clipNorm: 1,
  loraplusWeightDecay: 0.01, // with LoRA+, PEFT's weight decay key
  loraplusLrRatio: 4,
  evalEvery: 3,
  checkpointEvery: 4,
  seed: 7,
  ...quiet,
  ...extra,
});
const deterministic = (h: StepRecord[]) => h.map(({ tokens_per_s: _t, elapsed: _e, ...rest }) => rest);

test('resume is exact: stopping after step 5 and resuming reproduces the uninterrupted run bit for bit', async () => {
  const a = await train(regressionTask(), full(tmp()));
  const dirB = tmp();
  const ac = new AbortController();
  const b1 = await train(
    regressionTask(),
    full(dirB, {
      signal: ac.signal,
      onStep: (r) => {
        if (r.step === 5) ac.abort();
      },
    }),
  );
  assert.equal(b1.stopReason, 'aborted');
  assert.equal(b1.step, 5);
  assert.notDeepEqual(paramBytes(b1.params), paramBytes(a.params));
  const b2 = await train(regressionTask(), full(dirB, { resume: true }));
  assert.equal(b2.step, 12);
  assert.deepEqual(paramBytes(b2.params), paramBytes(a.params));
  assert.deepEqual(deterministic(b2.history), deterministic(a.history), 'same losses, lrs, grad norms, eval losses');
  assert.equal(b2.bestStep, a.bestStep);
  const [ckA, ckB] = [await loadCheckpoint(a.checkpoint), await loadCheckpoint(b2.checkpoint)];
  assert.deepEqual(paramBytes(ckB.optimizer), paramBytes(ckA.optimizer), 'optimizer state');
  assert.equal(ckB.state.rng_state, ckA.state.rng_state);
  const lines = readFileSync(join(dirB, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  assert.deepEqual(
    lines.map((l) => l.step),
    Array.from({ length: 12 }, (_, i) => i + 1),
    'metrics.jsonl has each step once',
  );

  // Resuming from an older checkpoint (4) moves `latest` back and rewrites the later folders, with the same result.
  const b3 = await train(regressionTask(), full(dirB, { resume: join(dirB, 'checkpoint-4') }));
  assert.deepEqual(paramBytes(b3.params), paramBytes(a.params));
  assert.equal(await latestCheckpoint(dirB), join(dirB, 'checkpoint-12'));
});

test('resuming with another optimizer or another model shape is refused, naming what differs', async () => {
  const dir = tmp();
  await train(regressionTask({ withEval: false }), { outputDir: dir, steps: 2, lr: 0.01, ...quiet });
  await assert.rejects(
    train(regressionTask({ withEval: false }), {
      outputDir: dir,
      steps: 4,
      lr: 0.01,
      optimizer: sgd({ momentum: 0.9 }),
      resume: true,
      ...quiet,
    }),
    /was trained with optimizer "adamw", this run uses "sgd"/,
  );
  await assert.rejects(
    train(regressionTask({ withEval: false, hidden: 8 }), {
      outputDir: dir,
      steps: 4,
      lr: 0.01,
      resume: true,
      ...quiet,
    }),
    (e: LorakitError) =>
      e.code === 'LK_FILE_INVALID' &&
      /params\.safetensors: tensor "w1" has shape \[4, 16\], this run's parameter is \[4, 8\]/.test(e.message),
  );
});

test('loading names the broken file: latest, trainer_state.json, params/optimizer safetensors', async () => {
  const dir = tmp();
  await train(regressionTask({ withEval: false }), {
    outputDir: dir,
    steps: 4,
    lr: 0.01,
    checkpointEvery: 2,
    ...quiet,
  });
  const ck = join(dir, 'checkpoint-4');
  const fresh = () => {
    const d = tmp();
    for (const f of readdirSync(ck)) copyFileSync(join(ck, f), join(d, f));
    return d;
  };
  const rejects = async (d: string, code: string, re: RegExp) =>
    assert.rejects(loadCheckpoint(d), (e: LorakitError) => {
      assert.equal(e.code, code, e.message);
      assert.match(e.message, re);
      return true;
    });

  let d = fresh();
  truncateSync(join(d, 'params.safetensors'), statSync(join(d, 'params.safetensors')).size - 10);
  await rejects(d, 'LK_FILE_INVALID', /params\.safetensors/);
  d = fresh();
  rmSync(join(d, 'optimizer.safetensors'));
  await rejects(d, 'LK_FILE_NOT_FOUND', /optimizer\.safetensors/);
  d = fresh();
  copyFileSync(join(dir, 'checkpoint-2', 'params.safetensors'), join(d, 'params.safetensors'));
  await rejects(d, 'LK_FILE_INVALID', /params\.safetensors: it is from step 2, but trainer_state\.json says step 4/);
  d = fresh();
  const state = JSON.parse(readFileSync(join(d, 'trainer_state.json'), 'utf8'));
  writeFileSync(join(d, 'trainer_state.json'), JSON.stringify({ ...state, position: { epoch: -1, index: 0 } }));
  await rejects(d, 'LK_FILE_INVALID', /trainer_state\.json: field "position\.epoch"/);
  d = fresh();
  writeFileSync(join(d, 'trainer_state.json'), readFileSync(join(ck, 'trainer_state.json'), 'utf8').slice(0, 100));
  await rejects(d, 'LK_FILE_INVALID', /trainer_state\.json/);
  d = fresh();
  rmSync(join(d, 'trainer_state.json'));
  await rejects(d, 'LK_FILE_INVALID', /trainer_state\.json: the file is missing/);

  writeFileSync(join(dir, 'latest'), 'checkpoint-9\n');
  await assert.rejects(
    latestCheckpoint(dir),
    (e: LorakitError) =>
      e.code === 'LK_FILE_INVALID' && /latest: it names checkpoint-9, but .* is not a folder/.test(e.message),
  );
  writeFileSync(join(dir, 'latest'), '{"oops": 1}');
  await assert.rejects(latestCheckpoint(dir), /latest: expected the name of a checkpoint folder/);
});

test('a checkpoint never holds tensors the run does not train', async () => {
  const dir = tmp();
  await train(regressionTask({ withEval: false }), { outputDir: dir, steps: 2, lr: 0.01, ...quiet });
  const task = regressionTask({ withEval: false });
  const engine = await StepEngine.create(task, { optimizer: sgd({ momentum: 0.9 }), accumulation: 1, weightDecay: 0 });
  await assert.rejects(
    loadCheckpoint(join(dir, 'checkpoint-2'), engine.shapes()),
    /optimizer\.safetensors: it holds tensors this run does not train: .*::m/,
  );
});

test(
  'removeLeftovers deletes only what a killed run leaves: temp/aside folders and atomic-write temp ' + 'files',
  async () => {
    const dir = tmp();
    const leftovers = [
      '.tmp-checkpoint-3-123-ab12cd34',
      '.old-checkpoint-2-9-00ff00ff',
      '.tmp-best-77-0a0b0c0d',
      '.latest.4242.0123456789ab.tmp',
      '.metrics.jsonl.7.abcdefabcdef.tmp',
    ];
    const kept = ['.notes', 'checkpoint-3', '.tmp-checkpoint-x', 'my.tmp'];
    for (const n of [...leftovers, ...kept]) writeFileSync(join(dir, n), '');
    await removeLeftovers(dir);
    assert.deepEqual(readdirSync(dir).sort(), [...kept].sort());
  },
);
