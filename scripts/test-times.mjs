// A node:test reporter that writes one line per test file: its wall time in the runner (from the file's start to the
// next file's start, so module loading and top-level setup count) and the sum of its top-level tests' own durations.
// Used by `LORAKIT_TEST_TIMES=out.tsv node scripts/run-tests.mjs …`; it measures, it does not print test results.
// Wall times hold only when files run one at a time (--test-concurrency=1, as run-tests.mjs runs them).

/** Yields `wall_ms<TAB>tests_ms<TAB>file` rows, slowest first, once the run ends. */
export default async function* testTimes(source) {
  const rows = new Map();
  let current;
  let started = 0;
  const close = (now) => {
    if (current) rows.get(current).wall = now - started;
  };
  for await (const event of source) {
    const { file, name, nesting, details } = event.data ?? {};
    if (event.type === 'test:dequeue' && nesting === 0 && file && name === file && !rows.has(file)) {
      // The runner announces each file as a nesting-0 test named by its path when it starts the file's process.
      const now = Date.now();
      close(now);
      current = file;
      started = now;
      rows.set(file, { wall: 0, tests: 0 });
    } else if ((event.type === 'test:pass' || event.type === 'test:fail') && nesting === 0 && file && name !== file) {
      const row = rows.get(file);
      if (row) row.tests += details?.duration_ms ?? 0;
    }
  }
  close(Date.now());
  const cwd = `${process.cwd()}/`;
  const ranked = [...rows].sort((a, b) => b[1].wall - a[1].wall);
  for (const [file, { wall, tests }] of ranked)
    yield `${Math.round(wall)}\t${Math.round(tests)}\t${file.startsWith(cwd) ? file.slice(cwd.length) : file}\n`;
}
