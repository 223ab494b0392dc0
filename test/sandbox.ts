// Real system failures for tests: a command run in a private mount namespace (`unshare -m`) where a folder is a tiny
// tmpfs (a full disk: ENOSPC) or a read-only bind mount (EROFS), or as an unprivileged user (EACCES on a folder of
// mode 0555). The mounts vanish with the command. Where the machine has no mount namespaces (not root, no unshare),
// `noMounts` says why and the tests that need them skip with that reason.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Why mounts cannot be used here, or null when `unshare -m` with tmpfs and bind mounts works. */
export const noMounts: string | null = (() => {
  if (process.platform !== 'linux') return 'mount namespaces are Linux-only';
  const probe = mkdtempSync(join(tmpdir(), 'lorakit-mount-probe-'));
  try {
    const r = spawnSync('unshare', ['-m', 'sh', '-c', `mount -t tmpfs -o size=4k tmpfs '${probe}'`], {
      encoding: 'utf8',
    });
    return r.status === 0 ? null : `unshare -m / mount unavailable here: ${(r.stderr || String(r.error)).trim()}`;
  } finally {
    rmSync(probe, { recursive: true, force: true });
  }
})();

/** Mounts for `inNamespace`: a tmpfs of `size` at `dir` (a small disk), or `dir` bound onto itself read-only. */
export type Mount = { tmpfs: string; size: string } | { readOnly: string };

/** What a finished command printed, and its exit status. */
export interface Finished {
  status: number;
  stdout: string;
  stderr: string;
}

function collect(cmd: string, args: string[], options: { uid?: number; gid?: number } = {}): Promise<Finished> {
  return new Promise((done) => {
    const child = spawn(cmd, args, { ...options, env: process.env });
    let stdout = '',
      stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (status) => done({ status: status ?? 1, stdout, stderr }));
  });
}

/** Runs `node <args>` with `mounts` in place, in a mount namespace of its own (needs `noMounts === null`). */
export function inNamespace(mounts: Mount[], args: string[]): Promise<Finished> {
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const setup = mounts.map((m) =>
    'tmpfs' in m
      ? `mount -t tmpfs -o size=${m.size} tmpfs ${q(m.tmpfs)}`
      : `mount --bind ${q(m.readOnly)} ${q(m.readOnly)} && mount -o remount,bind,ro ${q(m.readOnly)}`,
  );
  const script = `${setup.join(' && ')} && exec "$@"`;
  return collect('unshare', ['-m', 'sh', '-c', script, 'sh', process.execPath, ...args]);
}

/**
 * Runs `node <args>` as a user for whom a folder of mode 0555 is read-only: `nobody` (65534) when the tests run as
 * root (root writes anywhere), else the current user. Folders it must read need modes that let others in (0755).
 */
export function asUnprivileged(args: string[]): Promise<Finished> {
  return collect(process.execPath, args, process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {});
}
