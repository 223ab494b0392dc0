/**
 * An advisory lock on a folder, so that two lorakit processes never write one run folder at once (two trainings on
 * one output_dir would interleave metrics.jsonl and replace each other's checkpoints). The lock is a file
 * `.lorakit.lock` in the folder holding who took it: pid, host, start time, what for. It appears whole (written
 * aside, then hard-linked into place, which fails if a lock exists; an exclusive create where a file system has no
 * hard links), so a reader never sees half a lock. A lock whose
 * process is gone (same host, no such pid) is stale and taken over; a lock from another host cannot be checked,
 * and the error says which file to delete if no process runs there. Not here: what is written under the lock.
 */
import {
  hostname,
  processAlive,
  join,
  link,
  processId,
  randomHex,
  readFile,
  rename,
  unlink,
  writeFile,
} from './host.ts';
import { LorakitError } from '../errors.ts';
import { ensureFolder, type FolderOptions } from './folder.ts';
import { fsError, isSystemError } from './fs-error.ts';

/** Name of the lock file inside a locked folder. */
export const LOCK_FILE = '.lorakit.lock';

/** What a lock file records about its holder. */
export interface LockHolder {
  pid: number;
  host: string;
  /** ISO time the lock was taken. */
  started: string;
  /** What the holder does, e.g. "lorakit train". */
  purpose: string;
  /** Random tag of this lock, so a holder removes only its own file. */
  token: string;
}

/** A held lock; `release()` removes the lock file if it is still this one. */
export interface FolderLock {
  readonly file: string;
  readonly holder: LockHolder;
  release(): Promise<void>;
}

/** The holder recorded in `file`: undefined when the file is gone, null when it is not a lock lorakit wrote. */
async function readHolder(file: string): Promise<LockHolder | null | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if (isSystemError(e) && e.code === 'ENOENT') return undefined;
    throw isSystemError(e) ? fsError(e, 'read', file) : e;
  }
  try {
    const h = JSON.parse(text) as Partial<LockHolder>;
    const ok = Number.isInteger(h.pid) && typeof h.host === 'string' && typeof h.token === 'string';
    return ok ? ({ started: '?', purpose: '?', ...h } as LockHolder) : null;
  } catch {
    return null;
  }
}

/** Moves a stale lock away, checking it is the one judged stale; a fresh lock moved by a race is put back. */
async function takeOver(file: string, stale: LockHolder): Promise<void> {
  const aside = `${file}.${processId()}.${randomHex(6)}.stale`;
  try {
    await rename(file, aside);
  } catch (e) {
    if (isSystemError(e) && e.code === 'ENOENT') return; // another process took it over first
    throw isSystemError(e) ? fsError(e, 'write', file) : e;
  }
  const moved = await readHolder(aside);
  if (moved && moved.token !== stale.token) await link(aside, file).catch(() => undefined);
  await unlink(aside).catch(() => undefined);
}

function lockedError(dir: string, file: string, h: LockHolder | null, option?: string): LorakitError {
  const details = { path: dir, lockFile: file, holder: h, ...(option !== undefined ? { option } : {}) };
  if (h === null)
    return new LorakitError(
      'LK_LOCKED',
      `${dir} is locked by ${file}, which is not a lock lorakit can read; if no lorakit process uses ${dir}, ` +
        `delete ${file}`,
      details,
    );
  const who = `${h.purpose}, pid ${h.pid} on ${h.host}, started ${h.started}`;
  const fix =
    h.host === hostname()
      ? `wait for it to end or stop it, or choose another folder`
      : `wait for it to end, or choose another folder; if no lorakit process runs on ${h.host}, delete ${file}`;
  return new LorakitError('LK_LOCKED', `${dir} is in use by another lorakit process (${who}); ${fix}`, details);
}

/**
 * Takes the lock of folder `dir` (created, with its parents, if missing) for `purpose`. Throws LK_LOCKED naming the
 * holder when another live process has it; takes over a lock whose process is gone. Release it in a `finally`.
 */
export async function lockFolder(dir: string, purpose: string, options: FolderOptions = {}): Promise<FolderLock> {
  await ensureFolder(dir, 'folder', options);
  const file = join(dir, LOCK_FILE);
  const holder: LockHolder = {
    pid: processId(),
    host: hostname(),
    started: new Date().toISOString(),
    purpose,
    token: randomHex(8),
  };
  const tmp = `${file}.${processId()}.${holder.token}.tmp`;
  try {
    await writeFile(tmp, `${JSON.stringify(holder)}\n`, { flag: 'wx' });
  } catch (e) {
    throw isSystemError(e) ? fsError(e, 'write', dir, options.option) : e;
  }
  try {
    // A few rounds: each either takes the lock, finds a live holder, or clears a stale one and tries again.
    for (let round = 0; round < 5; round++) {
      try {
        await place(tmp, file, holder);
        return { file, holder, release: () => release(file, holder.token) };
      } catch (e) {
        if (!isSystemError(e)) throw e;
        if (e.code !== 'EEXIST') throw fsError(e, 'write', dir, options.option);
      }
      const h = await readHolder(file);
      if (h === undefined) continue;
      if (h !== null && h.host === holder.host && h.pid !== processId() && !processAlive(h.pid)) {
        await takeOver(file, h);
        continue;
      }
      throw lockedError(dir, file, h, options.option);
    }
    throw lockedError(dir, file, (await readHolder(file)) ?? null, options.option);
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
}

/** Puts the lock in place, failing with EEXIST if one is there; where hard links are refused, an exclusive create. */
async function place(tmp: string, file: string, holder: LockHolder): Promise<void> {
  try {
    await link(tmp, file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'ENOSYS') throw e;
    await writeFile(file, `${JSON.stringify(holder)}\n`, { flag: 'wx' });
  }
}

/** Removes `file` if it still holds the lock tagged `token` (never another process's lock). */
async function release(file: string, token: string): Promise<void> {
  const h = await readHolder(file).catch(() => undefined);
  if (h && h.token === token) await unlink(file).catch(() => undefined);
}
