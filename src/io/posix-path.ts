/**
 * POSIX path arithmetic for the browser host (host.browser.ts): the subset of node:path lorakit uses, with `/` as
 * the working folder (the in-memory file system has no other). Same results as node:path's posix functions for
 * the inputs lorakit gives them (test/io/host-browser.test.ts compares them). Not here: file access (vfs.ts).
 */
import { normalizePath } from './vfs.ts';

/** The separator. */
export const sep = '/';

/** True for a path that starts at the root. */
export function isAbsolute(p: string): boolean {
  return p.startsWith('/');
}

/** Joins segments and normalises the result (relative stays relative, as in node:path). */
export function join(...parts: string[]): string {
  const joined = parts.filter((p) => p !== '').join('/');
  if (joined === '') return '.';
  const out = isAbsolute(joined) ? normalizePath(joined) : normalizeRelative(joined);
  return joined.endsWith('/') && out !== '/' ? `${out}/` : out;
}

/** Normalises a relative path: `..` that climbs above the start is kept, as node:path keeps it. */
function normalizeRelative(p: string): string {
  const out: string[] = [];
  for (const s of p.split('/')) {
    if (s === '' || s === '.') continue;
    if (s === '..' && out.length > 0 && out[out.length - 1] !== '..') out.pop();
    else out.push(s);
  }
  return out.length ? out.join('/') : '.';
}

/** Resolves segments right to left against `/` into an absolute, normalised path. */
export function resolve(...parts: string[]): string {
  let p = '';
  for (let i = parts.length - 1; i >= 0 && !isAbsolute(p); i--) if (parts[i]) p = p ? `${parts[i]}/${p}` : parts[i];
  return normalizePath(isAbsolute(p) ? p : `/${p}`);
}

/** The folder part of a path. */
export function dirname(p: string): string {
  const t = p.length > 1 ? p.replace(/\/+$/, '') : p;
  const i = t.lastIndexOf('/');
  if (i < 0) return '.';
  return i === 0 ? '/' : t.slice(0, i);
}

/** The last segment, without `ext` when it ends with it. */
export function basename(p: string, ext?: string): string {
  const t = p.length > 1 ? p.replace(/\/+$/, '') : p;
  const b = t.slice(t.lastIndexOf('/') + 1);
  return ext && b.endsWith(ext) && b !== ext ? b.slice(0, -ext.length) : b;
}

/** The extension of the last segment (from its last dot, not a leading one), or ''. */
export function extname(p: string): string {
  const b = basename(p);
  const i = b.lastIndexOf('.');
  return i <= 0 ? '' : b.slice(i);
}

/** The path from `from` to `to`, both resolved. */
export function relative(from: string, to: string): string {
  const a = resolve(from).split('/').filter(Boolean),
    b = resolve(to).split('/').filter(Boolean);
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return [...a.slice(i).map(() => '..'), ...b.slice(i)].join('/');
}
