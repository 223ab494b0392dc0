// kill -9 safety: a child process trains with a checkpoint after every step and is killed with SIGKILL at random
// moments. After each kill every visible checkpoint loads complete, `latest` names the newest, and the next child
// resumes right after it; the run finished through five kills ends bit-identical to an uninterrupted one.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { shutdownRuntime } from '../../src/runtime/index.ts';
import { latestCheckpoint, listCheckpoints, loadCheckpoint, train } from '../../src/train/index.ts';
import { rng } from '../helpers.ts';
import { killRunOptions, paramBytes, regressionTask } from './fixtures/tasks.ts';

after(() => shutdownRuntime());
const STEPS = 200,
  KILLS = 5;
const child = new URL('./fixtures/kill-child.ts', import.meta.url).pathname;

function start(dir: string): {
  proc: ChildProcess;
  lines: string[];
  waitFor: (re: RegExp) => Promise<string>;
  exit: Promise<number | null>;
} {
  const proc = spawn(process.execPath, ['--import', 'tsx', child, dir, String(STEPS)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  let stderr = '',
    buf = '';
  const waiters: { re: RegExp; resolve: (l: string) => void }[] = [];
  proc.stdout!.on('data', (d) => {
    buf += d;
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      lines.push(line);
      for (const w of waiters.splice(0))
        if (w.re.test(line)) w.resolve(line);
        else waiters.push(w);
    }
  });
  proc.stderr!.on('data', (d) => {
    stderr += d;
  });
  const exit = new Promise<number | null>((resolve) => proc.on('close', (code) => resolve(code))); // after stdout is drained
  const waitFor = (re: RegExp) => {
    const seen = lines.find((l) => re.test(l));
    if (seen) return Promise.resolve(seen);
    return Promise.race([
      new Promise<string>((resolve) => waiters.push({ re, resolve })),
      exit.then((code) => {
        throw new Error(`child exited (${code}) before printing ${re}; stderr:\n${stderr}`);
      }),
    ]);
  };
  return { proc, lines, waitFor, exit };
}

test(`SIGKILL at ${KILLS} random moments never exposes a half-written checkpoint, and resuming reaches the ` +
  `uninterrupted result`, {
  timeout: 120_000,
}, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'lorakit-kill-'));
  const random = rng(20240611);
  let lastStep = 0;
  for (let k = 0; k < KILLS; k++) {
    const c = start(dir);
    const resumed = Number((await c.waitFor(/^resumed \d+$/)).split(' ')[1]);
    assert.equal(
      resumed,
      lastStep,
      `child ${k + 1} resumed after step ${resumed}, the latest checkpoint was step ${lastStep}`,
    );
    if (k === 0) await c.waitFor(/^step 2$/); // checkpoint-1 exists from here on
    await sleep(random() * 250);
    c.proc.kill('SIGKILL');
    await c.exit;
    const printed = c.lines.filter((l) => l.startsWith('step ')).length;
    assert.ok(printed < STEPS - lastStep, 'the child must be killed before it finishes');

    const latest = await latestCheckpoint(dir);
    assert.ok(latest, `no latest checkpoint after kill ${k + 1}`);
    const ck = await loadCheckpoint(latest);
    assert.ok(ck.state.step >= lastStep, `latest went back from ${lastStep} to ${ck.state.step}`);
    assert.ok(ck.state.step <= lastStep + printed, 'latest is not ahead of the steps taken');
    assert.equal(ck.state.history.length, ck.state.step);
    for (const { name, step } of await listCheckpoints(dir)) {
      const other = await loadCheckpoint(join(dir, name)); // every visible folder is complete
      assert.equal(other.state.step, step);
    }
    const midWrite = readdirSync(dir).filter((n) => n.startsWith('.tmp-'));
    t.diagnostic(
      `kill ${k + 1}: after ${printed} steps, latest ` +
        `${ck.state.step}${midWrite.length ? `, caught mid-write (${midWrite.join(', ')})` : ''}`,
    );
    lastStep = ck.state.step;
  }
  const last = start(dir);
  assert.equal(await last.exit, 0);
  assert.equal(last.lines.at(-1), 'done');
  assert.ok(!readdirSync(dir).some((n) => n.startsWith('.')), `leftover temp folders: ${readdirSync(dir).join(', ')}`);
  const resumed = await loadCheckpoint((await latestCheckpoint(dir))!);
  assert.equal(resumed.state.step, STEPS);

  const ref = await train(regressionTask(), {
    ...killRunOptions(mkdtempSync(join(tmpdir(), 'lorakit-kill-ref-')), STEPS),
    checkpointEvery: undefined,
    keepCheckpoints: undefined,
  });
  assert.deepEqual(
    paramBytes(resumed.params),
    paramBytes(ref.params),
    'final params after 5 kills = uninterrupted run, bit for bit',
  );
  assert.deepEqual(
    resumed.state.history.map((h) => h.loss),
    ref.history.map((h) => h.loss),
  );
});
