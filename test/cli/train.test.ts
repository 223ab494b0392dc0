// `lorakit train --config`: YAML runs on real Alpaca data and on a chat-format file complete on fixture models and
// write the adapter, checkpoints, metrics and the loss plot.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fakeHubRepo } from '../io/fake-hub.ts';

const root = new URL('../../', import.meta.url).pathname;
const shared = new URL('../../../shared/data/', import.meta.url).pathname;
const llama = join(root, 'test/fixtures/models/llama');

function run(yaml: string, dir: string, ...sets: string[]): string {
  return runWith({}, yaml, dir, ...sets);
}

function runWith(env: Record<string, string>, yaml: string, dir: string, ...sets: string[]): string {
  writeFileSync(join(dir, 'run.yaml'), yaml);
  const r = spawnSync(
    process.execPath,
    [join(root, 'bin/lorakit.mjs'), 'train', '--config', join(dir, 'run.yaml'), ...sets.flatMap((s) => ['--set', s])],
    { encoding: 'utf8', env: { ...process.env, LORAKIT_CACHE: join(dir, 'cache'), ...env } },
  );
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

function checkOutputs(out: string, runDir: string): void {
  for (const what of ['adapter:', 'checkpoint:', 'metrics:', 'plot:']) assert.match(out, new RegExp(what));
  assert.ok(existsSync(join(runDir, 'final', 'adapter_model.safetensors')));
  assert.ok(existsSync(join(runDir, 'final', 'adapter_config.json')));
  const metrics = readFileSync(join(runDir, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  assert.ok(metrics.length >= 4 && metrics.every((m) => Number.isFinite(m.loss)));
  assert.match(readFileSync(join(runDir, 'loss.svg'), 'utf8'), /^<svg[\s\S]*train[\s\S]*eval[\s\S]*<\/svg>$/);
}

test('a YAML run on the Alpaca data completes on the fixture Llama', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lk-train-'));
  const out = run(
    `model: ${root}test/fixtures/models/llama
output_dir: ${dir}/run
data:
  path: ${shared}alpaca/alpaca_5000.json
  format: alpaca
  seq_len: 128
  held_out: 16
adapter: {target_modules: [q_proj, v_proj], r: 4, lora_alpha: 8}
training: {max_steps: 4, per_device_train_batch_size: 2, learning_rate: 0.002, eval_steps: 2}
`,
    dir,
  );
  assert.match(out, /stopped: completed after 4 steps/);
  checkOutputs(out, join(dir, 'run'));
});

test(
  'a YAML run on a chat-format file (ChatML template, loss on assistant turns) completes on the fixture ' + 'Qwen2',
  () => {
    const dir = mkdtempSync(join(tmpdir(), 'lk-train-'));
    const convs = Array.from({ length: 24 }, (_, i) =>
      JSON.stringify({
        messages: [
          { role: 'system', content: 'You answer briefly.' },
          { role: 'user', content: `What is ${i} plus ${i}?` },
          { role: 'assistant', content: `It is ${2 * i}.` },
        ],
      }),
    );
    writeFileSync(join(dir, 'chat.jsonl'), `${convs.join('\n')}\n`);
    const out = run(
      `model: ${root}test/fixtures/models/qwen2
output_dir: run
data: {path: chat.jsonl, seq_len: 64, held_out: 4}
adapter: {target_modules: all-linear, r: 4, lora_alpha: 8, use_dora: true}
training: {max_steps: 4, per_device_train_batch_size: 2, learning_rate: 0.002, eval_steps: 2}
`,
      dir,
      'training.loraplus_lr_ratio=4',
    );
    checkOutputs(out, join(dir, 'run'));
    assert.equal(JSON.parse(readFileSync(join(dir, 'run', 'final', 'adapter_config.json'), 'utf8')).use_dora, true);
  },
);

test('model: <hub id> trains from the local Hugging Face cache (XDG_CACHE_HOME/huggingface/hub)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lk-train-'));
  fakeHubRepo(join(dir, 'xdg', 'huggingface', 'hub'), 'TinyOrg/tiny-llama', llama);
  writeFileSync(join(dir, 'text.txt'), readFileSync(join(root, 'test/fixtures/eval/shakespeare.txt'), 'utf8'));
  const out = runWith(
    { XDG_CACHE_HOME: join(dir, 'xdg'), HF_HOME: '', HF_HUB_CACHE: '' },
    `model: TinyOrg/tiny-llama
output_dir: run
data: {path: text.txt, seq_len: 32, held_out: 2}
adapter: {target_modules: [q_proj, v_proj], r: 2, lora_alpha: 4}
training: {max_steps: 2, per_device_train_batch_size: 2, learning_rate: 0.002, eval_steps: 2}
`,
    dir,
  );
  assert.match(out, /stopped: completed after 2 steps/);
  const config = JSON.parse(readFileSync(join(dir, 'run', 'final', 'adapter_config.json'), 'utf8'));
  assert.equal(config.base_model_name_or_path, 'TinyOrg/tiny-llama');
});

test('a config with an unknown key fails with one line naming it', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lk-train-'));
  writeFileSync(
    join(dir, 'run.yaml'),
    'model: m\noutput_dir: o\ndata: {path: d}\ntraining: {max_steps: 1, bach_size: 2}\n',
  );
  const r = spawnSync(process.execPath, [join(root, 'bin/lorakit.mjs'), 'train', '--config', join(dir, 'run.yaml')], {
    encoding: 'utf8',
  });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /unknown key training\.bach_size \[LK_CONFIG_INVALID\]/);
});

test('adapter: {from: <folder>} continues training a saved adapter; a conflicting setting is refused naming both', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lk-train-'));
  writeFileSync(join(dir, 'text.txt'), readFileSync(join(shared, 'tinyshakespeare/input.txt'), 'utf8').slice(0, 6000));
  const yaml = (adapter: string, out: string, lr = 0.01) => `model: ${llama}
output_dir: ${dir}/${out}
data: {path: ${dir}/text.txt, seq_len: 32}
adapter: ${adapter}
training: {max_steps: 3, per_device_train_batch_size: 2, learning_rate: ${lr}}
`;
  run(yaml('{target_modules: [q_proj, v_proj], r: 4, lora_alpha: 8, init_lora_weights: false}', 'first'), dir);
  // lr 0: the continued run must start from the saved values and keep them
  run(yaml(`{from: ${dir}/first/final}`, 'second', 1e-30), dir);
  const saved = readFileSync(join(dir, 'first/final/adapter_model.safetensors'));
  const again = readFileSync(join(dir, 'second/final/adapter_model.safetensors'));
  assert.ok(saved.equals(again), 'a continued run with a vanishing lr saves the adapter it started from');
  writeFileSync(join(dir, 'run.yaml'), yaml(`{from: ${dir}/first/final, r: 8}`, 'third'));
  const r = spawnSync(process.execPath, [join(root, 'bin/lorakit.mjs'), 'train', '--config', join(dir, 'run.yaml')], {
    encoding: 'utf8',
    env: { ...process.env, LORAKIT_CACHE: join(dir, 'cache') },
  });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /adapter\.r is 8 but .*first\/final has 4/);
});
