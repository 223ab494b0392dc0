/**
 * An in-memory POSIX-style file system for browsers: the files lorakit's library code reads and writes through the
 * host seam (host.browser.ts) when no real file system exists. Paths are absolute, `/`-separated; a file is one
 * Uint8Array (a hard link shares it, so the session cache's links cost nothing); errors carry Node's `code` and
 * `syscall` so the library's error handling (fs-error.ts) reads them as it reads Node's. The page fills it from
 * fetch/File (`writeFile`) and mirrors folders to OPFS (web/opfs.ts). Not here: Node (host.ts re-exports node:fs),
 * path arithmetic (posix-path.ts), persistence.
 */

/** A Node-like system error (code + syscall + path), as fs-error.ts expects. */
export class VfsError extends Error {
  /** ENOENT, EEXIST, ENOTDIR, EISDIR, ENOTEMPTY, EBADF. */
  readonly code: string;
  /** The call that failed (open, stat, ...). */
  readonly syscall: string;
  /** The path it was given. */
  readonly path: string;
  constructor(code: string, syscall: string, path: string) {
    super(`${code}: ${syscall} '${path}'`);
    this.code = code;
    this.syscall = syscall;
    this.path = path;
  }
}

/** One entry: a folder, or a file whose bytes may be shared with its hard links. */
type Node = { kind: 'dir'; mtimeMs: number } | { kind: 'file'; data: { bytes: Uint8Array }; mtimeMs: number };

/** What stat() returns: the fields of Node's Stats that lorakit reads. */
export interface VfsStats {
  size: number;
  mtimeMs: number;
  mtime: Date;
  mode: number;
  dev: number;
  ino: number;
  isFile(): boolean;
  isDirectory(): boolean;
  isSymbolicLink(): boolean;
}

/** Normalises an absolute path: no `.`/`..`/empty segments, no trailing slash (except `/`). */
export function normalizePath(p: string): string {
  const out: string[] = [];
  for (const s of p.split('/')) {
    if (s === '' || s === '.') continue;
    if (s === '..') out.pop();
    else out.push(s);
  }
  return `/${out.join('/')}`;
}

const parentOf = (p: string) => (p === '/' ? '/' : normalizePath(`${p}/..`));

/** The in-memory file system; see the file header. Synchronous at heart (the async host calls wrap it). */
export class MemoryFs {
  private nodes = new Map<string, Node>([['/', { kind: 'dir', mtimeMs: Date.now() }]]);
  private inodes = new WeakMap<object, number>();
  private nextInode = 1;

  /** The entry at `path`, or an ENOENT error naming `syscall`. */
  private get(path: string, syscall: string): Node {
    const n = this.nodes.get(normalizePath(path));
    if (!n) throw new VfsError('ENOENT', syscall, path);
    return n;
  }

  private parentDir(path: string, syscall: string): void {
    const parent = this.nodes.get(parentOf(normalizePath(path)));
    if (!parent) throw new VfsError('ENOENT', syscall, path);
    if (parent.kind !== 'dir') throw new VfsError('ENOTDIR', syscall, path);
  }

  /** True when something exists at `path`. */
  exists(path: string): boolean {
    return this.nodes.has(normalizePath(path));
  }

  /** Stats of `path` (there are no symbolic links, so lstat is stat). */
  stat(path: string): VfsStats {
    const n = this.get(path, 'stat');
    const key = n.kind === 'file' ? n.data : n;
    let ino = this.inodes.get(key);
    if (ino === undefined) this.inodes.set(key, (ino = this.nextInode++));
    const size = n.kind === 'file' ? n.data.bytes.length : 0;
    return {
      size,
      mtimeMs: n.mtimeMs,
      mtime: new Date(n.mtimeMs),
      mode: n.kind === 'dir' ? 0o40755 : 0o100644,
      dev: 1,
      ino,
      isFile: () => n.kind === 'file',
      isDirectory: () => n.kind === 'dir',
      isSymbolicLink: () => false,
    };
  }

  /** The bytes of the file at `path` (shared, not copied: callers that mutate must copy). */
  read(path: string): Uint8Array {
    const n = this.get(path, 'open');
    if (n.kind !== 'file') throw new VfsError('EISDIR', 'read', path);
    return n.data.bytes;
  }

