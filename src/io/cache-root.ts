/**
 * Where lorakit keeps its caches: one root folder, with one subfolder per cache (`sessions/`: compiled models and the
 * links to their weight files, runtime/disk-cache.ts; `datasets/`: tokenised data, train/data/cache.ts; `models/`: GGUF
 * files as float32 model folders, io/gguf-model.ts; `quantized/`: quantized frozen weights, models/quant-cache.ts).
 * Every cache
 * finds its folder here, so `lorakit cache info|clear` and the docs name one place.
 * Not here: what a cache holds or how it is bounded (each cache's own file).
 */
import { environment, homedir, join, platform as hostPlatform } from './host.ts';

/** The caches under the root, each in a subfolder of that name. */
export type CacheKind = 'sessions' | 'datasets' | 'models' | 'quantized';

/** What the root depends on (defaults: this process's environment, platform and home folder). */
export interface CacheRootContext {
  env?: Record<string, string | undefined>;
  platform?: NodeJS.Platform;
  home?: string;
}

/**
 * The lorakit cache root: `$LORAKIT_CACHE` when set, else the platform's cache folder + `lorakit`:
 * `$XDG_CACHE_HOME/lorakit` or `~/.cache/lorakit` (Linux and other Unix systems, as the XDG base-directory spec
 * says), `~/Library/Caches/lorakit` (macOS), `%LOCALAPPDATA%\lorakit\Cache` (Windows).
 */
export function lorakitCacheRoot(ctx: CacheRootContext = {}): string {
  const env = ctx.env ?? environment();
  const platform = ctx.platform ?? hostPlatform();
  const home = ctx.home ?? homedir();
  if (env.LORAKIT_CACHE) return env.LORAKIT_CACHE;
  if (platform === 'darwin') return join(home, 'Library', 'Caches', 'lorakit');
  if (platform === 'win32') return join(env.LOCALAPPDATA ?? join(home, 'AppData', 'Local'), 'lorakit', 'Cache');
  // The XDG spec ignores a relative XDG_CACHE_HOME.
  const xdg = env.XDG_CACHE_HOME;
  return join(xdg?.startsWith('/') ? xdg : join(home, '.cache'), 'lorakit');
}

/** The folder of one cache under the root (see `lorakitCacheRoot`). */
export function lorakitCacheDir(kind: CacheKind, ctx: CacheRootContext = {}): string {
  return join(lorakitCacheRoot(ctx), kind);
}
