// lockFolder: one holder at a time, the refusal names the holder, a lock whose process is gone is taken over, one
// from another host or one lorakit cannot read is left alone with the file to delete named, and release removes
// only the holder's own lock. (Two real training processes on one folder: test/train/run.test.ts.)
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { LOCK_FILE, lockFolder } from '../../src/io/lock.ts';

const tmp = await mkdtemp(join(tmpdir(), 'lorakit-lock-'));
after(() => rm(tmp, { recursive: true, force: true }));

const isLocked = (re: RegExp) => (e: any) => e.code === 'LK_LOCKED' && re.test(e.message);

/** The pid of a process that has exited (so no process has it, until the system reuses it). */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(r.stdout);
}

test('a second lock on a folder is refused naming the holder; after release it is free again', async () => {
  const dir = join(tmp, 'a', 'b'); // created with its parents
  const first = await lockFolder(dir, 'a training run');
  const held = JSON.parse(await readFile(join(dir, LOCK_FILE), 'utf8'));
  assert.deepEqual(
    { pid: held.pid, host: held.host, purpose: held.purpose },
    { pid: process.pid, host: hostname(), purpose: 'a training run' },
  );
  assert.ok(Math.abs(Date.parse(held.started) - Date.now()) < 60_000);
  await assert.rejects(
    lockFolder(dir, 'another run'),
    isLocked(new RegExp(`is in use by another lorakit process \\(a training run, pid ${process.pid} on ${hostname()}`)),
  );
  await first.release();
  assert.deepEqual(await readdir(dir), [], 'the lock file and its temp files are gone');
  const second = await lockFolder(dir, 'another run');
  await second.release();
});

test('a lock left by a process that is gone is taken over; release leaves a lock that is not its own', async () => {
  const dir = join(tmp, 'stale');
  const gone = { pid: deadPid(), host: hostname(), started: '2020-01-01T00:00:00Z', purpose: 'x', token: 'old' };
  await lockFolder(dir, 'setup').then((l) => l.release());
  await writeFile(join(dir, LOCK_FILE), JSON.stringify(gone));
  const lock = await lockFolder(dir, 'the new run');
  assert.equal(JSON.parse(await readFile(join(dir, LOCK_FILE), 'utf8')).purpose, 'the new run');
  // someone replaced the lock meanwhile: release must not delete theirs
  const theirs = JSON.stringify({ ...gone, pid: process.pid, token: 'theirs' });
  await writeFile(join(dir, LOCK_FILE), theirs);
  await lock.release();
  assert.equal(await readFile(join(dir, LOCK_FILE), 'utf8'), theirs);
  assert.deepEqual(await readdir(dir), [LOCK_FILE]);
});

test('a lock from another host, or one lorakit cannot read, is not taken over: the error names the file to delete', async () => {
  const dir = join(tmp, 'remote');
  await lockFolder(dir, 'setup').then((l) => l.release());
  const remote = { pid: 1, host: 'elsewhere.example', started: '2024-05-01T10:00:00Z', purpose: 'train', token: 't' };
  await writeFile(join(dir, LOCK_FILE), JSON.stringify(remote));
  await assert.rejects(
    lockFolder(dir, 'mine'),
    isLocked(
      new RegExp(
        'pid 1 on elsewhere\\.example, started 2024-05-01T10:00:00Z\\).*' +
          'if no lorakit process runs on elsewhere\\.example, delete .*\\.lorakit\\.lock',
      ),
    ),
  );
  await writeFile(join(dir, LOCK_FILE), 'garbage');
  await assert.rejects(lockFolder(dir, 'mine'), isLocked(/not a lock lorakit can read; if no lorakit process uses/));
  assert.equal(await readFile(join(dir, LOCK_FILE), 'utf8'), 'garbage');
});

test('many takers at once: exactly one holds the lock', async () => {
  const dir = join(tmp, 'race');
  const tries = await Promise.allSettled(Array.from({ length: 8 }, (_, i) => lockFolder(dir, `taker ${i}`)));
  const won = tries.filter((t) => t.status === 'fulfilled');
  assert.equal(won.length, 1);
  assert.ok(tries.every((t) => t.status === 'fulfilled' || (t.reason as any).code === 'LK_LOCKED'));
  await (won[0] as PromiseFulfilledResult<Awaited<ReturnType<typeof lockFolder>>>).value.release();
});
