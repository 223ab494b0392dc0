/**
 * `lorakit cache info|clear`: where lorakit's caches live (one root, io/cache-root.ts), what they hold, and emptying
 * them. Four caches sit under the root: `sessions/` (compiled models and links to their weight files,
 * runtime/disk-cache.ts), `datasets/` (tokenised data, train/data/cache.ts), `models/` (GGUF files converted to
 * float32 model folders, io/gguf-model.ts) and `quantized/` (quantized frozen weights, models/quant-cache.ts).
 * Earlier versions kept sessions in `<temp>/lorakit-cache`, never cleaned; `info` reports that folder when it exists
 * and `clear` deletes it. Imports only those files, so it never loads ONNX Runtime. `formatCacheInfo` renders the
 * report for the terminal.
 */
import { readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LorakitError } from '../errors.ts';
import type { SessionCacheInfo } from '../runtime/disk-cache.ts';
import type { DatasetCacheInfo } from '../train/data/cache.ts';
import type { CommandModule } from './main.ts';

/** What `lorakit cache info` reports (and `clear` reports as freed). */
export interface CacheReport {
  root: string;
  sessions: SessionCacheInfo;
  datasets: DatasetCacheInfo;
  /** GGUF files converted to float32 model folders (io/gguf-model.ts). */
  models: { dir: string; entries: number; bytes: number };
  /** Quantized frozen weights, one safetensors file per model folder and mode (models/quant-cache.ts). */
  quantized: { dir: string; entries: number; bytes: number };
  /** The session folder of earlier versions, with its entry count, when it exists. */
  legacy: { dir: string; entries: number } | null;
}

/** Describes the caches under the root; with `clear`, empties them and describes what they held. */
export async function cacheReport({ clear = false } = {}): Promise<CacheReport> {
  const { lorakitCacheDir, lorakitCacheRoot } = await import('../io/cache-root.ts');
  const { clearSessionCache, sessionCacheInfo } = await import('../runtime/disk-cache.ts');
  const { clearDatasetCache, datasetCacheInfo } = await import('../train/data/cache.ts');
  const [sessionsDir, datasetsDir] = [lorakitCacheDir('sessions'), lorakitCacheDir('datasets')];
  const legacyDir = join(tmpdir(), 'lorakit-cache');
  const legacyEntries = await readdir(legacyDir).catch(() => null);
  // Best effort: in a shared temp folder some entries may belong to another user.
  if (clear && legacyEntries) await rm(legacyDir, { recursive: true, force: true }).catch(() => {});
  return {
    root: lorakitCacheRoot(),
    sessions: await (clear ? clearSessionCache : sessionCacheInfo)(sessionsDir),
    datasets: await (clear ? clearDatasetCache : datasetCacheInfo)(datasetsDir),
    models: await modelFolders(lorakitCacheDir('models'), clear),
    quantized: await quantizedFiles(lorakitCacheDir('quantized'), clear),
    legacy: legacyEntries ? { dir: legacyDir, entries: legacyEntries.length } : null,
  };
}

/** Entries and bytes of the converted-model folders under `dir`; with `clear`, deletes them after counting. */
async function modelFolders(dir: string, clear: boolean): Promise<CacheReport['models']> {
  const entries = (await readdir(dir).catch(() => [])) as string[];
  let bytes = 0;
  for (const e of entries)
    for (const f of (await readdir(join(dir, e)).catch(() => [])) as string[])
      bytes += (await stat(join(dir, e, f)).catch(() => null))?.size ?? 0;
  if (clear) await rm(dir, { recursive: true, force: true });
  return { dir, entries: entries.length, bytes };
}

/** Entries and bytes of the quantized-weight files in `dir`; with `clear`, deletes them after counting. */
async function quantizedFiles(dir: string, clear: boolean): Promise<CacheReport['quantized']> {
  const names = ((await readdir(dir).catch(() => [])) as string[]).filter((n) => n.endsWith('.safetensors'));
  let bytes = 0;
  for (const n of names) bytes += (await stat(join(dir, n)).catch(() => null))?.size ?? 0;
  // A session that maps one of these files keeps its mapping after the unlink (Linux, macOS).
  if (clear) await rm(dir, { recursive: true, force: true });
  return { dir, entries: names.length, bytes };
}

/** Renders a report as lines: the root, then one line per cache. */
export function formatCacheInfo(r: CacheReport, cleared = false): string {
  const s = r.sessions,
    d = r.datasets;
  const count = (n: number, one: string, many: string) => `${n} ${n === 1 ? one : many}`;
  const sessions =
    `${count(s.entries, 'entry', 'entries')}, ${count(s.weightFiles, 'weight file', 'weight files')}, ` +
    `${bytes(s.ownBytes)} held only here (${bytes(s.bytes)} counting links to model files)` +
    (s.newestUseMs !== null ? `, last used ${new Date(s.newestUseMs).toISOString()}` : '');
  const lines = [
    `${cleared ? 'cleared ' : ''}lorakit cache root: ${r.root}`,
    `  sessions  ${sessions}  (${s.dir})`,
    `  datasets  ${count(d.entries, 'entry', 'entries')}, ${bytes(d.bytes)}  (${d.dir})`,
    `  models    ${count(r.models.entries, 'GGUF model folder', 'GGUF model folders')}, ` +
      `${bytes(r.models.bytes)}  (${r.models.dir})`,
    `  quantized ${count(r.quantized.entries, 'quantized base', 'quantized bases')}, ` +
      `${bytes(r.quantized.bytes)}  (${r.quantized.dir})`,
  ];
  if (r.legacy)
    lines.push(
      `  old sessions of earlier lorakit versions: ${count(r.legacy.entries, 'entry', 'entries')} in ${r.legacy.dir}` +
        (cleared ? ' (deleted)' : '; `lorakit cache clear` deletes them'),
    );
  return lines.join('\n');
}

function bytes(n: number): string {
  if (n >= 1024 ** 3) return `${(n / 1024 ** 3).toFixed(2)} GiB`;
  if (n >= 1024 ** 2) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${n} B`;
}

export const register: CommandModule['register'] = (cli) => {
  cli
    .command(
      'cache <action>',
      "Show (info) or empty (clear) lorakit's caches: compiled sessions, tokenised datasets, GGUF models",
    )
    .option('--json', 'Print the report as JSON')
    .action(async (action: string, flags: { json?: boolean }) => {
      if (action !== 'info' && action !== 'clear')
        throw new LorakitError('LK_INVALID_ARGUMENT', `cache: unknown action "${action}"; expected info or clear`, {
          option: 'action',
        });
      const r = await cacheReport({ clear: action === 'clear' });
      console.log(flags.json ? JSON.stringify(r, null, 2) : formatCacheInfo(r, action === 'clear'));
    });
};
