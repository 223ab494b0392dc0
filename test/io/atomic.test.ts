// writeFileAtomic: complete replacement, old file intact after a failure, no temp files left behind; fsyncs of the
// file and its folder unless `durable: false`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, open, readFile, readdir, rm, stat, writeFile, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeFileAtomic } from '../../src/io/atomic.ts';
import { LorakitError } from '../../src/errors.ts';

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'lorakit-atomic-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('writes bytes, strings and chunk sequences', async () => {
  await withDir(async (dir) => {
    const p = join(dir, 'a.bin');
    await writeFileAtomic(p, new Uint8Array([1, 2, 3]));
    assert.deepEqual([...(await readFile(p))], [1, 2, 3]);
    await writeFileAtomic(p, 'héllo');
    assert.equal(await readFile(p, 'utf8'), 'héllo');
    await writeFileAtomic(p, [new Uint8Array([1]), new Uint8Array(0), new Uint8Array([2, 3])]);
    assert.deepEqual([...(await readFile(p))], [1, 2, 3]);
    await writeFileAtomic(
      p,
      (async function* () {
        yield new Uint8Array([9]);
        yield new Uint8Array([8]);
      })(),
    );
    assert.deepEqual([...(await readFile(p))], [9, 8]);
    assert.deepEqual(await readdir(dir), ['a.bin']);
  });
});

test('fsyncs the file and its folder by default, neither with durable: false, and writes the same bytes', async () => {
  await withDir(async (dir) => {
    // count fsyncs at FileHandle.sync, the call writeFileAtomic and syncDir make (one prototype for every handle)
    const probe = await open(join(dir, 'probe'), 'w');
    const proto = Object.getPrototypeOf(probe) as { sync: () => Promise<void> };
    await probe.close();
    await rm(join(dir, 'probe'));
    const sync = proto.sync;
    let syncs = 0;
    proto.sync = function (this: unknown) {
      syncs++;
      return sync.call(this);
    };
    try {
      const data = new Uint8Array(1 << 16).map((_, k) => k * 7);
      await writeFileAtomic(join(dir, 'durable.bin'), data);
      assert.equal(syncs, 2, 'file and folder fsynced');
      syncs = 0;
      await writeFileAtomic(join(dir, 'cache.bin'), [data.subarray(0, 100), data.subarray(100)], { durable: false });
      assert.equal(syncs, 0, 'no fsync');
      assert.ok((await readFile(join(dir, 'cache.bin'))).equals(await readFile(join(dir, 'durable.bin'))));
      assert.deepEqual((await readdir(dir)).sort(), ['cache.bin', 'durable.bin'], 'no temp file left');
    } finally {
      proto.sync = sync;
    }
  });
});

test('a chunk source failing mid-write leaves the old file intact and no temp file', async () => {
  await withDir(async (dir) => {
    const p = join(dir, 'model.safetensors');
    await writeFile(p, 'old content');
    async function* failing(): AsyncGenerator<Uint8Array> {
      yield new Uint8Array(1 << 20).fill(7); // a real partial write happens before the failure
      throw new Error('disk on fire');
    }
    await assert.rejects(writeFileAtomic(p, failing()), /disk on fire/);
    assert.equal(await readFile(p, 'utf8'), 'old content');
    assert.deepEqual(await readdir(dir), ['model.safetensors']);
  });
});

test('a full disk mid-write is LK_DISK_FULL naming the file, with the old file intact (ENOSPC injected)', async () => {
  // The system error a write(2) raises on a full disk, injected at the write seam every lorakit writer passes (the
  // real thing, a small tmpfs, is exercised end to end in test/cli/main.test.ts where mounts are allowed).
  await withDir(async (dir) => {
    const p = join(dir, 'metrics.jsonl');
    await writeFile(p, 'old content');
    async function* filling(): AsyncGenerator<Uint8Array> {
      yield new Uint8Array(1 << 16).fill(7);
      throw Object.assign(new Error('ENOSPC: no space left on device, write'), {
        code: 'ENOSPC',
        errno: -28,
        syscall: 'write',
      });
    }
    await assert.rejects(
      writeFileAtomic(p, filling()),
      (e: unknown) =>
        e instanceof LorakitError &&
        e.code === 'LK_DISK_FULL' &&
        e.message ===
          `cannot write ${p}: no space left on the device (ENOSPC); free some space or choose a folder on ` +
            'another disk' &&
        e.details.errno === 'ENOSPC',
    );
    assert.equal(await readFile(p, 'utf8'), 'old content');
    assert.deepEqual(await readdir(dir), ['metrics.jsonl']);
  });
});

test('a bad chunk type fails with LK_INVALID_ARGUMENT and cleans up', async () => {
  await withDir(async (dir) => {
    const p = join(dir, 'x.json');
    await assert.rejects(
      writeFileAtomic(p, [new Uint8Array([1]), 'nope' as unknown as Uint8Array]),
      (e: unknown) => e instanceof LorakitError && e.code === 'LK_INVALID_ARGUMENT' && e.message.includes('x.json'),
    );
    assert.deepEqual(await readdir(dir), []);
  });
});

test('a missing folder gives LK_FILE_NOT_FOUND naming it', async () => {
  await withDir(async (dir) => {
    const missing = join(dir, 'nope');
    await assert.rejects(
      writeFileAtomic(join(missing, 'f.txt'), 'x'),
      (e: unknown) => e instanceof LorakitError && e.code === 'LK_FILE_NOT_FOUND' && e.message.includes(missing),
    );
  });
});

test('replacing keeps the old file permissions; a new file takes the given mode', async () => {
  await withDir(async (dir) => {
    const p = join(dir, 'run.sh');
    await writeFile(p, 'old');
    await chmod(p, 0o640);
    await writeFileAtomic(p, 'new');
    assert.equal((await stat(p)).mode & 0o777, 0o640);
    const q = join(dir, 'private');
    await writeFileAtomic(q, 'secret', { mode: 0o600 });
    assert.equal((await stat(q)).mode & 0o777, 0o600);
  });
});

test('concurrent writers to one path each leave a complete file', async () => {
  await withDir(async (dir) => {
    const p = join(dir, 'c.bin');
    const payloads = Array.from({ length: 8 }, (_, i) => new Uint8Array(200_000).fill(i));
    await Promise.all(payloads.map((d) => writeFileAtomic(p, d)));
    const got = await readFile(p);
    assert.equal(got.length, 200_000);
    assert.ok(
      got.every((v) => v === got[0]),
      "the file is one writer's content, not a mix",
    );
    assert.deepEqual(await readdir(dir), ['c.bin']);
  });
});
