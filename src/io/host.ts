/**
 * The host seam, Node side: every file, path, OS, hashing and randomness call lorakit's library code makes goes
 * through this module, so one source tree runs in Node and in a browser. Here it is Node's own modules, re-exported
 * unchanged (Buffers and all), so Node behaviour is exactly what it was before the seam. Browser builds swap this
 * file for host.browser.ts (web/vite.config.ts resolves it): the same names over an in-memory file system (vfs.ts)
 * filled from fetch/File and persisted to OPFS. Not here: the ONNX Runtime import (runtime/ort.ts is its own seam),
 * the CLI (src/cli/ is Node-only and imports Node directly).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Writable } from 'node:stream';

export { constants, existsSync, readFileSync, readdirSync, statSync, type Stats } from 'node:fs';
export {
  access,
  appendFile,
  copyFile,
  link,
  lstat,
  mkdir,
  mkdtemp,
  open,
  readFile,
  readdir,
  realpath,
  rename,
  rm,
  stat,
  unlink,
  utimes,
  writeFile,
  type FileHandle,
} from 'node:fs/promises';
export { basename, dirname, extname, isAbsolute, join, relative, resolve, sep } from 'node:path';
export { homedir, hostname, tmpdir } from 'node:os';
export { createHash, randomInt } from 'node:crypto';
export { fileURLToPath } from 'node:url';
export { createRequire } from 'node:module';

/** `n` random bytes as lowercase hex (temporary-file and lock tags). */
export function randomHex(n: number): string {
  return randomBytes(n).toString('hex');
}

/** This process's id (tags temporary files and locks so concurrent processes never collide). */
export function processId(): number {
  return process.pid;
}

/** Which host this is: 'node' here, 'browser' in host.browser.ts (code that must differ asks, e.g. the runtime). */
export const HOST_KIND: 'node' | 'browser' = 'node';

/** The environment variables (cache locations read them). */
export function environment(): Record<string, string | undefined> {
  return process.env;
}

/** The OS platform (cache locations differ on macOS and Windows). */
export function platform(): NodeJS.Platform {
  return process.platform;
}

/** Where progress lines go by default: the process's standard output. */
export function standardOutput(): Writable & { isTTY?: boolean } {
  return process.stdout;
}

/** Whether process `pid` exists on this machine (stale-lock detection; EPERM: it exists, another user's). */
/**
 * The CPU's feature flags as /proc/cpuinfo names them (x86 `flags`, Arm `Features`): what decides which of ONNX
 * Runtime's kernels are fast here. Empty where the file cannot be read (macOS, Windows).
 */
export function cpuFeatures(): ReadonlySet<string> {
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8')
      .split('\n')
      .find((l) => /^(flags|Features)\s*:/.test(l));
    return new Set(line?.split(':')[1]?.trim().split(/\s+/) ?? []);
  } catch {
    return new Set();
  }
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
