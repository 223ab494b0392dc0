// Runs every *.test.ts under the given folder (or the one given file) with Node's built-in test runner (tsx strips
// the types).
// Node 20's --test takes no globs, so the files are listed here.
import { readdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

const root = process.argv[2] ?? 'test';
const filter = process.argv[3];
const files = statSync(root).isFile() ? [root] : [];
if (files.length === 0)
  (function walk(dir) {
    for (const name of readdirSync(dir).sort()) {
      const p = join(dir, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (name.endsWith('.test.ts') && (!filter || p.includes(filter))) files.push(p);
    }
  })(root);
if (files.length === 0) {
  console.error(`no test files under ${root}`);
  process.exit(1);
}
// Tests compile many graphs: their session-cache entries go to a temporary root, not the user's cache.
const env = { ...process.env, LORAKIT_CACHE: process.env.LORAKIT_CACHE ?? join(tmpdir(), 'lorakit-test-cache') };
const r = spawnSync(
  process.execPath,
  ['--import', 'tsx', '--test', '--test-reporter=spec', '--test-concurrency=1', ...files],
  { stdio: 'inherit', env },
);
process.exit(r.status ?? 1);
