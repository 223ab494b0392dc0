/**
 * Persistence of in-memory folders across page reloads, in the origin private file system (OPFS): a folder of the
 * in-memory file system is mirrored to the same path under OPFS's root (replacing what was there), and restored
 * from it at start. Used for the run folder (checkpoints, so training resumes) and the last adapter. Where OPFS is
 * missing (old browsers, some private modes) both do nothing. Not here: the in-memory file system (src/io/vfs.ts).
 */
import { hostFs } from '../src/io/host.browser.ts';

const parts = (path: string) => path.split('/').filter(Boolean);

async function opfsDir(path: string, create: boolean): Promise<FileSystemDirectoryHandle | null> {
  if (!navigator.storage?.getDirectory) return null;
  let d = await navigator.storage.getDirectory();
  for (const p of parts(path)) {
    try {
      d = await d.getDirectoryHandle(p, { create });
    } catch {
      return null;
    }
  }
  return d;
}

/** Replaces the OPFS copy of `path` with the in-memory folder's files. */
export async function persistDir(path: string): Promise<number> {
  const fs = hostFs();
  const parent = await opfsDir(parts(path).slice(0, -1).join('/'), true);
  if (!parent) return 0;
  const name = parts(path).at(-1)!;
  await parent.removeEntry(name, { recursive: true }).catch(() => {});
  if (!fs.exists(path)) return 0;
  const root = await parent.getDirectoryHandle(name, { create: true });
  const files = fs.filesUnder(path);
  for (const rel of files) {
    let d = root;
    const segs = rel.split('/');
    for (const s of segs.slice(0, -1)) d = await d.getDirectoryHandle(s, { create: true });
    const h = await d.getFileHandle(segs.at(-1)!, { create: true });
    const w = await h.createWritable();
    await w.write(fs.read(`${path}/${rel}`) as Uint8Array<ArrayBuffer>);
    await w.close();
  }
  return files.length;
}

/** Copies the OPFS copy of `path` (if any) into the in-memory file system; returns how many files. */
export async function restoreDir(path: string): Promise<number> {
  const root = await opfsDir(path, false);
  if (!root) return 0;
  const fs = hostFs();
  let n = 0;
  async function walk(d: FileSystemDirectoryHandle, at: string): Promise<void> {
    fs.mkdir(at, true);
    for await (const [name, h] of (d as unknown as AsyncIterable<[string, FileSystemHandle]>)) {
      if (h.kind === 'directory') await walk(h as FileSystemDirectoryHandle, `${at}/${name}`);
      else {
        const file = await (h as FileSystemFileHandle).getFile();
        fs.write(`${at}/${name}`, new Uint8Array(await file.arrayBuffer()));
        n++;
      }
    }
  }
  await walk(root, path);
  return n;
}

/** Removes the OPFS copies of every folder (the page's "forget" button). */
export async function clearPersisted(paths: readonly string[]): Promise<void> {
  for (const p of paths) {
    const parent = await opfsDir(parts(p).slice(0, -1).join('/'), false);
    await parent?.removeEntry(parts(p).at(-1)!, { recursive: true }).catch(() => {});
  }
}
