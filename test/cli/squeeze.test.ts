// `lorakit squeeze` run as a child process: it writes the folder squeezeAdapter writes (the committed interop fixture,
// byte for byte), taking the base model from the adapter's base_model_name_or_path, and prints each layer's rank and
// kept energy; a missing --rank fails with one line naming the flag.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const tmp = await mkdtemp(join(tmpdir(), 'lorakit-squeeze-cli-'));
after(() => rm(tmp, { recursive: true, force: true }));

function lorakit(...args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(process.execPath, ['bin/lorakit.mjs', 'squeeze', ...args], { encoding: 'utf8' }, (err, stdout, stderr) => {
      done({ status: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

test('squeeze writes the rank-2 LoRA of a PEFT adapter and reports each layer', async () => {
  const out = join(tmp, 'r2');
  const r = await lorakit('--adapter', 'test/fixtures/peft/llama_lora_patterns', '--rank', '2', '--out', out);
  assert.equal(r.status, 0, r.stderr);
  assert.match(
    r.stdout,
    /^model\.layers\.0\.self_attn\.q_proj: rank 4 -> 2, \d+\.\d\d % of the energy kept \(factors\)$/m,
  );
  assert.match(r.stdout, /squeezed test\/fixtures\/peft\/llama_lora_patterns to r 2, lora_alpha 16: 14,208 -> 4,096 /);
  const fixture = 'test/fixtures/squeeze/llama_patterns_r2';
  for (const f of ['adapter_config.json', 'adapter_model.safetensors'])
    assert.ok((await readFile(join(out, f))).equals(await readFile(join(fixture, f))), f);
});

test('squeeze without --rank fails with one line naming the flag', async () => {
  const r = await lorakit('--adapter', 'test/fixtures/peft/llama_lora_patterns', '--out', join(tmp, 'x'));
  assert.equal(r.status, 1);
  assert.equal(r.stderr, 'lorakit: --rank <r> is required: the rank to keep [LK_INVALID_ARGUMENT]\n');
});
