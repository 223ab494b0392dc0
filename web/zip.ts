/**
 * Adapters as zip files: a PEFT folder of the in-memory file system packed into one zip (the page's download) and
 * a dropped zip unpacked into a folder (fflate does the format). A zip whose files sit in one top folder (as
 * `zip -r adapter.zip adapter/` makes) is unpacked without that folder. Not here: the file system (src/io/vfs.ts).
 */
import { unzipSync, zipSync } from 'fflate';
import type { MemoryFs } from '../src/io/vfs.ts';

/** The files of `dir` (recursively) as a zip, stored without compression (safetensors barely compress). */
export function zipFolder(fs: MemoryFs, dir: string): Uint8Array {
  const files: Record<string, Uint8Array> = {};
  for (const rel of fs.filesUnder(dir)) files[rel] = fs.read(`${dir}/${rel}`);
  if (Object.keys(files).length === 0) throw new Error(`no files in ${dir} to zip`);
  return zipSync(files, { level: 0 });
}

/** Unpacks `zip` into `dir` (created), dropping a single top folder shared by every entry. */
export function unzipFolder(fs: MemoryFs, dir: string, zip: Uint8Array): string[] {
  const entries = Object.entries(unzipSync(zip)).filter(([name]) => !name.endsWith('/'));
  if (entries.length === 0) throw new Error('the zip file holds no files');
  const tops = new Set(entries.map(([name]) => (name.includes('/') ? name.slice(0, name.indexOf('/')) : '')));
  const strip = tops.size === 1 && !tops.has('') ? [...tops][0].length + 1 : 0;
  fs.mkdir(dir, true);
  const names: string[] = [];
  for (const [name, bytes] of entries) {
    const rel = name.slice(strip);
    const at = `${dir}/${rel}`;
    fs.mkdir(at.slice(0, at.lastIndexOf('/')), true);
    fs.write(at, bytes);
    names.push(rel);
  }
  return names.sort();
}
