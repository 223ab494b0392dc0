// `lorakit serve` as a child process: it prints where it listens, answers a completion on the demo base, drains on
// SIGTERM and exits 0; a GGUF file is refused with one line naming the flag.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';

test('lorakit serve listens, answers, and drains on SIGTERM', async () => {
  const child = spawn(process.execPath, ['bin/lorakit.mjs', 'serve', '--model', 'models/demo-base', '--port', '0'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no address after 60 s:\n${out}`)), 60_000);
    child.stdout.on('data', () => {
      const m = / on (http:\/\/127\.0\.0\.1:\d+) /.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
  });
  const r = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'models/demo-base', prompt: 'The', max_tokens: 3 }),
  });
  assert.equal(r.status, 200);
  assert.equal(((await r.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens, 3);
  const code = await new Promise<number | null>((resolve) => {
    child.once('exit', resolve);
    child.kill('SIGTERM');
  });
  assert.equal(code, 0, out);
  assert.match(out, /draining/);
});

test('lorakit serve refuses an unknown --quantize mode in one line, before loading the model', async () => {
  const r = await new Promise<{ code: number; stderr: string }>((done) => {
    execFile(
      process.execPath,
      ['bin/lorakit.mjs', 'serve', '--model', 'models/demo-base', '--quantize', 'fp8'],
      (err, _o, stderr) => done({ code: err ? Number(err.code) : 0, stderr }),
    );
  });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^lorakit: --quantize expects none, int8 or q4, got "fp8" \[LK_INVALID_ARGUMENT\]\n$/);
});

test('lorakit serve names a missing GGUF model in one line', async () => {
  const r = await new Promise<{ code: number; stderr: string }>((done) => {
    execFile(process.execPath, ['bin/lorakit.mjs', 'serve', '--model', 'no-such-model.gguf'], (err, _o, stderr) =>
      done({ code: err ? Number(err.code) : 0, stderr }),
    );
  });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^lorakit: .*no-such-model\.gguf.*\[LK_FILE_NOT_FOUND\]\n$/);
});
