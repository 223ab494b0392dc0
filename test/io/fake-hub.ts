// A Hugging Face hub cache laid out as huggingface_hub writes it, built from a fixture model folder: each file's bytes
// in blobs/<sha256>, snapshots/<commit>/<file> a relative symlink into blobs/, and refs/main naming the commit.
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Fills `hubCache` with repo `id` (`org/name`) holding the files of `fixtureDir`; returns the snapshot folder. */
export function fakeHubRepo(hubCache: string, id: string, fixtureDir: string, commit = 'c0ffee0123456789'): string {
  const repo = join(hubCache, `models--${id.replace('/', '--')}`);
  const snapshot = join(repo, 'snapshots', commit);
  mkdirSync(join(repo, 'blobs'), { recursive: true });
  mkdirSync(join(repo, 'refs'), { recursive: true });
  mkdirSync(snapshot, { recursive: true });
  for (const name of readdirSync(fixtureDir)) {
    const bytes = readFileSync(join(fixtureDir, name));
    const sha = createHash('sha256').update(bytes).digest('hex');
    writeFileSync(join(repo, 'blobs', sha), bytes);
    symlinkSync(join('..', '..', 'blobs', sha), join(snapshot, name));
  }
  writeFileSync(join(repo, 'refs', 'main'), commit);
  return snapshot;
}
