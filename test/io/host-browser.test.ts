// The browser side of the host seam, checked in Node against Node itself: posix-path.ts against node:path's posix
// functions, sha256.ts against node:crypto, the in-memory file system's errors and links against what lorakit's
// callers rely on, and a safetensors file written and read back through host.browser.ts. Also guards the seam:
// no library file outside the CLI, the HTTP server and the two seams imports a Node module or onnxruntime-node
// directly.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { posix } from 'node:path';
import { test } from 'node:test';
import * as host from '../../src/io/host.browser.ts';
import { basename, dirname, extname, join, relative, resolve } from '../../src/io/posix-path.ts';
import { Sha256 } from '../../src/io/sha256.ts';
import { MemoryFs, VfsError } from '../../src/io/vfs.ts';
import { rng } from '../helpers.ts';

test('posix-path gives node:path.posix results', () => {
  const paths = ['/a/b/c.txt', 'a/b/', '/a//b/../c', './x', '/', 'a', '', '../up', '/a/b/.hidden', 'f.tar.gz', '/x/'];
  for (const p of paths) {
    if (p !== '') {
      assert.equal(dirname(p), posix.dirname(p), `dirname(${p})`);
      assert.equal(basename(p), posix.basename(p), `basename(${p})`);
      assert.equal(extname(p), posix.extname(p), `extname(${p})`);
    }
    for (const q of paths) {
      assert.equal(join(p, q), posix.join(p, q), `join(${p}, ${q})`);
      // the browser's working folder is '/'
      assert.equal(resolve(p, q), posix.resolve('/', p, q), `resolve(${p}, ${q})`);
      assert.equal(relative(`/${p}`, `/${q}`), posix.relative(`/${p}`, `/${q}`), `relative(${p}, ${q})`);
    }
  }
  assert.equal(basename('/a/model.safetensors', '.safetensors'), 'model');
});

test('sha256 matches node:crypto for bytes, UTF-8 text and split updates', () => {
  const r = rng(3);
  for (const n of [0, 1, 55, 56, 63, 64, 65, 119, 128, 1000, 4099]) {
    const bytes = Uint8Array.from({ length: n }, () => Math.floor(r() * 256));
    const cut = Math.floor(n / 3);
    const ours = new Sha256().update(bytes.subarray(0, cut)).update(bytes.subarray(cut)).digest('hex');
    assert.equal(ours, createHash('sha256').update(bytes).digest('hex'), `${n} bytes`);
  }
  const text = 'héllo wörld ✓ \0 key';
  assert.equal(new Sha256().update(text).digest('hex'), createHash('sha256').update(text).digest('hex'));
});

test('the in-memory file system: Node error codes, rename of folders, hard links share bytes', () => {
  const fs = new MemoryFs();
  const code = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      assert.ok(e instanceof VfsError);
      assert.equal(typeof e.syscall, 'string');
      return e.code;
    }
    return 'no error';
  };
  assert.equal(
    code(() => fs.read('/nope')),
    'ENOENT',
  );
  assert.equal(
    code(() => fs.write('/no/dir/file', new Uint8Array(1))),
    'ENOENT',
  );
  fs.mkdir('/a/b', true);
  assert.equal(
    code(() => fs.mkdir('/a')),
    'EEXIST',
  );
  fs.write('/a/b/f', Uint8Array.of(1, 2, 3));
  assert.equal(
    code(() => fs.write('/a/b/f', new Uint8Array(0), true)),
    'EEXIST',
  );
  assert.equal(
    code(() => fs.read('/a/b')),
    'EISDIR',
  );
  assert.equal(
    code(() => fs.readdir('/a/b/f')),
    'ENOTDIR',
  );
  fs.link('/a/b/f', '/a/g');
  assert.equal(fs.stat('/a/g').ino, fs.stat('/a/b/f').ino);
  fs.write('/a/b/f', Uint8Array.of(9));
  assert.deepEqual([...fs.read('/a/g')], [9]);
  fs.mkdir('/c');
  fs.rename('/a/b', '/c/b');
  assert.deepEqual(fs.readdir('/c/b'), ['f']);
  assert.equal(fs.exists('/a/b/f'), false);
  fs.mkdir('/d');
  fs.write('/d/x', new Uint8Array(0));
  assert.equal(
    code(() => fs.rename('/c/b', '/d')),
    'ENOTEMPTY',
  );
  fs.rm('/c', { recursive: true });
  assert.deepEqual(fs.readdir('/'), ['a', 'd']);
  assert.deepEqual(fs.filesUnder('/'), ['a/g', 'd/x']);
});

test('a safetensors file written and read back through the browser host', async () => {
  await host.mkdir('/st', { recursive: true });
  const fh = await host.open('/st/t.bin', 'wx');
  await fh.write(Uint8Array.of(1, 2, 3, 4, 5), 1, 3);
  await fh.close();
  assert.deepEqual([...(await host.readFile('/st/t.bin'))], [2, 3, 4]);
  const r = await host.open('/st/t.bin');
  const buf = new Uint8Array(4);
  assert.equal((await r.read(buf, 1, 4, 1)).bytesRead, 2);
  assert.deepEqual([...buf], [0, 3, 4, 0]);
  await assert.rejects(host.open('/st/t.bin', 'wx'), { code: 'EEXIST' });
  await host.writeFile('/st/a.txt', 'x');
  await host.appendFile('/st/a.txt', 'y');
  assert.equal(await host.readFile('/st/a.txt', 'utf8'), 'xy');
  assert.equal(host.randomHex(6).length, 12);
});

test('library files reach Node and ONNX Runtime only through the seams', () => {
  const seams = new Set(['src/io/host.ts', 'src/runtime/ort.ts']);
  const bad: string[] = [];
  (function walk(dir: string) {
    for (const n of readdirSync(dir)) {
      const p = `${dir}/${n}`;
      if (statSync(p).isDirectory()) {
        // the CLI and the HTTP server (fastify) are Node shells around the library, not part of it
        if (p !== 'src/cli' && p !== 'src/server') walk(p);
      } else if (p.endsWith('.ts') && !seams.has(p)) {
        for (const m of readFileSync(p, 'utf8').matchAll(/^import (?!type ).*from '(node:[^']+|onnxruntime-node)';$/gm))
          if (m[1] !== 'node:worker_threads' && m[1] !== 'node:stream') bad.push(`${p}: ${m[1]}`);
      }
    }
  })('src');
  assert.deepEqual(bad, []);
});
