// `lorakit train --config`: YAML runs on real Alpaca data and on a chat-format file complete on fixture models and
// write the adapter, checkpoints, metrics and the loss plot.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { fakeHubRepo } from '../io/fake-hub.ts';
import { needsShared } from '../helpers.ts';

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

test('a YAML run on the Alpaca data completes on the fixture Llama', {
  skip: needsShared('alpaca/alpaca_5000.json'),
}, () => {
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

test('adapter: {from: <folder>} continues training a saved adapter; a conflicting setting is refused naming both', {
  skip: needsShared('tinyshakespeare/input.txt'),
}, () => {
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

/** Runs `lorakit train` with stdout and stderr into one file (their order kept); returns the status and the text. */
function runMerged(dir: string, yaml: string, ...args: string[]): { status: number | null; out: string } {
  writeFileSync(join(dir, 'run.yaml'), yaml);
  const log = join(dir, `out-${Math.random().toString(16).slice(2)}.log`);
  const fd = openSync(log, 'w');
  try {
    const r = spawnSync(
      process.execPath,
      [join(root, 'bin/lorakit.mjs'), 'train', '--config', join(dir, 'run.yaml'), ...args],
      {
        stdio: ['ignore', fd, fd],
        env: { ...process.env, LORAKIT_CACHE: join(dir, 'cache') },
      },
    );
    return { status: r.status, out: readFileSync(log, 'utf8') };
  } finally {
    closeSync(fd);
  }
}

test('data warnings come once each, with counts, before the first step; logging_steps sets the progress lines', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lk-train-'));
  const lines = [
    ...Array.from({ length: 12 }, (_, i) => JSON.stringify({ prompt: `Q${i}?`, completion: ` A${i}.` })),
    ...Array.from({ length: 2 }, () => JSON.stringify({ prompt: 'Say:', completion: ' word'.repeat(40) })),
    JSON.stringify({ prompt: 'word '.repeat(40), completion: ' x' }),
    '{"prompt": "no completion"}',
  ];
  writeFileSync(join(dir, 'pairs.jsonl'), `${lines.join('\n')}\n`);
  const { status, out } = runMerged(
    dir,
    `model: ${llama}
output_dir: run
data: {path: pairs.jsonl, seq_len: 16}
adapter: {target_modules: [q_proj], r: 2, lora_alpha: 4}
training: {max_steps: 4, per_device_train_batch_size: 2, learning_rate: 0.002, logging_steps: 2}
`,
  );
  assert.equal(status, 0, out);
  const warnings = out.split('\n').filter((l) => l.startsWith('warning: '));
  assert.equal(warnings.length, 3, out);
  assert.match(warnings[0], /skipped 1 malformed record\(s\)/);
  assert.match(warnings[1], /3 of 15 examples were longer than seqLen 16 and were truncated/);
  assert.match(warnings[2], /1 row\(s\) had no token to learn/);
  const firstStep = out.indexOf('\nstep ');
  assert.ok(firstStep > out.lastIndexOf('warning: '), `the warnings precede training:\n${out}`);
  const steps = [...out.matchAll(/^step (\d+)\/4 /gm)].map((m) => Number(m[1]));
  assert.deepEqual(steps, [2, 4], 'a progress line every logging_steps steps');
});

test('resume says where it continues; a changed learning rate is refused, or warned about with resume_override', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lk-train-'));
  writeFileSync(join(dir, 'text.txt'), readFileSync(join(root, 'test/fixtures/eval/shakespeare.txt'), 'utf8'));
  const yaml = (steps: number, lr: number, resume: boolean) => `model: ${llama}
output_dir: run
data: {path: text.txt, seq_len: 32}
adapter: {target_modules: [q_proj], r: 2, lora_alpha: 4}
training: {max_steps: ${steps}, per_device_train_batch_size: 2, learning_rate: ${lr}, resume: ${resume}}
`;
  assert.equal(runMerged(dir, yaml(2, 0.002, false)).status, 0);
  const refused = runMerged(dir, yaml(3, 0.004, true));
  assert.equal(refused.status, 1);
  assert.match(
    refused.out,
    /cannot resume exactly from .*checkpoint-2: learning_rate \(lr\): the checkpoint has 0\.002, this run 0\.004.*training\.resume_override: true\) \[LK_INVALID_ARGUMENT\]/,
  );
  const forced = runMerged(dir, yaml(3, 0.004, true), '--set', 'training.resume_override=true');
  assert.equal(forced.status, 0, forced.out);
  assert.match(forced.out, /warning: resuming with a changed setting \(resume_override\): learning_rate/);
  assert.match(forced.out, new RegExp(`resumed from ${join(dir, 'run', 'checkpoint-2')} \\(step 2 of 3\\)`));
  assert.match(forced.out, /stopped: completed after 3 steps/);
});

test("validation_file: the eval loss at the last step is `lorakit eval`'s loss of that file with the final adapter", async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lk-train-'));
  const text = readFileSync(join(root, 'test/fixtures/eval/shakespeare.txt'), 'utf8');
  writeFileSync(join(dir, 'train.txt'), text);
  writeFileSync(join(dir, 'val.txt'), text.split('').reverse().join('').slice(0, 400));
  const { status, out } = runMerged(
    dir,
    `model: ${llama}
output_dir: run
data: {path: train.txt, seq_len: 32, validation_file: val.txt}
adapter: {target_modules: [q_proj, v_proj], r: 2, lora_alpha: 4, init_lora_weights: false}
training: {max_steps: 3, per_device_train_batch_size: 2, learning_rate: 0.01, eval_steps: 3}
`,
  );
  assert.equal(status, 0, out);
  const metrics = readFileSync(join(dir, 'run', 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  const evalLoss = metrics[2].eval_loss;
  const { loadModel } = await import('../../src/models/index.ts');
  const { HfTokenizer } = await import('../../src/io/index.ts');
  const { PeftModel, adaptable, loadAdapter } = await import('../../src/peft/index.ts');
  const { evaluateText } = await import('../../src/train/text-eval.ts');
  const model = await loadModel(llama);
  try {
    const peft = new PeftModel(adaptable(model));
    await loadAdapter(peft, join(dir, 'run', 'final'));
    const tokenizer = await HfTokenizer.fromDir(llama);
    const ref = await evaluateText(model, tokenizer, {
      data: join(dir, 'val.txt'),
      seqLen: 32,
      adapter: peft.generationAdapter(),
    });
    assert.ok(Math.abs(evalLoss - ref.loss) < 1e-5, `eval_loss ${evalLoss}, lorakit eval ${ref.loss}`);
  } finally {
    await model.close();
  }
});

test('--print-config prints the resolved config (defaults filled) without loading the model; --help points at docs/config.md', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lk-train-'));
  writeFileSync(join(dir, 'run.yaml'), 'model: ./nowhere\noutput_dir: out\ndata: {path: d.jsonl}\nadapter: {r: 4}\n');
  const cli = (...args: string[]) =>
    spawnSync(process.execPath, [join(root, 'bin/lorakit.mjs'), 'train', ...args], { encoding: 'utf8' });
  const r = cli('--config', join(dir, 'run.yaml'), '--print-config', '--set', 'training.seed=7');
  assert.equal(r.status, 0, r.stderr);
  const printed = parseYaml(r.stdout);
  assert.equal(printed.model, join(dir, 'nowhere'));
  assert.equal(printed.data.path, join(dir, 'd.jsonl'));
  assert.equal(printed.data.seq_len, 256);
  assert.deepEqual(
    [printed.training.learning_rate, printed.training.num_train_epochs, printed.training.seed],
    [5e-5, 3, 7],
  );
  assert.deepEqual([printed.adapter.r, printed.adapter.lora_alpha, printed.adapter.target_modules], [4, 8, null]);
  assert.ok(!existsSync(join(dir, 'out')), 'nothing was run');
  const help = cli('--help');
  assert.match(help.stdout, /docs\/config\.md \((.*)\)/);
  const path = /docs\/config\.md \((.*)\)/.exec(help.stdout)![1];
  assert.match(readFileSync(path, 'utf8'), /^# Run config reference/);
  assert.match(help.stdout, /--print-config/);
});
