// The diffusion training pieces: digit canvases against the bundled images, one batch's x_t against the forward
// process recomputed here, the task's loss against a separate forward pass and a host MSE, the cell classifier's
// held-out accuracy, and the diffusion run.yaml's validation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { assertAllclose } from '../helpers.ts';
import { Graph } from '../../src/graph/index.ts';
import { SafetensorsFile } from '../../src/io/index.ts';
import { Rng } from '../../src/linalg/index.ts';
import {
  initUNetConditionWeights,
  memoryUNetCondition,
  noiseSchedule,
  unet2dCondition,
} from '../../src/models/index.ts';
import { compile } from '../../src/runtime/index.ts';
import {
  CANVAS_TOKENS,
  cellAccuracy,
  cellSet,
  diffusionBatch,
  diffusionTask,
  digitCanvases,
  digitSplit,
  leftRightTokens,
  loadDiffusionRun,
  oneHotStates,
  PROMPT_FILE,
  promptKindOf,
  promptStates,
  promptWidth,
  runDiffusionTraining,
  savePromptKind,
  train,
  trainCellClassifier,
} from '../../src/train/index.ts';
import { LorakitError } from '../../src/errors.ts';
import { tinyUNetConditionConfig } from '../unet-configs.ts';

const DIGITS = resolve(import.meta.dirname, '../../data/digits/digits.safetensors');
async function digits() {
  const f = await SafetensorsFile.open(DIGITS);
  const d = { images: await f.readAs('images', 'u8'), labels: await f.readAs('labels', 'u8') };
  await f.close();
  return d;
}

test('digit canvases: the named digit is an image of that class from the split; "empty" halves are blank', async () => {
  const d = await digits();
  const set = digitCanvases(d, { main: [7], other: [1, 2], emptyProbability: 0.5, count: 40, seed: 3, split: 'train' });
  const pools = digitSplit(d.labels, 'train');
  const cellOf = (k: number, half: number) =>
    Array.from({ length: 64 }, (_, p) => set.images[k * 128 + Math.floor(p / 8) * 16 + half * 8 + (p % 8)]);
  const isImageOf = (cell: number[], digit: number) =>
    pools[digit].some((r) => cell.every((v, p) => v === d.images[r * 64 + p] / 8 - 1));
  let empties = 0;
  for (let k = 0; k < set.n; k++) {
    assert.equal(set.tokens[2 * k], 7);
    const other = set.tokens[2 * k + 1];
    const halves = [cellOf(k, 0), cellOf(k, 1)];
    const seven = halves.findIndex((c) => isImageOf(c, 7));
    assert.ok(seven >= 0, `canvas ${k}: no half is a 7 of the train split`);
    if (other === CANVAS_TOKENS.empty) {
      empties++;
      assert.ok(
        halves[1 - seven].every((v) => v === -1),
        `canvas ${k}: the empty half is not blank`,
      );
    } else assert.ok(isImageOf(halves[1 - seven], other), `canvas ${k}: the other half is not a ${other}`);
  }
  assert.ok(empties > 5 && empties < 35, `about half empty, got ${empties}`);
  // the splits do not overlap
  const test7 = new Set(digitSplit(d.labels, 'test')[7]);
  assert.ok(pools[7].every((r) => !test7.has(r)));
});

test('one batch: x_t = √ᾱ_t·x₀ + √(1 − ᾱ_t)·ε at integer t, one-hot states, the null prompt on dropout', async () => {
  const d = await digits();
  const set = digitCanvases(d, { main: [3], other: [], emptyProbability: 1, count: 8, seed: 1, split: 'train' });
  const schedule = noiseSchedule({ beta_schedule: 'squaredcos_cap_v2' });
  const b = diffusionBatch({ schedule, train: set, condDropout: 0.5 }, [0, 1, 2, 3, 4, 5, 6, 7], new Rng(4));
  let dropped = 0;
  for (let k = 0; k < 8; k++) {
    const t = b.timesteps[k];
    assert.ok(Number.isInteger(t) && t >= 0 && t < 1000);
    const a = schedule.alphasCumprod[t];
    for (let p = 0; p < 128; p++) {
      const want = Math.sqrt(a) * set.images[k * 128 + p] + Math.sqrt(1 - a) * b.noise[k * 128 + p];
      assert.ok(Math.abs(b.latent[k * 128 + p] - want) < 1e-5);
    }
    const row = b.states.subarray(k * 24, (k + 1) * 24);
    assert.equal(
      row.reduce((s, v) => s + v, 0),
      2,
    );
    if (row[CANVAS_TOKENS.null] === 1) dropped++;
    else assert.ok(row[3] === 1 && row[12 + CANVAS_TOKENS.empty] === 1);
  }
  assert.ok(dropped > 0 && dropped < 8, `some but not all prompts dropped, got ${dropped}`);
});

