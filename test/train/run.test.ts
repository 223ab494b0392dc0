// runTraining as a new user and a hostile tester meet it: every config value that can be checked against the
// paths, the model and the data is checked before anything is written (the README's seq_len 512 on the demo base
// used to fail inside ONNX Runtime and leave an empty metrics.jsonl), errors name the YAML key, and two runs on one
// output_dir never write it at once (two real processes; a lock left by a killed run is taken over).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadRunConfig, runTraining } from '../../src/train/index.ts';
import { shutdownRuntime } from '../../src/runtime/index.ts';

const root = new URL('../../', import.meta.url).pathname;
const LLAMA = join(root, 'test/fixtures/models/llama');
const tmp = mkdtempSync(join(tmpdir(), 'lorakit-run-'));
const text = join(tmp, 'text.txt');
writeFileSync(text, readFileSync(join(root, 'test/fixtures/eval/shakespeare.txt')));
after(async () => {
  rmSync(tmp, { recursive: true, force: true });
  await shutdownRuntime();
});

let n = 0;
type Fields = { model?: string; out?: string; data?: object; adapter?: object; training?: object };
/** A run config file (JSON is YAML): the fixture Llama on the Shakespeare text, with fields added or replaced. */
function config(f: Fields): string {
  const file = join(tmp, `run-${n++}.yaml`);
  const run = {
    model: f.model ?? LLAMA,
    output_dir: f.out ?? join(tmp, `out-${n}`),
    data: { path: text, seq_len: 32, ...f.data },
    adapter: { target_modules: ['q_proj', 'v_proj'], r: 2, ...f.adapter },
    training: { max_steps: 2, per_device_train_batch_size: 2, ...f.training },
  };
  writeFileSync(file, JSON.stringify(run));
  return file;
}

test('config values are checked against the model and the data before anything is written; errors name the key', async () => {
  const demo = join(root, 'models/demo-base');
  const bad = join(tmp, 'bad.jsonl'),
    chat = join(tmp, 'chat.jsonl');
  writeFileSync(bad, '{"text": "a line"}\n{"txt": 1}\n{"text": "another line"}\n');
  writeFileSync(chat, `${JSON.stringify({ messages: [{ role: 'user', content: 'hi' }] })}\n`);
  const file = join(tmp, 'a-file');
  writeFileSync(file, 'x');
  const cases: [Fields, string, RegExp][] = [
    // the README's example on the bundled base
    [
      { model: demo, data: { seq_len: 512 } },
      'LK_CONFIG_INVALID',
      /^run config: data\.seq_len 512 exceeds the model's 256 positions \(max_position_embeddings in its config\.json\); use at most 256$/,
    ],
    [
      { training: { per_device_train_batch_size: 100000 } },
      'LK_CONFIG_INVALID',
      /^run config: training\.per_device_train_batch_size 100000 is larger than the training data: .*text\.txt gives \d+ rows of 32 tokens; use at most \d+/,
    ],
    [
      { training: { eval_steps: 1 } },
      'LK_CONFIG_INVALID',
      /training\.eval_steps needs held-out examples .*; set data\.held_out/,
    ],
    [
      { data: { held_out: 4 }, training: { early_stopping_patience: 2 } },
      'LK_CONFIG_INVALID',
      /training\.early_stopping_patience needs training\.eval_steps/,
    ],
    [
      { adapter: { layers_to_transform: [0, 99] } },
      'LK_CONFIG_INVALID',
      /adapter\.layers_to_transform \[0,99\] names layer 99, but the model has 2 \(0 to 1\)/,
    ],
    [
      { model: join(root, 'test/fixtures/models/bert') },
      'LK_CONFIG_INVALID',
      /^run config: model .*bert is a BERT encoder; train fine-tunes causal LMs/,
    ],
    // library errors from the dataset loader come back in the YAML's words
    [
      { data: { path: bad, on_error: 'fail' } },
      'LK_FILE_INVALID',
      /bad\.jsonl:2: missing field "text" \(pass data\.on_error: 'skip' to skip malformed records\)$/,
    ],
    [
      { model: demo, data: { path: chat } },
      'LK_CONFIG_INVALID',
      /chat records need a chat template, .*; pass the data\.chat_template option$/,
    ],
    [
      { data: { held_out: 100000 } },
      'LK_INVALID_ARGUMENT',
      /option "data\.held_out" 100000 leaves no training example/,
    ],
    [{ out: file }, 'LK_FILE_NOT_FOUND', /output_dir .*a-file: .*a-file is a file, not a folder/],
  ];
  for (const [fields, code, message] of cases) {
    const c = loadRunConfig(config(fields));
    await assert.rejects(
      runTraining(c, { progress: 'none' }),
      (e: any) => e.code === code && message.test(e.message),
      JSON.stringify(fields),
    );
    if (c.output_dir !== file) assert.ok(!existsSync(c.output_dir), `${JSON.stringify(fields)} wrote nothing`);
  }
  const folder = join(tmp, 'a-folder');
  mkdirSync(folder);
  const c = loadRunConfig(config({}));
  await assert.rejects(runTraining({ ...c, data: { ...c.data, path: folder } }, { progress: 'none' }), (e: any) =>
    /^run config: data\.path .*a-folder is a folder; name the data file in it$/.test(e.message),
  );
  assert.ok(!existsSync(c.output_dir));
});

/** Starts `lorakit train --config file`; resolves with the exit status and stderr once it ends. */
function start(file: string) {
  const child = spawn(process.execPath, [join(root, 'bin/lorakit.mjs'), 'train', '--config', file], {
    env: { ...process.env, LORAKIT_CACHE: join(tmp, 'cache') },
  });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const done = new Promise<{ status: number | null; signal: string | null; stderr: string }>((ok) =>
    child.on('close', (status, signal) => ok({ status, signal, stderr })),
  );
  return { child, done };
}

test("two runs on one output_dir: the second is refused naming the first; a killed run's lock is taken over", async () => {
  const out = join(tmp, 'shared-run');
  const lockFile = join(out, '.lorakit.lock');
  const first = start(config({ out, training: { max_steps: 100000, save_steps: 100000 } }));
  for (let i = 0; i < 300 && !existsSync(lockFile); i++) await new Promise((r) => setTimeout(r, 100));
  assert.ok(existsSync(lockFile), 'the first run took the lock');
  const second = await start(config({ out })).done;
  assert.equal(second.status, 1, second.stderr);
  assert.match(
    second.stderr,
    new RegExp(
      `^lorakit: .*shared-run is in use by another lorakit process \\(a training run, pid ${first.child.pid} on `,
    ),
  );
  assert.match(second.stderr, /\[LK_LOCKED\]\n$/);
  first.child.kill('SIGKILL'); // dies holding the lock
  await first.done;
  const steps = () =>
    readFileSync(join(out, 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l).step);
  const written = steps();
  assert.deepEqual(
    written,
    written.map((_, i) => i + 1),
    'the first run alone wrote its metrics',
  );
  assert.ok(existsSync(lockFile), 'a lock left behind');
  const third = await start(config({ out })).done;
  assert.equal(third.status, 0, third.stderr);
  assert.deepEqual(steps(), [1, 2]);
  assert.ok(!existsSync(lockFile), 'released at the end');
});
