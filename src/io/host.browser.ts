/**
 * The host seam, browser side: the names host.ts exports, over one in-memory file system per page or worker
 * (vfs.ts), POSIX paths rooted at `/` (posix-path.ts), WebCrypto randomness and a synchronous SHA-256 (sha256.ts).
 * web/vite.config.ts resolves `src/io/host.ts` to this file in browser builds; Node never loads it. The page puts
 * files in with `hostFs().write(...)` (fetched base models, dropped adapters) and takes outputs out the same way.
 * Not here: persistence (web/opfs.ts mirrors folders to OPFS), the ONNX Runtime import (runtime/ort.browser.ts).
 */
import type { Writable } from 'node:stream';
import { Sha256 } from './sha256.ts';
import { MemoryFs, VfsError, type VfsStats } from './vfs.ts';

export { basename, dirname, extname, isAbsolute, join, relative, resolve, sep } from './posix-path.ts';
export { Sha256 };

// The page's (or worker's) one file system. Module-level on purpose: a browser context has one, as a process has
// one disk; everything lorakit writes lands here until the page mirrors it elsewhere.
let fsInstance: MemoryFs | null = null;

/** The file system behind this host's calls. */
export function hostFs(): MemoryFs {
  return (fsInstance ??= new MemoryFs());
}

/** Which host this is (see host.ts). */
export const HOST_KIND: 'node' | 'browser' = 'browser';

/** Stats, as node:fs names the type. */
export type Stats = VfsStats;

/** Access-mode constants (nothing is checked: the in-memory files are all readable and writable). */
export const constants = { F_OK: 0, R_OK: 4, W_OK: 2, X_OK: 1 };

const text = (b: Uint8Array) => new TextDecoder().decode(b);
const bytesOf = (d: Uint8Array | string) => (typeof d === 'string' ? new TextEncoder().encode(d) : d);
type Encoding = BufferEncoding | { encoding?: BufferEncoding | null } | null | undefined;
const wantsText = (enc: Encoding) => (typeof enc === 'string' ? true : !!enc?.encoding);

/** Sync reads (config files), as node:fs. */
export function existsSync(path: string): boolean {
  return hostFs().exists(path);
}
export function readFileSync(path: string, enc?: Encoding): any {
  const b = hostFs().read(path);
  return wantsText(enc) ? text(b) : b.slice();
}
export function readdirSync(path: string): string[] {
  return hostFs().readdir(path);
}
export function statSync(path: string): Stats {
  return hostFs().stat(path);
}

/** Async file calls, as node:fs/promises (each settles after the synchronous in-memory operation). */
export async function readFile(path: string, enc?: Encoding): Promise<any> {
  return readFileSync(path, enc);
}
export async function writeFile(path: string, data: Uint8Array | string): Promise<void> {
  hostFs().write(path, bytesOf(data).slice());
}
export async function appendFile(path: string, data: Uint8Array | string): Promise<void> {
  const fs = hostFs();
  const old = fs.exists(path) ? fs.read(path) : new Uint8Array(0);
  const add = bytesOf(data);
  const out = new Uint8Array(old.length + add.length);
  out.set(old);
  out.set(add, old.length);
  fs.write(path, out);
}
export async function copyFile(from: string, to: string): Promise<void> {
  hostFs().write(to, hostFs().read(from).slice());
}
export async function link(from: string, to: string): Promise<void> {
  hostFs().link(from, to);
}
export async function stat(path: string): Promise<Stats> {
  return hostFs().stat(path);
}
export const lstat = stat;
export async function realpath(path: string): Promise<string> {
  hostFs().stat(path);
  return resolvePath(path);
}
export async function access(path: string): Promise<void> {
  hostFs().stat(path);
}
export async function mkdir(path: string, opts?: { recursive?: boolean }): Promise<undefined> {
  hostFs().mkdir(path, !!opts?.recursive);
  return undefined;
}
export async function mkdtemp(prefix: string): Promise<string> {
  const p = `${prefix}${randomHex(3)}`;
  hostFs().mkdir(p);
  return p;
}
export async function readdir(path: string): Promise<string[]> {
  return hostFs().readdir(path);
}
export async function rename(from: string, to: string): Promise<void> {
  hostFs().rename(from, to);
}
export async function rm(path: string, opts?: { recursive?: boolean; force?: boolean }): Promise<void> {
  hostFs().rm(path, opts);
}
export async function unlink(path: string): Promise<void> {
  if (hostFs().stat(path).isDirectory()) throw new VfsError('EISDIR', 'unlink', path);
  hostFs().rm(path);
}
export async function utimes(path: string, _atime: Date | number, mtime: Date | number): Promise<void> {
  hostFs().touch(path, typeof mtime === 'number' ? mtime * 1000 : mtime.getTime());
}

