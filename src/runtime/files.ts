// Atomic writes for the runtime's cache files (temp file + rename), so a crash never leaves a truncated model.
import { writeFileSync, renameSync, rmSync } from 'node:fs';

/** Writes `data` to `path` through a temp file in the same folder and a rename. */
export function writeFileAtomicSync(path: string, data: Uint8Array): void {
  const tmp = `${path}.${process.pid}.${Date.now()}.tmp`;
  try {
    writeFileSync(tmp, data);
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}
