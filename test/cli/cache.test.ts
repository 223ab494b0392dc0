// `lorakit cache info|clear` run as a child process on a cache root holding a compiled session and a dataset entry:
// the report counts them, clear empties both caches, and info never loads ONNX Runtime.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Graph } from '../../src/graph/index.ts';
import { Runtime } from '../../src/runtime/index.ts';

test('cache info counts sessions and datasets under LORAKIT_CACHE without loading ORT; clear empties them', async () => {
  const root = mkdtempSync(join(tmpdir(), 'lk-cache-cli-'));
  // TMPDIR too: the old session folder of earlier versions is <temp>/lorakit-cache, which clear deletes.
  const temp = mkdtempSync(join(tmpdir(), 'lk-cache-tmp-'));
  mkdirSync(join(temp, 'lorakit-cache', '0123abcd'), { recursive: true });
  const env = { ...process.env, LORAKIT_CACHE: root, TMPDIR: temp };
  // One compiled model with a file weight (an entry), and one dataset entry.
  const weights = join(mkdtempSync(join(tmpdir(), 'lk-cache-model-')), 'w.bin');
  writeFileSync(weights, new Uint8Array(new Float32Array([1, 2, 3, 4]).buffer));
  const g = new Graph('cli-cache');
  const x = g.input('x', 'f32', [1, 2]);
  g.output('y', x.matmul(g.initializer('w', 'f32', [2, 2], { kind: 'file', path: weights, offset: 0, length: 16 })));
  const rt = new Runtime();
  await rt.compile(g, { cacheDir: join(root, 'sessions') });
  await rt.shutdown();
  mkdirSync(join(root, 'datasets'));
  writeFileSync(join(root, 'datasets', 'train.0123456789abcdef01234567.lkds'), new Uint8Array(100));

  const script = `
    import { createRequire } from 'node:module';
    const { main } = await import('./src/cli/main.ts');
    await main(['cache', 'info', '--json']);
    const loaded = Object.keys(createRequire(import.meta.url).cache).filter((k) => k.includes('onnxruntime'));
    console.error('ORT_MODULES=' + loaded.length);`;
  const info = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    encoding: 'utf8',
    env,
  });
  assert.equal(info.status, 0, info.stderr);
  assert.match(info.stderr, /ORT_MODULES=0/);
  const r = JSON.parse(info.stdout);
  assert.equal(r.root, root);
  assert.deepEqual([r.sessions.dir, r.sessions.entries, r.sessions.weightFiles], [join(root, 'sessions'), 1, 1]);
  assert.ok(r.sessions.ownBytes > 0 && r.sessions.bytes === r.sessions.ownBytes + 16); // the weight link is shared
  assert.deepEqual(r.datasets, { dir: join(root, 'datasets'), entries: 1, bytes: 100 });
  assert.deepEqual(r.legacy, { dir: join(temp, 'lorakit-cache'), entries: 1 });

  const lorakit = (...args: string[]) =>
    spawnSync(process.execPath, ['bin/lorakit.mjs', 'cache', ...args], { encoding: 'utf8', env });
  const text = lorakit('info');
  assert.equal(text.status, 0, text.stderr);
  assert.match(text.stdout, new RegExp(`^lorakit cache root: ${root}\\n  sessions  1 entry, 1 weight file, `));
  assert.match(text.stdout, /\n {2}datasets {2}1 entry, 100 B {2}\(/);
  assert.match(
    text.stdout,
    /\n {2}old sessions of earlier lorakit versions: 1 entry in .*lorakit-cache; `lorakit cache clear`/,
  );
  const cleared = lorakit('clear');
  assert.equal(cleared.status, 0, cleared.stderr);
  assert.match(cleared.stdout, /^cleared lorakit cache root: /);
  const after = JSON.parse(lorakit('info', '--json').stdout);
  assert.deepEqual([after.sessions.entries, after.sessions.weightFiles, after.datasets.entries], [0, 0, 0]);
  assert.equal(after.legacy, null);
  const bad = lorakit('frob');
  assert.equal(bad.status, 1);
  assert.equal(bad.stderr, 'lorakit: cache: unknown action "frob"; expected info or clear [LK_INVALID_ARGUMENT]\n');
});
