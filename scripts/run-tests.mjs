// Runs every *.test.ts under the given folder (or the one given file) with Node's built-in test runner (tsx strips
// the types).
// Node 20's --test takes no globs, so the files are listed here.
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';

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
// Tests compile many graphs: their session-cache entries go to a temporary root, not the user's cache. Each run gets
// its own empty root, removed when it ends: the session cache scans every entry after it adds one, so a root kept
// across runs (it grew to ~1,600 entries, 2 GB) made each new entry cost ~0.3 s of CPU, more than it saved
// (trans-lora.test.ts: 10.7 s of CPU against 4.7 s with an empty root). A fresh root is also what a fresh clone
// tests with. An explicit LORAKIT_CACHE is used as given and kept.
// The root's name carries this process's id: a run killed by SIGKILL cannot remove its root, so each run removes the
// roots of runs whose process is gone.
const ownCache = process.env.LORAKIT_CACHE === undefined;
const PREFIX = 'lorakit-test-cache-';
const alive = (pid) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return e.code === 'EPERM'; // someone else's live process
  }
};
if (ownCache)
  for (const name of readdirSync(tmpdir())) {
    const pid = Number(new RegExp(`^${PREFIX}(\\d+)-`).exec(name)?.[1]);
    if (pid && pid !== process.pid && !alive(pid)) rmSync(join(tmpdir(), name), { recursive: true, force: true });
  }
const cacheRoot = process.env.LORAKIT_CACHE ?? mkdtempSync(join(tmpdir(), `${PREFIX}${process.pid}-`));
const dropCache = () => {
  if (ownCache) rmSync(cacheRoot, { recursive: true, force: true });
};
for (const [signal, code] of [
  ['SIGINT', 130],
  ['SIGTERM', 143],
])
  process.on(signal, () => {
    dropCache();
    process.exit(code);
  });
const env = { ...process.env, LORAKIT_CACHE: cacheRoot };
// The federations spend most of their minutes waiting on Flower's heartbeats and round timeouts, not computing: they
// run in a second test process beside the others (their output is printed after the main run's), which keeps
// `npm test` within its 10 minutes on 2 cores. Every other file runs one at a time.
const WAITING = ['test/federated/e2e.test.ts', 'test/federated/safety.test.ts'].map((f) => join(...f.split('/')));
const waiting = files.filter((f) => WAITING.includes(f));
const main = files.filter((f) => !WAITING.includes(f));
const times = process.env.LORAKIT_TEST_TIMES;
const TIMES_REPORTER = new URL('./test-times.mjs', import.meta.url).href;
const run = (list, capture) =>
  new Promise((done) => {
    if (list.length === 0) return done({ code: 0, out: '' });
    // Opt-in timing: LORAKIT_TEST_TIMES=<file> also writes each main-run file's wall time there, slowest first.
    const timed = times && !capture;
    const reporters = timed
      ? ['--test-reporter=spec', '--test-reporter-destination=stdout', `--test-reporter=${TIMES_REPORTER}`]
      : ['--test-reporter=spec'];
    if (timed) reporters.push(`--test-reporter-destination=${times}`);
    const args = ['--import', 'tsx', '--test', ...reporters, '--test-concurrency=1', ...list];
    const child = spawn(process.execPath, args, { stdio: capture ? ['ignore', 'pipe', 'pipe'] : 'inherit', env });
    const chunks = [];
    if (capture) for (const s of [child.stdout, child.stderr]) s.on('data', (d) => chunks.push(d));
    child.on('close', (code) => done({ code: code ?? 1, out: Buffer.concat(chunks).toString() }));
  });
const [a, b] = await Promise.all([run(main, false), run(waiting, true)]);
if (b.out) process.stdout.write(`\n# the federations (run beside the others)\n${b.out}`);
dropCache();
process.exit(a.code || b.code);
