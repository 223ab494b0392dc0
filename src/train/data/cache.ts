/**
 * On-disk cache of tokenised examples, so a second run over the same file skips tokenisation. The key is a
 * SHA-256 of the file's bytes (size and mtime miss same-size edits), the tokenizer (tokenizer.json and
 * tokenizer_config.json as loaded, chat template included), the format options, and for plain text seqLen (the
 * window length). The entry holds examples before they are cut into rows, so packing and (for records) seqLen
 * can change without a miss. Any change to the key is a miss; old entries are left in place (one file each).
 *
 * File layout (platform byte order, little-endian on every platform Node supports): "LKDS" magic, u32 version, u32
 * header bytes, the header JSON (key, format,
 * counts, record problems), zero padding to a multiple of 4, then offsets u32[n+1], ids i32[m], labels i32[m].
 * A file that does not parse or whose key differs counts as a miss and is rewritten. Writes are atomic.
 * `datasetCacheInfo` and `clearDatasetCache` serve `lorakit cache info|clear`.
 * Not here: what the examples are (`encode.ts`).
 */
import { createHash, join, mkdir, readFile, readdir, rm, stat } from '../../io/host.ts';
import { writeFileAtomic } from '../../io/atomic.ts';
import type { HfTokenizer } from '../../io/tokenizer.ts';
import type { ExampleSet } from './encode.ts';
import type { DatasetFormat, RecordProblem } from './records.ts';

const MAGIC = 0x53444b4c; // "LKDS"
/** Bump when encoding rules change, so old caches become misses. */
const VERSION = 1;

/** What a cache entry holds besides the examples. */
export interface CacheMeta {
  key: string;
  format: DatasetFormat;
  /** Records that were skipped, with their locations. */
  problems: RecordProblem[];
}

const tokenizerHashes = new WeakMap<HfTokenizer, string>();

/** SHA-256 of a tokenizer's tokenizer.json and tokenizer_config.json as loaded (memoised per object). */
export function tokenizerHash(tokenizer: HfTokenizer): string {
  let h = tokenizerHashes.get(tokenizer);
  if (h === undefined) {
    // @huggingface/tokenizers keeps the parsed tokenizer.json as `tokenizer`; fall back to the vocabulary.
    const json = (tokenizer.backend as unknown as { tokenizer?: unknown }).tokenizer;
    const hash = createHash('sha256');
    hash.update(json !== undefined ? JSON.stringify(json) : JSON.stringify([...tokenizer.backend.get_vocab(true)]));
    hash.update('\0');
    hash.update(JSON.stringify(tokenizer.config));
    h = hash.digest('hex');
    tokenizerHashes.set(tokenizer, h);
  }
  return h;
}

/** The cache key: SHA-256 over the file bytes and a canonical JSON of everything else that shapes the examples. */
export function cacheKey(fileBytes: Uint8Array, parts: Record<string, unknown>): string {
  const fileHash = createHash('sha256').update(fileBytes).digest('hex');
  const sorted = Object.fromEntries(
    Object.entries({ ...parts, version: VERSION, fileHash }).sort(([a], [b]) => a.localeCompare(b)),
  );
  return createHash('sha256').update(JSON.stringify(sorted)).digest('hex');
}

/** Path of the cache entry for a data file stem and key. */
export function cachePath(cacheDir: string, stem: string, key: string): string {
  return join(cacheDir, `${stem}.${key.slice(0, 24)}.lkds`);
}

/** Reads an entry; undefined when it is missing, unreadable or has another key. */
export async function readCache(
  path: string,
  key: string,
): Promise<{ meta: CacheMeta; examples: ExampleSet } | undefined> {
  let buf: Buffer;
  try {
    buf = await readFile(path);
  } catch {
    return undefined;
  }
  try {
    const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    if (view.getUint32(0, true) !== MAGIC || view.getUint32(4, true) !== VERSION) return undefined;
    const headerBytes = view.getUint32(8, true);
    const meta = JSON.parse(buf.subarray(12, 12 + headerBytes).toString('utf8')) as CacheMeta & {
      examples: number;
      tokens: number;
    };
    if (meta.key !== key) return undefined;
    let at = align4(12 + headerBytes);
    // Copies, so the typed arrays are aligned whatever the Buffer's offset in its pool.
    const take = (bytes: number) => {
      const s = buf.buffer.slice(buf.byteOffset + at, buf.byteOffset + at + bytes);
      at += bytes;
      return s;
    };
    const offsets = new Uint32Array(take(4 * (meta.examples + 1)));
    const ids = new Int32Array(take(4 * meta.tokens));
    const labels = new Int32Array(take(4 * meta.tokens));
    if (labels.length !== meta.tokens || offsets[meta.examples] !== meta.tokens) return undefined;
    return {
      meta: { key: meta.key, format: meta.format, problems: meta.problems },
      examples: { offsets, ids, labels },
    };
  } catch {
    return undefined;
  }
}

function align4(n: number): number {
  return (n + 3) & ~3;
}

/** Writes an entry atomically (creating the folder). */
export async function writeCache(path: string, cacheDir: string, meta: CacheMeta, examples: ExampleSet): Promise<void> {
  await mkdir(cacheDir, { recursive: true });
  const header = Buffer.from(
    JSON.stringify({ ...meta, examples: examples.offsets.length - 1, tokens: examples.ids.length }),
    'utf8',
  );
  const prefix = Buffer.alloc(align4(12 + header.length));
  prefix.writeUInt32LE(MAGIC, 0);
  prefix.writeUInt32LE(VERSION, 4);
  prefix.writeUInt32LE(header.length, 8);
  header.copy(prefix, 12);
  const bytes = (a: Uint32Array | Int32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  await writeFileAtomic(path, [prefix, bytes(examples.offsets), bytes(examples.ids), bytes(examples.labels)]);
}

/** What `datasetCacheInfo` reports: the folder, its entries (.lkds files) and their bytes. */
export interface DatasetCacheInfo {
  dir: string;
  entries: number;
  bytes: number;
}

/** Counts the entries of a dataset cache folder (which may not exist). */
export async function datasetCacheInfo(cacheDir: string): Promise<DatasetCacheInfo> {
  const names = (await readdir(cacheDir).catch(() => [])).filter((n) => n.endsWith('.lkds'));
  let bytes = 0;
  for (const n of names) bytes += (await stat(join(cacheDir, n)).catch(() => null))?.size ?? 0;
  return { dir: cacheDir, entries: names.length, bytes };
}

/** Deletes every entry of a dataset cache folder (and temporary files of interrupted writes); returns what it held. */
export async function clearDatasetCache(cacheDir: string): Promise<DatasetCacheInfo> {
  const before = await datasetCacheInfo(cacheDir);
  for (const n of await readdir(cacheDir).catch(() => []))
    if (n.endsWith('.lkds') || /\.lkds\.\d+\.[0-9a-f]+\.tmp$/.test(n)) await rm(join(cacheDir, n), { force: true });
  return before;
}
