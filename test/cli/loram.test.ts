// `lorakit loram` run as a child process on the tiny Llama fixture (without the baseline run, to stay short): it
// prunes, trains on the pruned model, writes the recovered adapter with the full model's shapes and prints the kept
// structure and the losses; a missing --config fails with one line naming the flag.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SafetensorsFile } from '../../src/io/index.ts';

const tmp = await mkdtemp(join(tmpdir(), 'lorakit-loram-cli-'));
after(() => rm(tmp, { recursive: true, force: true }));

function lorakit(...args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(process.execPath, ['bin/lorakit.mjs', 'loram', ...args], { encoding: 'utf8' }, (err, stdout, stderr) => {
      done({ status: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

test('loram prunes, trains small, writes the recovered adapter and prints the losses', async () => {
  const text = await readFile('test/fixtures/eval/shakespeare.txt', 'utf8');
  await writeFile(join(tmp, 'train.txt'), text);
  await writeFile(join(tmp, 'eval.txt'), text.slice(0, 1500));
  const yaml = [
    `model: ${join(process.cwd(), 'test/fixtures/models/llama')}`,
    `output_dir: ${join(tmp, 'run')}`,
    `data: {path: ${join(tmp, 'train.txt')}, seq_len: 32, cache_dir: false}`,
    'adapter: {target_modules: [q_proj, down_proj], r: 2, lora_alpha: 4}',
    'training: {max_steps: 2, per_device_train_batch_size: 2, learning_rate: 0.01}',
  ].join('\n');
  await writeFile(join(tmp, 'run.yaml'), yaml);
  const r = await lorakit(
    '--config',
    join(tmp, 'run.yaml'),
    '--ratio',
    '0.25',
    '--calibration-batches',
    '1',
    '--no-baseline',
    '--eval-data',
    join(tmp, 'eval.txt'),
  );
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^kept per layer: 2\/2 of 2 KV-head groups, 96\/96 of 128 MLP channels$/m);
  assert.match(r.stdout, /^full base \+ LoRAM \(recovered\): +loss \d+\.\d{4}$/m);
  assert.doesNotMatch(r.stdout, /^full base \+ LoRA:/m);
  const st = await SafetensorsFile.open(join(tmp, 'run', 'recovered', 'adapter_model.safetensors'));
  assert.deepEqual(st.info('base_model.model.model.layers.1.mlp.down_proj.lora_A.weight').shape, [2, 128]);
  await st.close();
});

test('loram without --config fails with one line naming the flag', async () => {
  const r = await lorakit('--ratio', '0.5');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /^lorakit: --config <file> is required: the run config \[LK_INVALID_ARGUMENT\]\n$/);
});

test('loram --adapter recovers an adapter trained on a pruned folder for the full model', async () => {
  const fixture = 'test/fixtures/loram/llama_uniform';
  const { makeCase } = await import('../../scripts/make-pruned-fixtures.ts');
  const pruned = await makeCase('llama_uniform', join(tmp, 'cases'));
  const out = join(tmp, 'recovered');
  const r = await lorakit(
    '--adapter',
    join(fixture, 'pruned-adapter'),
    '--pruned-model',
    pruned,
    '--model',
    'test/fixtures/models/llama',
    '--out',
    out,
  );
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^recovered adapter \(for test\/fixtures\/models\/llama\): /m);
  const [mine, theirs] = [
    await SafetensorsFile.open(join(out, 'adapter_model.safetensors')),
    await SafetensorsFile.open(join(fixture, 'recovered', 'adapter_model.safetensors')),
  ];
  for (const k of theirs.names()) assert.deepEqual(await mine.readAs(k, 'f32'), await theirs.readAs(k, 'f32'), k);
  await mine.close();
  await theirs.close();
  const missing = await lorakit('--adapter', join(fixture, 'pruned-adapter'), '--model', 'x', '--out', out);
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /^lorakit: --pruned-model <dir> is required: the pruned model the adapter was trained/);
});