test("the task's first-step loss is the MSE of a separate forward pass's ε̂ against the batch's ε", async () => {
  const d = await digits();
  const set = digitCanvases(d, { main: [1, 2], other: [1], emptyProbability: 0.5, count: 8, seed: 2, split: 'train' });
  const config = tinyUNetConditionConfig({ block_out_channels: [8, 8] });
  const weights = initUNetConditionWeights(config, new Rng(1));
  const unet = memoryUNetCondition(config, weights);
  const schedule = noiseSchedule();
  const task = diffusionTask({ unet, schedule, train: set, batchSize: 4, dataSeed: 5 });
  const first = (task.batches({ epoch: 0, index: 0 }) as Iterable<{ feeds: Record<string, { data: Float32Array }> }>)
    [Symbol.iterator]()
    .next().value!.feeds;
  const g = new Graph('check');
  const [x, t, s] = [g.input('x', 'f32', [4, 1, 8, 16]), g.input('t', 'f32', [4]), g.input('s', 'f32', [4, 2, 12])];
  g.output('eps', unet2dCondition(unet.context(g), x, t, s));
  const eps = (
    await (
      await compile(g, { worker: false })
    ).run({ x: first.latent.data, t: first.timesteps.data, s: first.states.data })
  ).eps.data as Float32Array;
  const want = eps.reduce((acc, v, k) => acc + (v - first.noise.data[k]) ** 2, 0) / eps.length;
  const dir = mkdtempSync(join(tmpdir(), 'lk-difftest-'));
  const losses: number[] = [];
  try {
    await train(task, {
      outputDir: dir,
      steps: 1,
      lr: 1e-3,
      progress: 'none',
      plot: false,
      onStep: (r) => {
        losses.push(r.loss);
      },
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  assertAllclose(losses, [want], { rtol: 1e-4, what: 'first loss' });
});

test('the cell classifier names held-out digits and blank cells (≥ 85% after 3 epochs)', async () => {
  const d = await digits();
  const m = trainCellClassifier(cellSet(d, 'train', 1), { epochs: 3, hidden: 24, seed: 1 });
  const acc = cellAccuracy(m, cellSet(d, 'test', 2));
  assert.ok(acc >= 0.85, `held-out accuracy ${acc}`);
});

test('a diffusion run.yaml is validated strictly and its paths resolve against its folder', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lk-diffyaml-'));
  try {
    const file = join(dir, 'run.yaml');
    writeFileSync(
      file,
      'task: diffusion\noutput_dir: out\nmodel: {from: base}\ndata: {digits: d.safetensors, main: [5]}\n' +
        'adapter: {peft_type: LORA, r: 4, target_modules: [to_k]}\n',
    );
    const c = loadDiffusionRun(file);
    assert.equal(c.output_dir, join(dir, 'out'));
    assert.deepEqual(c.model, { from: join(dir, 'base') });
    assert.equal(c.training.per_device_train_batch_size, 32);
    writeFileSync(
      file,
      'task: diffusion\noutput_dir: out\nmodel: {from: base}\ndata: {digits: d, main: [12]}\nextra: 1\n',
    );
    assert.throws(
      () => loadDiffusionRun(file),
      (e: unknown) =>
        e instanceof LorakitError &&
        e.code === 'LK_CONFIG_INVALID' &&
        /data\.main\.0/.test(e.message) &&
        /extra/.test(e.message),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('promptStates: set rows are one-hot tokens [n, 2, 12]; positional rows add the one-hot position [n, 2, 14]', () => {
  assert.equal(promptWidth('set'), 12);
  assert.equal(promptWidth('positional'), 14);
  const tokens = [5, 10, 11, 11];
  const set = promptStates(tokens, 'set');
  assert.deepEqual(set, oneHotStates(tokens, 12));
  const pos = promptStates(tokens, 'positional');
  assert.equal(pos.length, 4 * 14);
  const want = new Float32Array(4 * 14);
  for (const [row, token, position] of [
    [0, 5, 0],
    [1, 10, 1],
    [2, 11, 0],
    [3, 11, 1],
  ]) {
    want[row * 14 + token] = 1;
    want[row * 14 + 12 + position] = 1;
  }
  assert.deepEqual(pos, want);
  assert.throws(() => promptStates([1, 2, 3], 'positional'), /not rows of 2/);
  assert.throws(() => promptStates([1, 12], 'positional'), /outside 0\.\.11/);
});

test('positional batches: tokens in [left, right] order match the halves the digits were drawn in', async () => {
  const d = await digits();
  const set = digitCanvases(d, {
    main: [1, 2],
    other: [0, 3],
    emptyProbability: 0.4,
    count: 24,
    seed: 6,
    split: 'train',
  });
  const lr = leftRightTokens(set);
  const pools = digitSplit(d.labels, 'train');
  for (let k = 0; k < set.n; k++)
    for (const half of [0, 1]) {
      const cell = Array.from(
        { length: 64 },
        (_, p) => set.images[k * 128 + Math.floor(p / 8) * 16 + half * 8 + (p % 8)],
      );
      const token = lr[2 * k + half];
      if (token === CANVAS_TOKENS.empty)
        assert.ok(
          cell.every((v) => v === -1),
          `canvas ${k} half ${half} blank`,
        );
      else
        assert.ok(
          pools[token].some((r) => cell.every((v, p) => v === d.images[r * 64 + p] / 8 - 1)),
          `canvas ${k} half ${half}: not a ${token}`,
        );
    }
  const b = diffusionBatch(
    { schedule: noiseSchedule(), train: set, condDropout: 0, prompt: 'positional' },
    [0, 1, 2],
    new Rng(1),
  );
  assert.deepEqual(b.states, promptStates(lr.subarray(0, 6), 'positional'));
});

test('the prompt kind round-trips through a U-Net folder; a bad or mismatched record is refused naming the file', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lk-prompt-'));
  try {
    assert.equal(promptKindOf(dir, 12), 'set'); // folders without the record: one-hot set prompts
    await savePromptKind(dir, 'positional');
    assert.equal(promptKindOf(dir, 14), 'positional');
    assert.equal(JSON.parse(readFileSync(join(dir, PROMPT_FILE), 'utf8')).width, 14);
    assert.throws(
      () => promptKindOf(dir, 12),
      (e: unknown) => e instanceof LorakitError && /needs cross_attention_dim 14, the U-Net has 12/.test(e.message),
    );
    writeFileSync(join(dir, PROMPT_FILE), '{"kind": "ordered"}');
    assert.throws(
      () => promptKindOf(dir),
      (e: unknown) =>
        e instanceof LorakitError &&
        e.code === 'LK_CONFIG_INVALID' &&
        e.message.includes(PROMPT_FILE) &&
        /field "kind" must be one of set, positional, got "ordered"/.test(e.message),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a positional run saves its kind with the U-Net; a LoRA run on it takes that kind and refuses the other', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lk-diffpos-'));
  try {
    const file = join(dir, 'run.yaml');
    const unetConfig = JSON.stringify({
      ...tinyUNetConditionConfig({ cross_attention_dim: 14 }),
      sample_size: [8, 16],
    });
    writeFileSync(
      file,
      `task: diffusion\noutput_dir: base\nmodel: {config: ${unetConfig}}\n` +
        `data: {digits: ${DIGITS}, main: [1], other: [2], count: 8, prompt: positional}\n` +
        'training: {max_steps: 2, per_device_train_batch_size: 4}\n',
    );
    const quiet = { progress: 'none' as const, plot: false };
    const r = await runDiffusionTraining(loadDiffusionRun(file), quiet);
    assert.equal(promptKindOf(r.outDir, 14), 'positional');
    const lora = (prompt: string) =>
      `task: diffusion\noutput_dir: lora\nmodel: {from: base/unet}\n` +
      `data: {digits: ${DIGITS}, main: [5], count: 8${prompt}}\n` +
      'adapter: {peft_type: LORA, r: 2, target_modules: [to_k]}\ntraining: {max_steps: 1, per_device_train_batch_size: 4}\n';
    writeFileSync(file, lora(', prompt: set'));
    await assert.rejects(
      runDiffusionTraining(loadDiffusionRun(file), quiet),
      (e: unknown) =>
        e instanceof LorakitError && /data\.prompt is set, but .* was trained with positional/.test(e.message),
    );
    writeFileSync(file, lora(''));
    const l = await runDiffusionTraining(loadDiffusionRun(file), quiet);
    assert.match(l.outDir, /adapter$/);
    // an unknown kind is a schema error naming data.prompt
    writeFileSync(file, lora(', prompt: ordered'));
    assert.throws(() => loadDiffusionRun(file), /data\.prompt/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
