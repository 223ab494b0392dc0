/**
 * Atomic file replacement for every writer in lorakit (safetensors, adapter folders, checkpoints): readers see either
 * the old file or the complete new one, never a prefix, even if the process dies mid-write. It is not a lock: two
 * concurrent writers to one path both succeed and the last rename wins (folders are locked with lock.ts).
 */
import { basename, dirname, join, open, processId, randomHex, rename, stat, unlink, type FileHandle } from './host.ts';
import { LorakitError } from '../errors.ts';
import { fsError, isSystemError } from './fs-error.ts';

/** What writeFileAtomic accepts: bytes, a UTF-8 string, or a (sync or async) sequence of byte chunks written in order.
 * */
export type AtomicData = Uint8Array | string | Iterable<Uint8Array> | AsyncIterable<Uint8Array>;

/** Options of writeFileAtomic. */
export interface AtomicWriteOptions {
  /** Permission bits of the new file; default: those of the file being replaced, else 0o666 minus the umask. */
  mode?: number;
  /**
   * false: no fsync of the file nor of its folder, for caches whose files a reader validates and rebuilds (the
   * quantized-weight cache): the rename still hides a half-written file from every process, but after a power loss
   * the file may be missing, short or, on some file systems, hold zeros. Default true: the file and the rename
   * reach the disk before the call returns (checkpoints, adapters).
   */
  durable?: boolean;
}

// One write(2) moves at most ~2 GiB, so large chunks are written in slices.
const MAX_WRITE = 1 << 30;

/** Name of the temporary sibling: hidden, unique per process and call, and recognisable (`.<name>.<pid>.<hex>.tmp`). */
export function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${processId()}.${randomHex(6)}.tmp`);
}

async function writeAll(fh: FileHandle, chunk: Uint8Array): Promise<void> {
  let done = 0;
  while (done < chunk.length) {
    const n = Math.min(chunk.length - done, MAX_WRITE);
    const { bytesWritten } = await fh.write(chunk, done, n);
    done += bytesWritten;
  }
}

async function* chunksOf(data: AtomicData): AsyncGenerator<Uint8Array> {
  if (typeof data === 'string') yield new TextEncoder().encode(data);
  else if (data instanceof Uint8Array) yield data;
  else yield* data;
}

// Makes the rename itself durable. Some platforms (Windows) cannot open or fsync a folder; the rename is then as
// durable as the OS makes it, which is the best available there.
/** fsyncs a folder so that a rename in it is durable (best effort where folders cannot be fsynced). */
export async function syncDir(dir: string): Promise<void> {
  let fh: FileHandle | undefined;
  try {
    fh = await open(dir, 'r');
    await fh.sync();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EISDIR' && code !== 'EPERM' && code !== 'EINVAL' && code !== 'EBADF' && code !== 'EACCES') throw e;
  } finally {
    await fh?.close();
  }
}

/**
 * Writes `data` to `path` atomically: a temp file in the same folder, fsync, rename over `path`, fsync the folder
 * (no fsyncs with `durable: false`).
 * On any error (including one thrown by the chunk source) the temp file is removed and `path` is left as it was;
 * a system error (ENOSPC, EROFS, EACCES, ...) is thrown as the lorakit error `fsError` makes for `path`.
 */
export async function writeFileAtomic(path: string, data: AtomicData, options: AtomicWriteOptions = {}): Promise<void> {
  const dir = dirname(path);
  let mode = options.mode;
  if (mode === undefined) {
    try {
      mode = (await stat(path)).mode & 0o7777;
    } catch {
      mode = 0o666;
    }
  }
  const tmp = tempPathFor(path);
  let fh: FileHandle | undefined;
  try {
    try {
      fh = await open(tmp, 'wx', mode);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new LorakitError('LK_FILE_NOT_FOUND', `cannot write ${path}: folder ${dir} does not exist`, { path });
      }
      throw e;
    }
    for await (const chunk of chunksOf(data)) {
      if (!(chunk instanceof Uint8Array)) {
        throw new LorakitError(
          'LK_INVALID_ARGUMENT',
          `writeFileAtomic(${path}): expected each chunk to be a Uint8Array, found ` +
            `${Object.prototype.toString.call(chunk)}`,
        );
      }
      await writeAll(fh, chunk);
    }
    if (options.durable !== false) await fh.sync();
    await fh.close();
    fh = undefined;
    await rename(tmp, path);
  } catch (e) {
    await fh?.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    // the one seam every lorakit writer passes: a full disk or a read-only folder becomes a lorakit error here
    throw isSystemError(e) ? fsError(e, 'write', path) : e;
  }
  if (options.durable !== false) await syncDir(dir);
}
