// The path checks of io/folder.ts and the system-error table of io/fs-error.ts, on real paths: a file where a folder
// is needed is "a file, not a folder", a symbolic link loop is LK_IO, an output folder is checked without writing,
// created level by level, and a path is compared where it really is (through symlinks).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkOutputFolder, ensureFolder, isWithin, realPathOf, requireFolder } from '../../src/io/folder.ts';
import { fsError, isSystemError } from '../../src/io/fs-error.ts';

const tmp = await mkdtemp(join(tmpdir(), 'lorakit-folder-'));
after(() => rm(tmp, { recursive: true, force: true }));

const lk = (code: string, re: RegExp) => (e: any) => e.code === code && re.test(e.message);

test('requireFolder: missing, a file, a symlink loop, a folder', async () => {
  const file = join(tmp, 'file.txt');
  await writeFile(file, 'x');
  await symlink('loop', join(tmp, 'loop'));
  await assert.rejects(
    requireFolder(join(tmp, 'nope'), 'model folder', 'config.json'),
    lk('LK_FILE_NOT_FOUND', /^model folder .*nope does not exist; expected config\.json$/),
  );
  await assert.rejects(
    requireFolder(file, 'adapter folder'),
    lk('LK_FILE_NOT_FOUND', /^adapter folder .*file\.txt is a file, not a folder$/),
  );
  await assert.rejects(
    requireFolder(join(tmp, 'loop'), 'model folder'),
    lk('LK_IO', /symbolic links form a loop \(ELOOP\)/),
  );
  await requireFolder(tmp, 'folder');
});

test('checkOutputFolder writes nothing and refuses a file on the way; ensureFolder creates each level', async () => {
  const file = join(tmp, 'f');
  await writeFile(file, 'x');
  await assert.rejects(checkOutputFolder(file, 'output_dir'), lk('LK_FILE_NOT_FOUND', /f is a file, not a folder/));
  await assert.rejects(
    checkOutputFolder(join(file, 'a', 'b'), 'output_dir', { option: 'output_dir' }),
    (e: any) => /f, on the way to .*f\/a\/b, is a file/.test(e.message) && e.details.option === 'output_dir',
  );
  const deep = join(tmp, 'x', 'y', 'z');
  await checkOutputFolder(deep, 'output_dir');
  assert.ok(!(await readdir(tmp)).includes('x'), 'the check created nothing');
  await ensureFolder(deep, 'output_dir');
  assert.ok((await stat(deep)).isDirectory());
  await ensureFolder(deep, 'output_dir'); // an existing folder is fine
  await assert.rejects(ensureFolder(join(file, 'a'), 'output_dir'), lk('LK_FILE_NOT_FOUND', /is a file, not a folder/));
});

test('realPathOf resolves symlinks of the existing part; isWithin compares whole path components', async () => {
  const real = join(tmp, 'real');
  await mkdir(real);
  await symlink(real, join(tmp, 'alias'));
  assert.equal(await realPathOf(join(tmp, 'alias', 'not', 'yet')), join(await realPathOf(real), 'not', 'yet'));
  assert.ok(isWithin('/a/b/c', '/a/b') && isWithin('/a/b', '/a/b') && isWithin('/a/..b', '/a'));
  assert.ok(!isWithin('/a/bc', '/a/b') && !isWithin('/a', '/a/b'));
});

test('fsError: each system error becomes a stable code with the path, the errno and what to do', async () => {
  const real = await stat(join(tmp, 'missing')).catch((e) => e);
  assert.ok(isSystemError(real) && !isSystemError(new Error('x')));
  const mk = (code: string, syscall = 'write') => Object.assign(new Error(code), { code, syscall });
  const cases: [string, string, string, RegExp][] = [
    ['ENOSPC', 'write', 'LK_DISK_FULL', /^cannot write \/p: no space left on the device \(ENOSPC\); free some space/],
    ['EDQUOT', 'write', 'LK_DISK_FULL', /disk quota/],
    ['EROFS', 'open', 'LK_PERMISSION_DENIED', /^cannot write \/p: the file system is read-only \(EROFS\); choose a/],
    ['EACCES', 'mkdir', 'LK_PERMISSION_DENIED', /^cannot write \/p: permission denied \(EACCES\); choose a folder/],
    ['EACCES', 'open', 'LK_PERMISSION_DENIED', /^cannot access \/p: permission denied \(EACCES\); check its/],
    ['ELOOP', 'stat', 'LK_IO', /^cannot access \/p: its symbolic links form a loop \(ELOOP\)/],
    ['EIO', 'read', 'LK_IO', /^cannot read \/p: an input\/output error/],
    ['EWHATEVER', 'open', 'LK_IO', /the system refused open/],
  ];
  for (const [errno, syscall, code, re] of cases) {
    const e = fsError(mk(errno, syscall) as any, undefined, '/p');
    assert.equal(e.code, code, errno);
    assert.match(e.message, re);
    assert.deepEqual(e.details, { path: '/p', errno, syscall });
  }
});
