/**
 * What a path must be before lorakit reads or writes it: an input folder that exists and is a folder, an output
 * folder that can be created and written (checked without writing anything), and where a path really is (through
 * symbolic links) so that an output can be refused when it would hold an input. Errors name the path, what was
 * expected and what was found. Not here: the errno-to-error table (fs-error.ts), locking (lock.ts).
 */
import {
  access,
  basename,
  constants,
  dirname,
  isAbsolute,
  join,
  mkdir,
  realpath,
  relative,
  resolve,
  sep,
  stat,
} from './host.ts';
import { LorakitError } from '../errors.ts';
import { fsError, isSystemError } from './fs-error.ts';

/** Options of the folder checks: `option` names the option the path came from, so a shell can respell it. */
export interface FolderOptions {
  option?: string;
}

/** A stat that answers null when nothing is at `path`, and a lorakit error for any other failure. */
async function statOrNull(path: string, option?: string) {
  try {
    return await stat(path);
  } catch (e) {
    if (isSystemError(e) && (e.code === 'ENOENT' || e.code === 'ENOTDIR')) return null;
    throw isSystemError(e) ? fsError(e, 'access', path, option) : e;
  }
}

/**
 * Checks that `path` is an existing folder: `what` names it in the error ("model folder", "adapter folder"), and
 * `expected` says what it should hold. A file there is "a file, not a folder", not "does not exist".
 */
export async function requireFolder(
  path: string,
  what: string,
  expected = '',
  options: FolderOptions = {},
): Promise<void> {
  const st = await statOrNull(path, options.option);
  const hint = expected ? `; expected ${expected}` : '';
  const details = { path, ...(options.option !== undefined ? { option: options.option } : {}) };
  if (st === null) throw new LorakitError('LK_FILE_NOT_FOUND', `${what} ${path} does not exist${hint}`, details);
  if (!st.isDirectory())
    throw new LorakitError('LK_FILE_NOT_FOUND', `${what} ${path} is a file, not a folder${hint}`, details);
}

/** The nearest existing ancestor of `path` (or `path` itself) and whether it is a folder. */
async function nearestExisting(path: string, option?: string): Promise<{ at: string; isDir: boolean }> {
  let at = resolve(path);
  for (;;) {
    const st = await statOrNull(at, option);
    if (st !== null) return { at, isDir: st.isDirectory() };
    const up = dirname(at);
    if (up === at) return { at, isDir: true };
    at = up;
  }
}

/**
 * Checks, without writing anything, that `path` is a folder lorakit can create or write into: nothing on the way is
 * a file, and the nearest existing folder is writable (a read-only file system or a missing permission is found
 * here, before any work starts). `what` names the folder in errors ("output folder").
 */
export async function checkOutputFolder(path: string, what: string, options: FolderOptions = {}): Promise<void> {
  const { at, isDir } = await nearestExisting(path, options.option);
  const details = { path, ...(options.option !== undefined ? { option: options.option } : {}) };
  if (!isDir) {
    const where = at === resolve(path) ? `${path} is a file` : `${at}, on the way to ${path}, is a file`;
    throw new LorakitError(
      'LK_FILE_NOT_FOUND',
      `${what} ${path}: ${where}, not a folder; choose another path`,
      details,
    );
  }
  try {
    await access(at, constants.W_OK | constants.X_OK);
  } catch (e) {
    const shown = at === resolve(path) ? path : `${at} (to create ${path} in it)`;
    throw isSystemError(e) ? fsError(e, 'write', shown, options.option) : e;
  }
}

/**
 * Creates folder `path` and its missing parents one level at a time, so that a failure names the real cause
 * (Node's recursive mkdir reports a read-only file system as ENOENT). Errors are lorakit errors naming the level.
 */
export async function ensureFolder(path: string, what: string, options: FolderOptions = {}): Promise<void> {
  const target = resolve(path);
  const { at, isDir } = await nearestExisting(target, options.option);
  if (!isDir) await checkOutputFolder(path, what, options); // throws the "is a file" error
  const missing = relative(at, target).split(sep).filter(Boolean);
  let dir = at;
  for (const part of missing) {
    dir = join(dir, part);
    try {
      await mkdir(dir);
    } catch (e) {
      if (isSystemError(e) && e.code === 'EEXIST' && (await statOrNull(dir))?.isDirectory()) continue; // a racing mkdir
      throw isSystemError(e) ? fsError(e, 'write', dir, options.option) : e;
    }
  }
}

/** Where `path` really is: symbolic links of its existing part resolved, the part that does not exist appended. */
export async function realPathOf(path: string): Promise<string> {
  const abs = resolve(path);
  try {
    return await realpath(abs);
  } catch (e) {
    if (!isSystemError(e)) throw e;
    if (e.code !== 'ENOENT' && e.code !== 'ENOTDIR') throw fsError(e, 'access', path);
    const up = dirname(abs);
    return up === abs ? abs : join(await realPathOf(up), basename(abs));
  }
}

/** Whether `inner` is `outer` or lies inside it (both absolute, resolved paths). */
export function isWithin(inner: string, outer: string): boolean {
  const rel = relative(outer, inner);
  if (rel === '') return true;
  return rel !== '..' && !rel.startsWith(`..${sep}`) && !isAbsolute(rel); // another drive is absolute on Windows
}
