// `lorakit fl-client`: against a server that is not a flwr 1.42 SuperLink it stops with LK_PROTOCOL_MISMATCH and
// says so, after creating the node key it was given (and its public key, for `flwr supernode register`).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const root = new URL('../../', import.meta.url).pathname;

test('fl-client against an older Flower (404 on /v1/fleet) exits 1 with LK_PROTOCOL_MISMATCH', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lorakit-fl-cli-'));
  writeFileSync(join(dir, 'train.txt'), 'The quick brown fox jumps over the lazy dog. '.repeat(40));
  writeFileSync(
    join(dir, 'run.yaml'),
    [
      `model: ${join(root, 'models/demo-base')}`,
      `output_dir: ${join(dir, 'out')}`,
      'data:',
      `  path: ${join(dir, 'train.txt')}`,
      '  held_out: 0.2',
      '  seq_len: 64',
      '  cache_dir: false',
      'adapter: {peft_type: LORA, r: 2, target_modules: [q_proj]}',
      '',
    ].join('\n'),
  );
  const paths: string[] = [];
  const server = createServer((req, res) => {
    paths.push(req.url ?? '');
    res.writeHead(404, { 'content-type': 'application/json' }).end('{"detail":"Not Found"}');
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  try {
    const child = spawn(
      process.execPath,
      [
        join(root, 'bin/lorakit.mjs'),
        'fl-client',
        '--superlink',
        url,
        '--config',
        join(dir, 'run.yaml'),
        '--key',
        join(dir, 'node.pem'),
      ],
      { env: { ...process.env, LORAKIT_CACHE: join(dir, 'cache') } },
    );
    let stderr = '';
    child.stderr.on('data', (b: Buffer) => {
      stderr += b.toString();
    });
    const status = await new Promise<number | null>((ok) => child.on('exit', ok));
    assert.equal(status, 1, stderr);
    assert.match(stderr, /LK_PROTOCOL_MISMATCH/);
    assert.match(stderr, /flwr 1\.42\.0/);
    assert.deepEqual(paths, ['/v1/fleet/register-node']);
    assert.match(readFileSync(join(dir, 'node.pem'), 'utf8'), /^-----BEGIN PRIVATE KEY-----/);
    assert.ok(existsSync(join(dir, 'node.pem.pub')));
  } finally {
    await new Promise((ok) => server.close(ok));
  }
});
