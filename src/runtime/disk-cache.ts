/**
 * The on-disk side of the session cache. ONNX Runtime (1.30, 1.31) reads a model's external weights only from files
 * inside the model's folder (it refuses absolute paths, and `..` or links that resolve outside), so a compiled model
 * that references weight files gets an entry folder holding model.onnx and hard links to those files. Layout under the
 * cache folder (default `sessions/` under the lorakit cache root, io/cache-root.ts):
 *
 *   weights/<id>-<name>  one hard link per weight file (a copy where the cache is on another file system), made once
 *                        per file identity (real path, device, inode, size, mtime) and shared by every entry
 *   entries/<key>/       model.onnx + hard links to weights/ files; the folder's mtime is its last use
 *   tmp/                 weight links and entries being built; renamed into place only when complete
 *   trash/               entries being deleted, renamed out of sight first so no reader sees half an entry
 *
 * Safe for processes sharing the folder: every entry and weight link appears by one atomic rename, and a process that
 * loses a race uses the winner's. `sweepSessionCache` bounds the folder by age and by the bytes only the cache holds
 * (a hard link to a model that still exists elsewhere costs nothing; a copy, or a link to a deleted model, does),
 * never deleting an entry used in the last minute or one the caller protects (its live sessions). A session of another
 * process whose entry is deleted keeps working on Linux and macOS: ORT has read model.onnx and memory-mapped the
 * weights, and an unlinked file stays valid while mapped; on Windows the delete of an open file fails and is skipped.
 * This file never loads ONNX Runtime, so `lorakit cache info` stays light. Not here: ORT sessions (runtime.ts).
 */
import {
  basename,
  copyFile,
  createHash,
  join,
  link,
  lstat,
  mkdir,
  processId,
  randomHex,
  readdir,
  realpath,
  rename,
  rm,
  stat,
  utimes,
  writeFile,
  type Stats,
} from '../io/host.ts';

/** A weight file as the cache knows it: where its bytes really are, and an id that changes when they may have. */
export interface WeightFile {
  /** The path the graph names (kept for the link's readable name). */
  path: string;
  /** The path with every symlink resolved (a hub cache snapshot links into blobs/). */
  real: string;
  /** Hash of real path, device, inode, size and mtime: a new id whenever the file may have changed. */
  id: string;
}

/** Bounds of the folder, checked after each new entry. */
export interface SessionCacheLimits {
  /** Bytes only the cache holds (copies, model.onnx files, links to deleted models) before old entries go; default
   * 2 GiB. */
  maxBytes?: number;
  /** Entries unused for longer than this go; default 14 days. */
  maxAgeMs?: number;
}

/** Defaults of `SessionCacheLimits`. */
export const SESSION_CACHE_LIMITS: Required<SessionCacheLimits> = Object.freeze({
  maxBytes: 2 * 1024 ** 3,
  maxAgeMs: 14 * 24 * 3600 * 1000,
});

/** Entries used this recently, and weight links made this recently, are never deleted (another process may be loading
 * them). */
const GRACE_MS = 60_000;
/** Leftovers in tmp/ older than this belong to a process that died mid-build. */
const STALE_TMP_MS = 3600_000;

const unique = () => `${processId()}.${randomHex(6)}`;
const code = (e: unknown) => (e as NodeJS.ErrnoException).code;

/** Resolves `path`'s links and fingerprints the file it reaches. */
export async function weightFile(path: string): Promise<WeightFile> {
  const real = await realpath(path);
  const s = await stat(real);
  const id = createHash('sha256').update(`${real}\0${s.dev}\0${s.ino}\0${s.size}\0${s.mtimeMs}`).digest('hex');
  return { path, real, id: id.slice(0, 24) };
}

/** The shared link (or copy) of one weight file under weights/, made atomically if absent. */
async function ensureWeight(dir: string, w: WeightFile): Promise<string> {
  const target = join(dir, 'weights', `${w.id}-${basename(w.path)}`);
  if (await exists(target)) return target;
  await mkdir(join(dir, 'weights'), { recursive: true });
  await mkdir(join(dir, 'tmp'), { recursive: true });
  const tmp = join(dir, 'tmp', `w.${unique()}`);
  try {
    await link(w.real, tmp);
  } catch {
    await copyFile(w.real, tmp); // another file system (or no hard links there): one copy, shared by every entry
  }
  await rename(tmp, target); // replaces a twin another process renamed first: same bytes
  // rename() between two links of one file does nothing (POSIX), leaving the temporary link behind.
  await rm(tmp, { force: true });
  return target;
}