/** An open file: positional reads over the bytes, writes appended to a buffer that close() stores. */
export interface FileHandle {
  read(buf: Uint8Array, offset: number, length: number, position: number): Promise<{ bytesRead: number }>;
  write(buf: Uint8Array, offset?: number, length?: number): Promise<{ bytesWritten: number }>;
  readFile(enc?: Encoding): Promise<any>;
  stat(): Promise<Stats>;
  sync(): Promise<void>;
  close(): Promise<void>;
}

/** Opens `path`: 'r' to read; 'w'/'wx' (exclusive) to write, the file appearing at once and filled on each write. */
export async function open(path: string, flags = 'r'): Promise<FileHandle> {
  const fs = hostFs();
  if (flags === 'r') {
    const s = fs.stat(path);
    if (s.isDirectory()) {
      // reading a folder fails as in Node; sync() on it is the only thing lorakit does with one
      return { ...unreadable(path), stat: async () => s, sync: async () => {}, close: async () => {} };
    }
    const bytes = fs.read(path);
    return {
      async read(buf, offset, length, position) {
        const n = Math.max(0, Math.min(length, bytes.length - position));
        buf.set(bytes.subarray(position, position + n), offset);
        return { bytesRead: n };
      },
      write: () => Promise.reject(new VfsError('EBADF', 'write', path)),
      readFile: async (enc) => (wantsText(enc) ? text(bytes) : bytes.slice()),
      stat: async () => fs.stat(path),
      sync: async () => {},
      close: async () => {},
    };
  }
  fs.write(path, new Uint8Array(0), flags.includes('x'));
  const chunks: Uint8Array[] = [];
  const flush = () => {
    const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
    let at = 0;
    for (const c of chunks) {
      out.set(c, at);
      at += c.length;
    }
    if (fs.exists(path)) fs.write(path, out);
  };
  return {
    read: () => Promise.reject(new VfsError('EBADF', 'read', path)),
    async write(buf, offset = 0, length = buf.length - offset) {
      chunks.push(buf.slice(offset, offset + length));
      return { bytesWritten: length };
    },
    readFile: () => Promise.reject(new VfsError('EBADF', 'read', path)),
    stat: async () => fs.stat(path),
    sync: async () => flush(),
    close: async () => flush(),
  };
}

function unreadable(path: string): Pick<FileHandle, 'read' | 'write' | 'readFile'> {
  const fail = () => Promise.reject(new VfsError('EISDIR', 'read', path));
  return { read: fail, write: fail, readFile: fail };
}

import { resolve as resolvePath } from './posix-path.ts';

/** OS facts, as node:os (a browser has no home folder or host name; these name the in-memory file system's). */
export function homedir(): string {
  return '/home';
}
export function hostname(): string {
  return 'browser';
}
export function tmpdir(): string {
  return '/tmp';
}

/** Hashing and randomness, as node:crypto (sha256 only: the one algorithm lorakit uses). */
export function createHash(algorithm: 'sha256'): Sha256 {
  if (algorithm !== 'sha256') throw new Error(`host.browser: only sha256 is available, not ${algorithm}`);
  return new Sha256();
}
export function randomInt(max: number): number {
  return crypto.getRandomValues(new Uint32Array(1))[0] % max;
}
/** `n` random bytes as lowercase hex. */
export function randomHex(n: number): string {
  return [...crypto.getRandomValues(new Uint8Array(n))].map((b) => b.toString(16).padStart(2, '0')).join('');
}
/** A browser context has no process id; 1 keeps temporary names in lorakit's usual shape. */
export function processId(): number {
  return 1;
}

/** URL helpers, as node:url and node:module: a file URL's path, and a require() that only names packages. */
export function fileURLToPath(url: string | URL): string {
  return decodeURIComponent(new URL(url).pathname);
}
export function createRequire(_from: string | URL): { resolve(id: string): string } {
  return {
    resolve: (id) => {
      throw new VfsError('ENOENT', 'require', id);
    },
  };
}

/** A browser has no environment variables; lorakit's defaults apply. */
export function environment(): Record<string, string | undefined> {
  return {};
}

/** Paths in the in-memory file system follow the Linux layout. */
export function platform(): NodeJS.Platform {
  return 'linux';
}

/** Progress lines go to the console (a page has no standard output); never a terminal. */
export function standardOutput(): Writable & { isTTY?: boolean } {
  let pending = '';
  const sink = {
    isTTY: false,
    write(chunk: unknown): boolean {
      pending += String(chunk);
      const lines = pending.split('\n');
      pending = lines.pop()!;
      for (const l of lines) console.log(l);
      return true;
    },
  };
  return sink as unknown as Writable & { isTTY?: boolean };
}

/** A page cannot read the CPU's flags: none are reported, so kernel choices take their portable default. */
export function cpuFeatures(): ReadonlySet<string> {
  return new Set();
}

/** Only this browser context's own "process" (id 1) is alive: a lock it did not write is another tab's. */
export function processAlive(pid: number): boolean {
  return pid === processId();
}