  /** Creates or replaces the file at `path` with `bytes` (kept by reference). `exclusive`: EEXIST if present. */
  write(path: string, bytes: Uint8Array, exclusive = false): void {
    const p = normalizePath(path);
    this.parentDir(p, 'open');
    const n = this.nodes.get(p);
    if (n?.kind === 'dir') throw new VfsError('EISDIR', 'open', path);
    if (n && exclusive) throw new VfsError('EEXIST', 'open', path);
    if (n?.kind === 'file') {
      n.data.bytes = bytes; // hard links see the new bytes, as with an in-place write on disk
      n.mtimeMs = Date.now();
    } else this.nodes.set(p, { kind: 'file', data: { bytes }, mtimeMs: Date.now() });
  }

  /** Makes a folder; `recursive` makes parents and accepts an existing folder. */
  mkdir(path: string, recursive = false): void {
    const p = normalizePath(path);
    const n = this.nodes.get(p);
    if (n) {
      if (recursive && n.kind === 'dir') return;
      throw new VfsError('EEXIST', 'mkdir', path);
    }
    if (recursive && !this.nodes.has(parentOf(p))) this.mkdir(parentOf(p), true);
    this.parentDir(p, 'mkdir');
    this.nodes.set(p, { kind: 'dir', mtimeMs: Date.now() });
  }

  /** Names in the folder at `path`, sorted. */
  readdir(path: string): string[] {
    const p = normalizePath(path);
    const n = this.get(p, 'scandir');
    if (n.kind !== 'dir') throw new VfsError('ENOTDIR', 'scandir', path);
    const prefix = p === '/' ? '/' : `${p}/`;
    const names: string[] = [];
    for (const k of this.nodes.keys())
      if (k !== p && k.startsWith(prefix) && !k.slice(prefix.length).includes('/')) names.push(k.slice(prefix.length));
    return names.sort();
  }

  /** Moves `from` (a file or a whole folder) to `to`, replacing a file or an empty folder there. */
  rename(from: string, to: string): void {
    const a = normalizePath(from),
      b = normalizePath(to);
    const n = this.get(a, 'rename');
    this.parentDir(b, 'rename');
    const there = this.nodes.get(b);
    if (there?.kind === 'dir') {
      if (n.kind !== 'dir') throw new VfsError('EISDIR', 'rename', to);
      if (this.readdir(b).length > 0) throw new VfsError('ENOTEMPTY', 'rename', to);
    } else if (there && n.kind === 'dir') throw new VfsError('ENOTDIR', 'rename', to);
    if (a === b) return;
    const moved = [...this.nodes.entries()].filter(([k]) => k === a || k.startsWith(`${a}/`));
    for (const [k] of moved) this.nodes.delete(k);
    for (const [k, v] of moved) this.nodes.set(b + k.slice(a.length), v);
  }

  /** Removes a file; a folder too with `recursive`; `force` ignores a missing path. */
  rm(path: string, opts: { recursive?: boolean; force?: boolean } = {}): void {
    const p = normalizePath(path);
    const n = this.nodes.get(p);
    if (!n) {
      if (opts.force) return;
      throw new VfsError('ENOENT', 'rm', path);
    }
    if (n.kind === 'dir') {
      if (!opts.recursive) throw new VfsError('EISDIR', 'rm', path);
      for (const k of [...this.nodes.keys()]) if (k.startsWith(`${p}/`)) this.nodes.delete(k);
    }
    this.nodes.delete(p);
  }

  /** A hard link: `to` shares the bytes of the file `from`. */
  link(from: string, to: string): void {
    const n = this.get(from, 'link');
    if (n.kind !== 'file') throw new VfsError('EPERM', 'link', from);
    const b = normalizePath(to);
    this.parentDir(b, 'link');
    if (this.nodes.has(b)) throw new VfsError('EEXIST', 'link', to);
    this.nodes.set(b, { kind: 'file', data: n.data, mtimeMs: n.mtimeMs });
  }

  /** Sets the modification time. */
  touch(path: string, mtimeMs: number): void {
    this.get(path, 'utime').mtimeMs = mtimeMs;
  }

  /** Every file under `dir` (paths relative to it), for mirroring to persistent storage. */
  filesUnder(dir: string): string[] {
    const p = normalizePath(dir);
    const prefix = p === '/' ? '/' : `${p}/`;
    return [...this.nodes.entries()]
      .filter(([k, n]) => n.kind === 'file' && k.startsWith(prefix))
      .map(([k]) => k.slice(prefix.length))
      .sort();
  }
}
