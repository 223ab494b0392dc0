// LoRA on a fixture Llama through the whole stack: data (real text) → PeftModel → Trainer → PEFT folder.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel } from '../../src/models/index.ts';
import { PeftModel, adaptable, loadAdapter } from '../../src/peft/index.ts';
import { HfTokenizer } from '../../src/io/index.ts';
import { loadDataset } from '../../src/train/data/index.ts';
import { causalLmTask, train } from '../../src/train/index.ts';
import { needsShared } from '../helpers.ts';

const root = new URL('../../', import.meta.url).pathname;
const shared = new URL('../../../shared/data/', import.meta.url).pathname;

test('LoRA training lowers the train and held-out loss of a fixture Llama on Tiny Shakespeare, and saves a loadable ' +
  'adapter', { skip: needsShared('tinyshakespeare/input.txt') }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lk-causal-'));
  const text = readFileSync(join(shared, 'tinyshakespeare/input.txt'), 'utf8').slice(0, 12000);
  writeFileSync(join(dir, 'shakespeare.txt'), text);
  const modelDir = join(root, 'test/fixtures/models/llama');
  const model = await loadModel(modelDir);
  const tokenizer = await HfTokenizer.fromDir(modelDir);
  const data = await loadDataset(join(dir, 'shakespeare.txt'), {
    tokenizer,
    seqLen: 32,
    heldOut: 0.2,
    cacheDir: false,
  });
  const peft = new PeftModel(adaptable(model));
  await peft.addAdapter('default', {
    target_modules: ['q_proj', 'v_proj', 'down_proj'],
    r: 8,
    lora_alpha: 16,
    lora_dropout: 0.05,
  });
  const task = causalLmTask({
    model,
    peft,
    adapter: 'default',
    train: data.train,
    eval: data.eval,
    batchSize: 4,
    baseModelName: modelDir,
  });
  const before = (await task.evaluate!(peft.trainableValues('default'))).loss;
  const result = await train(task, {
    outputDir: join(dir, 'run'),
    steps: 30,
    lr: 5e-3,
    evalEvery: 30,
    progress: 'none',
    plot: false,
    warmupSteps: 3,
  });
  const after = result.bestEvalLoss!;
  const losses = result.history.map((h) => h.loss);
  assert.ok(
    losses.slice(-5).reduce((a, b) => a + b) / 5 < losses.slice(0, 5).reduce((a, b) => a + b) / 5,
    `train loss ${losses[0]} -> ${losses.at(-1)}`,
  );
  assert.ok(after < before - 0.05, `held-out loss ${before} -> ${after}`);
  const adapterDir = join(dir, 'run', 'final');
  assert.ok(existsSync(join(adapterDir, 'adapter_model.safetensors')), 'the trained adapter is saved in PEFT format');
  const again = new PeftModel(adaptable(model));
  await loadAdapter(again, adapterDir);
  const reloaded = await causalLmTask({
    model,
    peft: again,
    adapter: 'default',
    train: data.train,
    eval: data.eval,
    batchSize: 4,
  }).evaluate!(again.trainableValues('default'));
  assert.ok(
    Math.abs(reloaded.loss - after) < 1e-4,
    `reloaded adapter gives held-out loss ${reloaded.loss}, trained run ${after}`,
  );
  await model.close();
});

test('full fine-tuning baseline: every weight trains, and the result is a model folder lorakit loads', {
  skip: needsShared('tinyshakespeare/input.txt'),
}, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lk-full-'));
  writeFileSync(join(dir, 't.txt'), readFileSync(join(shared, 'tinyshakespeare/input.txt'), 'utf8').slice(0, 6000));
  const modelDir = join(root, 'test/fixtures/models/smollm');
  const model = await loadModel(modelDir);
  const tokenizer = await HfTokenizer.fromDir(modelDir);
  const data = await loadDataset(join(dir, 't.txt'), { tokenizer, seqLen: 32, heldOut: 0.2, cacheDir: false });
  const peft = new PeftModel(adaptable(model));
  const task = causalLmTask({
    model,
    peft,
    adapter: 'none',
    full: true,
    train: data.train,
    eval: data.eval,
    batchSize: 4,
  });
  const built = task.build();
  assert.equal(built.groups.flatMap((g) => g.params).length, model.parameters().length);
  const result = await train(task, {
    outputDir: join(dir, 'run'),
    steps: 12,
    lr: 3e-3,
    evalEvery: 12,
    progress: 'none',
    plot: false,
  });
  const before = (await task.evaluate!(new Map(Object.entries(await task.initialParams(null as never))))).loss;
  assert.ok(result.bestEvalLoss! < before - 0.05, `held-out ${before} -> ${result.bestEvalLoss}`);
  const tuned = await loadModel(join(dir, 'run', 'final'));
  assert.equal(tuned.paramCount, model.paramCount);
  const w = await tuned.read('model.layers.0.self_attn.q_proj.weight');
  const w0 = await model.read('model.layers.0.self_attn.q_proj.weight');
  assert.ok(
    w.some((v, i) => v !== w0[i]),
    'the saved weights are the trained ones',
  );
  await tuned.close();
  await model.close();
});
