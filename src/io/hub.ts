/**
 * Model folders named by a Hugging Face hub id (`HuggingFaceTB/SmolLM2-135M`, optionally `@revision`), found in the
 * local hub cache that `huggingface_hub` (and so transformers, `hf download`) fills. Its layout, per repository:
 * `models--<org>--<name>/refs/<branch>` holds a commit hash, `snapshots/<commit>/` holds the files as symlinks into
 * `blobs/`. A snapshot folder is an ordinary model folder once its links are followed.
 * Not here: downloading (lorakit never reaches the network), reading the folder (hf.ts, models/load.ts).
 */
import { environment, existsSync, homedir, isAbsolute, join, readFileSync, readdirSync, statSync } from './host.ts';
import { LorakitError } from '../errors.ts';

/** `org/name` or `name`, each part as the hub allows (letters, digits, `-`, `_`, `.`), then `@revision` if given. */
const HUB_ID = /^(?:([\w.-]+)\/)?([\w.-]+)(?:@([\w./-]+))?$/;

/** Whether `s` reads as a hub id (`org/name`, `name`, optionally `@revision`) rather than a path. */
export function isHubId(s: string): boolean {
  return HUB_ID.test(s) && !isAbsolute(s) && !s.startsWith('.');
}

/** `~` or `~/…` as the home folder, as huggingface_hub expands its variables. */
function expandHome(p: string, home: string): string {
  return p === '~' ? home : p.startsWith('~/') ? join(home, p.slice(2)) : p;
}

/**
 * The local hub cache, by huggingface_hub's rules: `$HF_HUB_CACHE` (or the older `$HUGGINGFACE_HUB_CACHE`), else
 * `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub` (on every platform).
 */
export function hfHubCacheDir(env: Record<string, string | undefined> = environment(), home = homedir()): string {
  // An empty variable counts as unset.
  const hub = env.HF_HUB_CACHE || env.HUGGINGFACE_HUB_CACHE;
  if (hub) return expandHome(hub, home);
  const hfHome = env.HF_HOME || join(env.XDG_CACHE_HOME || join(home, '.cache'), 'huggingface');
  return join(expandHome(hfHome, home), 'hub');
}

/** Options of `resolveModelDir`. */
export interface ResolveModelDirOptions {
  /** Environment for the hub cache location (default process.env). */
  env?: Record<string, string | undefined>;
  /** Home folder for `~` and the default cache (default os.homedir()). */
  home?: string;
}

/**
 * The folder to open for a model argument: `pathOrId` itself when it exists (a path always wins, so a local folder
 * called `org/name` is read as a folder), else the snapshot of a hub id in the local hub cache (`refs/main`, or the
 * `@revision` given: a branch or tag under refs/, or a commit hash). Throws LK_FILE_NOT_FOUND saying where it looked.
 */
export function resolveModelDir(pathOrId: string, opts: ResolveModelDirOptions = {}): string {
  if (existsSync(pathOrId)) return pathOrId;
  const m = HUB_ID.exec(pathOrId);
  if (!m || !isHubId(pathOrId))
    throw new LorakitError('LK_FILE_NOT_FOUND', `model folder ${pathOrId} does not exist`, { path: pathOrId });
  const [, org, name, revision] = m;
  const id = org ? `${org}/${name}` : name;
  const cache = hfHubCacheDir(opts.env, opts.home);
  const repo = join(cache, `models--${org ? `${org}--` : ''}${name}`);
  const notCached = (what: string) =>
    new LorakitError(
      'LK_FILE_NOT_FOUND',
      `model ${pathOrId}: no folder of that name here, and ${what} in the Hugging Face cache ${cache} (set ` +
        `HF_HUB_CACHE or HF_HOME if it lives elsewhere; download it with \`hf download ${id}\`, or pass a folder)`,
      { path: pathOrId, hubCache: cache },
    );
  if (!existsSync(repo)) throw notCached(`no ${id} (models--… folder)`);
  const snapshots = join(repo, 'snapshots');
  const ref = revision ?? 'main';
  const refFile = join(repo, 'refs', ref);
  let commit: string;
  if (existsSync(refFile) && statSync(refFile).isFile()) commit = readFileSync(refFile, 'utf8').trim();
  else if (revision && existsSync(join(snapshots, revision))) commit = revision;
  else {
    const present = existsSync(snapshots) ? readdirSync(snapshots) : [];
    // A download by commit hash leaves no refs/main; a lone snapshot is then unambiguous.
    if (!revision && present.length === 1) commit = present[0];
    else
      throw notCached(
        `${id} has no ref "${ref}"${present.length ? ` (snapshots: ${present.join(', ')}; pick one with @<commit>)` : ''}`,
      );
  }
  const dir = join(snapshots, commit);
  if (!existsSync(dir)) throw notCached(`${id}'s ref "${ref}" points at snapshot ${commit}, which is missing`);
  return dir;
}