/**
 * The path of model.onnx in the entry for `key`, building the entry if it is absent (model bytes plus a link to each
 * weight under the name the model's external-data locations use). Marks the entry used.
 */
export async function ensureEntry(
  dir: string,
  key: string,
  model: Uint8Array,
  weights: readonly { name: string; file: WeightFile }[],
): Promise<{ modelPath: string; created: boolean }> {
  const entry = join(dir, 'entries', key);
  const modelPath = join(entry, 'model.onnx');
  if (await exists(modelPath)) {
    await touch(entry);
    return { modelPath, created: false };
  }
  await mkdir(join(dir, 'tmp'), { recursive: true });
  const tmp = join(dir, 'tmp', `${key}.${unique()}`);
  await mkdir(tmp);
  try {
    for (const { name, file } of weights) {
      try {
        await link(await ensureWeight(dir, file), join(tmp, name));
      } catch (e) {
        if (code(e) !== 'ENOENT') throw e;
        // Another process swept the weight link between its creation and ours: make it again, once.
        await link(await ensureWeight(dir, file), join(tmp, name));
      }
    }
    await writeFile(join(tmp, 'model.onnx'), model);
    await mkdir(join(dir, 'entries'), { recursive: true });
    try {
      await rename(tmp, entry);
    } catch (e) {
      // Another process renamed the same entry into place first: use it.
      if (!['EEXIST', 'ENOTEMPTY', 'EPERM', 'EACCES'].includes(code(e) ?? '') || !(await exists(modelPath))) throw e;
      await rm(tmp, { recursive: true, force: true });
      await touch(entry);
      return { modelPath, created: false };
    }
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
  return { modelPath, created: true };
}

/** Deletes the entry for `key` (one that ORT failed to load must not be found again). */
export async function removeEntry(dir: string, key: string): Promise<void> {
  await discard(dir, join(dir, 'entries', key));
}

/** Renames `path` into trash/ (readers never see it half-deleted), then deletes it; false if it could not be. */
async function discard(dir: string, path: string): Promise<boolean> {
  const gone = join(dir, 'trash', `${basename(path)}.${unique()}`);
  try {
    await mkdir(join(dir, 'trash'), { recursive: true });
    await rename(path, gone);
  } catch {
    return false; // already gone (another process), or in use where open files cannot move (Windows)
  }
  await rm(gone, { recursive: true, force: true }).catch(() => {});
  return true;
}

async function touch(path: string): Promise<void> {
  const now = new Date();
  await utimes(path, now, now).catch(() => {}); // a concurrent sweep may have taken it; the caller reads it first
}

async function exists(path: string): Promise<boolean> {
  return lstat(path).then(
    () => true,
    () => false,
  );
}

async function list(path: string): Promise<string[]> {
  return readdir(path).catch(() => []);
}

async function statOrNull(path: string): Promise<Stats | null> {
  return lstat(path).catch(() => null);
}

/** One inode seen in the cache: its size, its link count, and how many of those links the cache holds. */
interface Inode {
  size: number;
  nlink: number;
  seen: number;
}

/** A scan of the folder: entries (oldest use first), weight links, and every inode once. */
interface Scan {
  entries: { key: string; usedMs: number; inodes: string[] }[];
  weights: { name: string; inode: string; ctimeMs: number }[];
  inodes: Map<string, Inode>;
}

async function scan(dir: string): Promise<Scan> {
  const inodes = new Map<string, Inode>();
  const see = (s: Stats) => {
    const id = `${s.dev}:${s.ino}`;
    const n = inodes.get(id);
    if (n) n.seen++;
    else inodes.set(id, { size: s.size, nlink: s.nlink, seen: 1 });
    return id;
  };
  const entries: Scan['entries'] = [];
  for (const key of await list(join(dir, 'entries'))) {
    const d = await statOrNull(join(dir, 'entries', key));
    if (!d?.isDirectory()) continue;
    const ids: string[] = [];
    for (const f of await list(join(dir, 'entries', key))) {
      const s = await statOrNull(join(dir, 'entries', key, f));
      if (s?.isFile()) ids.push(see(s));
    }
    entries.push({ key, usedMs: d.mtimeMs, inodes: ids });
  }
  entries.sort((a, b) => a.usedMs - b.usedMs);
  const weights: Scan['weights'] = [];
  for (const name of await list(join(dir, 'weights'))) {
    const s = await statOrNull(join(dir, 'weights', name));
    if (s?.isFile()) weights.push({ name, inode: see(s), ctimeMs: s.ctimeMs });
  }
  return { entries, weights, inodes };
}

/** Bytes of the inodes whose every link is in the cache (deleting the cache frees exactly these). */
function ownBytes(inodes: Map<string, Inode>): number {
  let n = 0;
  for (const i of inodes.values()) if (i.seen >= i.nlink) n += i.size;
  return n;
}

/** What `sessionCacheInfo` reports. */
export interface SessionCacheInfo {
  dir: string;
  entries: number;
  /** Weight files linked (or copied) into the cache. */
  weightFiles: number;
  /** Bytes of every file in the cache, each inode once (hard links to models elsewhere included). */
  bytes: number;
  /** Bytes only the cache holds: what deleting it frees (the quantity `maxBytes` bounds). */
  ownBytes: number;
  /** Last use of the oldest and newest entry (ms since the epoch), or null when empty. */
  oldestUseMs: number | null;
  newestUseMs: number | null;
}

/** Describes the session cache folder `dir` (which may not exist). */
export async function sessionCacheInfo(dir: string): Promise<SessionCacheInfo> {
  const s = await scan(dir);
  let bytes = 0;
  for (const i of s.inodes.values()) bytes += i.size;
  return {
    dir,
    entries: s.entries.length,
    weightFiles: s.weights.length,
    bytes,
    ownBytes: ownBytes(s.inodes),
    oldestUseMs: s.entries[0]?.usedMs ?? null,
    newestUseMs: s.entries.at(-1)?.usedMs ?? null,
  };
}

/**
 * Bounds the folder: deletes entries unused for `maxAgeMs`, then the least recently used ones while the bytes only
 * the cache holds exceed `maxBytes`, then weight links no entry uses, and leftovers of dead processes in tmp/ and
 * trash/. Entries in `protect` (the caller's live sessions) and entries used within the last minute stay, so the
 * bound can be exceeded while they are in use. Returns what was deleted.
 */
export async function sweepSessionCache(
  dir: string,
  limits: SessionCacheLimits = {},
  protect: ReadonlySet<string> = new Set(),
  now = Date.now(),
): Promise<{ entries: number; weightFiles: number }> {
  const { maxBytes, maxAgeMs } = { ...SESSION_CACHE_LIMITS, ...limits };
  const s = await scan(dir);
  let removed = 0;
  const drop = (ids: string[]) => {
    for (const id of ids) {
      const i = s.inodes.get(id)!;
      i.seen--;
      i.nlink--;
      if (i.nlink <= 0) s.inodes.delete(id);
    }
  };
  const inUse = new Map<string, number>(); // inode → entries linking it
  for (const e of s.entries) for (const id of e.inodes) inUse.set(id, (inUse.get(id) ?? 0) + 1);
  for (const e of s.entries) {
    if (protect.has(e.key) || now - e.usedMs < GRACE_MS) continue;
    if (now - e.usedMs <= maxAgeMs && ownBytes(s.inodes) <= maxBytes) break; // oldest first: the rest are newer
    if (!(await discard(dir, join(dir, 'entries', e.key)))) continue;
    removed++;
    drop(e.inodes);
    for (const id of e.inodes) inUse.set(id, inUse.get(id)! - 1);
    // Weight links that no entry uses any more free their bytes with the entry (when the cache held them alone).
    for (const w of s.weights)
      if (!inUse.get(w.inode) && s.inodes.has(w.inode)) {
        const i = s.inodes.get(w.inode)!;
        if (i.seen >= i.nlink && now - w.ctimeMs >= GRACE_MS) drop([w.inode]);
      }
  }
  let weightFiles = 0;
  for (const w of s.weights) {
    if (inUse.get(w.inode) || now - w.ctimeMs < GRACE_MS) continue; // a link is made just before its entry
    await rm(join(dir, 'weights', w.name), { force: true }).then(
      () => weightFiles++,
      () => {},
    );
  }
  for (const name of await list(join(dir, 'tmp'))) {
    const st = await statOrNull(join(dir, 'tmp', name));
    if (st && now - st.mtimeMs > STALE_TMP_MS) await rm(join(dir, 'tmp', name), { recursive: true, force: true });
  }
  for (const name of await list(join(dir, 'trash')))
    await rm(join(dir, 'trash', name), { recursive: true, force: true }).catch(() => {});
  return { entries: removed, weightFiles };
}

/** Deletes every entry and weight link of the folder (sessions already loaded keep working; see the header). */
export async function clearSessionCache(dir: string): Promise<SessionCacheInfo> {
  const before = await sessionCacheInfo(dir);
  for (const sub of ['entries', 'weights']) await discard(dir, join(dir, sub));
  await rm(join(dir, 'trash'), { recursive: true, force: true }).catch(() => {});
  return before;
}
