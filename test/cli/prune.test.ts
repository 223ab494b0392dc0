// `lorakit prune` run as a child process on the tiny Llama fixture: it trains with LoRAPrune, writes the pruned folder
// (which lorakit loads with the sliced sizes) and prints the kept structure, sizes and the three losses; a missing
// --out fails with one line naming the flag.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const tmp = await mkdtemp(join(tmpdir(), 'lorakit-prune-cli-'));
after(() => rm(tmp, { recursive: true, force: true }));

function lorakit(...args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(process.execPath, ['bin/lorakit.mjs', 'prune', ...args], { encoding: 'utf8' }, (err, stdout, stderr) => {
      done({ status: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

test('prune writes the pruned folder and reports sizes and losses', async () => {
  const text = await readFile('test/fixtures/eval/shakespeare.txt', 'utf8');
  await writeFile(join(tmp, 'train.txt'), text);
  await writeFile(join(tmp, 'eval.txt'), text.slice(0, 1500));
  const yaml = [
    `model: ${join(process.cwd(), 'test/fixtures/models/llama')}`,
    'output_dir: run',
    'data: {path: train.txt, seq_len: 32, cache_dir: false}',
    'adapter: {target_modules: all-linear, r: 4, lora_alpha: 8}',
    'training: {max_steps: 4, per_device_train_batch_size: 2, learning_rate: 0.01}',
  ].join('\n');
  await writeFile(join(tmp, 'run.yaml'), yaml);
  const out = join(tmp, 'pruned');
  const r = await lorakit('--config', join(tmp, 'run.yaml'), '--out', out, '--eval-data', join(tmp, 'eval.txt'));
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^kept per layer: 1\/1 of 2 KV-head groups, 64\/64 of 128 MLP channels$/m);
  assert.match(r.stdout, /^size: 0\.47 MiB -> 0\.\d\d MiB; parameters 123,200 -> 86,336$/m);
  assert.match(r.stdout, /^pruned \(LoRA merged\): +loss \d+\.\d{4} +\d+ tokens\/s$/m);
  const config = JSON.parse(await readFile(join(out, 'config.json'), 'utf8'));
  assert.deepEqual([config.num_key_value_heads, config.num_attention_heads, config.intermediate_size], [1, 2, 64]);
});

test('prune without --out fails with one line naming the flag', async () => {
  const r = await lorakit('--config', 'run.yaml');
  assert.equal(r.status, 1);
  assert.match(
    r.stderr,
    /^lorakit: --out <dir> is required: the folder to write the pruned model to \[LK_INVALID_ARGUMENT\]\n$/,
  );
});
