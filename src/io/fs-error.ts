/**
 * The operating system's file errors as lorakit errors: a Node system error (`ENOSPC`, `EROFS`, `ELOOP`, ...) becomes
 * a LorakitError with a stable code, the path it concerns, what failed and what to do. The writers and readers of
 * io/ convert at their seams (atomic writes, opening weights); the CLI converts whatever else reaches it, so no
 * system error prints as a raw stack trace. Not here: deciding what a path should be (folder.ts).
 */
import { LorakitError, type ErrorCode } from '../errors.ts';

/** A Node system error: an errno `code` such as `ENOENT`, the failing `syscall`, usually the `path`. */
export type SystemError = NodeJS.ErrnoException & { code: string; syscall: string };

/** Whether `e` is a Node system error (and not a LorakitError or a bug). */
export function isSystemError(e: unknown): e is SystemError {
  if (!(e instanceof Error)) return false;
  const { code, syscall } = e as NodeJS.ErrnoException;
  return typeof code === 'string' && /^E[A-Z0-9]+$/.test(code) && typeof syscall === 'string';
}

/** What a failed operation was doing: reading or writing `path` (shapes the message and the advice). */
export type FsAction = 'read' | 'write' | 'access';

// errno → [code, what happened, what to do]; the advice depends on whether the path was being read or written.
const KNOWN: Record<string, [ErrorCode, string, (a: FsAction) => string]> = {
  ENOSPC: ['LK_DISK_FULL', 'no space left on the device', () => 'free some space or choose a folder on another disk'],
  EDQUOT: ['LK_DISK_FULL', 'the disk quota is used up', () => 'free some space or choose a folder on another disk'],
  EROFS: [
    'LK_PERMISSION_DENIED',
    'the file system is read-only',
    (a) => (a === 'write' ? 'choose a folder on a writable file system' : 'remount it read-write'),
  ],
  EACCES: [
    'LK_PERMISSION_DENIED',
    'permission denied',
    (a) => (a === 'write' ? 'choose a folder you can write to, or change its permissions' : 'check its permissions'),
  ],
  EPERM: ['LK_PERMISSION_DENIED', 'operation not permitted', () => 'check its permissions and owner'],
  ENOENT: ['LK_FILE_NOT_FOUND', 'it does not exist', () => 'check the path'],
  ENOTDIR: ['LK_FILE_NOT_FOUND', 'a part of the path is a file, not a folder', () => 'check the path'],
  EISDIR: ['LK_FILE_NOT_FOUND', 'it is a folder, not a file', () => 'name a file'],
  EEXIST: ['LK_FILE_NOT_FOUND', 'something else already exists there', () => 'remove it or choose another path'],
  ELOOP: ['LK_IO', 'its symbolic links form a loop', () => 'fix or remove the link'],
  ENAMETOOLONG: ['LK_IO', 'the name is too long for the file system', () => 'choose a shorter path'],
  EMFILE: ['LK_IO', 'too many open files', () => 'raise the limit (ulimit -n) or close other programs'],
  ENFILE: ['LK_IO', 'the system has too many open files', () => 'close other programs and retry'],
  EIO: ['LK_IO', 'an input/output error of the device', () => 'check the disk'],
};

// System calls that change the file system: their failures are reported as failed writes.
const WRITES = new Set(['write', 'mkdir', 'rename', 'unlink', 'rmdir', 'rm', 'copyfile', 'fsync', 'link', 'symlink']);

/** What a failed system call was doing, where its caller did not say: a full disk is always a failed write. */
function actionOf(e: SystemError): FsAction {
  if (WRITES.has(e.syscall) || ['ENOSPC', 'EDQUOT', 'EROFS'].includes(e.code)) return 'write';
  return e.syscall === 'read' ? 'read' : 'access';
}

/**
 * The LorakitError for system error `e` met while doing `action` (default: read off the failed call) on `path`
 * (default: the error's own path). The message reads `cannot <action> <path>: <what happened> (<errno>); <what to
 * do>`; details carry `path`, `errno` and `syscall`, and `option`, the option the path came from, for the shells.
 */
export function fsError(
  e: SystemError,
  action: FsAction = actionOf(e),
  path = e.path ?? '(unknown path)',
  option?: string,
): LorakitError {
  const [code, what, advice] = KNOWN[e.code] ?? [
    'LK_IO' as const,
    `the system refused ${e.syscall} (${e.message})`,
    () => 'check the path and the device',
  ];
  return new LorakitError(code, `cannot ${action} ${path}: ${what} (${e.code}); ${advice(action)}`, {
    path,
    errno: e.code,
    syscall: e.syscall,
    ...(option !== undefined ? { option } : {}),
  });
}

/** Runs `f`, turning a system error into `fsError(e, action, path)`; other errors pass through unchanged. */
export async function withFsErrors<T>(
  action: FsAction,
  path: string,
  f: () => Promise<T>,
  option?: string,
): Promise<T> {
  try {
    return await f();
  } catch (e) {
    throw isSystemError(e) ? fsError(e, action, path, option) : e;
  }
}
