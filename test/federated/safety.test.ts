// A federation's failure modes on a real Flower 1.42 SuperLink (loopback, TLS with a throwaway CA, node
// authentication on): registered node keys join; an unregistered key is refused with LK_NODE_NOT_REGISTERED; a client
// killed (SIGKILL) after it pulled round 1's train message and before it replied does not stall the round, which
// completes with the other two within round-timeout; the client restarted with the same --key rejoins as the same
// node and takes part in round 2. The clients are `lorakit fl-client` processes (NODE_EXTRA_CA_CERTS trusts the CA).
// Skips without interop/.venv-flower or openssl.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { test } from 'node:test';
import { loadOrCreateIdentity } from '../../src/federated/index.ts';
import { flwr, noFlower, noOpenssl, readResult, startSuperLink, submitRun, writeClients } from './harness.ts';

const ROUND_TIMEOUT = 60;
/** Clients' heartbeat interval (s): flwr 1.42 gives up on a silent node after 2 intervals, and only then may the
 * restarted process activate the same node. */
const HEARTBEAT = 10; // flwr 1.42 accepts 10–1800 s

/** A `lorakit fl-client` process; `lines` collects its output, `exited` resolves with its exit code. */
function client(url: string, config: string, key: string, ca: string) {
  const p: ChildProcess = spawn(
    process.execPath,
    [
      resolve('bin/lorakit.mjs'),
      'fl-client',
      '--superlink',
      url,
      '--config',
      config,
      '--key',
      key,
      '--heartbeat',
      String(HEARTBEAT),
    ],
    { env: { ...process.env, NODE_EXTRA_CA_CERTS: ca }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const lines: string[] = [];
  const waiters: { re: RegExp; ok: (m: RegExpMatchArray) => void }[] = [];
  const feed = (chunk: Buffer) => {
    for (const line of chunk.toString().split('\n').filter(Boolean)) {
      lines.push(line);
      for (const w of waiters.splice(0)) {
        const m = line.match(w.re);
        if (m) w.ok(m);
        else waiters.push(w);
      }
    }
  };
  p.stdout!.on('data', feed);
  p.stderr!.on('data', feed);
  const exited = new Promise<number | null>((ok) => p.on('exit', (code) => ok(code)));
  /** The first line (already seen or to come) matching `re`; rejects when the process exits without one. */
  const waitLine = (re: RegExp) =>
    new Promise<RegExpMatchArray>((ok, fail) => {
      const seen = lines.map((l) => l.match(re)).find(Boolean);
      if (seen) return ok(seen);
      waiters.push({ re, ok });
      exited.then((code) =>
        fail(new Error(`exited (${code}) before a line matched ${re}:\n${lines.slice(-8).join('\n')}`)),
      );
    });
  return { p, lines, exited, waitLine };
}

test('node auth and a mid-round kill: registered keys join, an unregistered one is refused, a killed client does not stall its round and rejoins with its key', {
  skip: noFlower ?? noOpenssl ?? false,
  timeout: 900_000,
}, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'lorakit-fl-safety-'));
  const o = { dir, strategy: 'fedavg' as const, rounds: 2, localSteps: 2, lr: 1e-2, rank: 4, batch: 4, seqLen: 64 };
  const configs = await writeClients({ ...o, trainBytes: 20_000, evalBytes: 1_000 });
  const sl = await startSuperLink(dir, { auth: true });
  const procs: ReturnType<typeof client>[] = [];
  try {
    const keys = configs.map((_, i) => join(dir, `node-${i}.pem`));
    for (const k of keys) {
      await loadOrCreateIdentity(k);
      await flwr(sl, ['supernode', 'register', `${k}.pub`, 'local'], 'register.log');
    }
    // an unregistered key: refused once activation has been retried for 2 heartbeat intervals (checked at the end)
    const intruder = client(sl.url, configs[0], join(dir, 'intruder.pem'), sl.ca!);
    procs.push(intruder);
    const resultFile = await submitRun(sl, {
      strategy: '"fedavg"',
      'num-server-rounds': '2',
      'min-nodes': '3',
      'local-steps': String(o.localSteps),
      lr: o.lr.toExponential(),
      'round-timeout': `${ROUND_TIMEOUT}.0`,
    });
    const clients = configs.map((c, i) => client(sl.url, c, keys[i], sl.ca!));
    procs.push(...clients);
    const ids = await Promise.all(clients.map(async (c) => (await c.waitLine(/node (\d+) active/))[1]));
    // kill client 2 once it has pulled round 1's train message, before it can reply
    await clients[2].waitLine(/round 1 train: started/);
    clients[2].p.kill('SIGKILL');
    assert.equal(await clients[2].exited, null); // killed by the signal
    const again = client(sl.url, configs[2], keys[2], sl.ca!);
    procs.push(again);
    assert.equal((await again.waitLine(/node (\d+) active/))[1], ids[2]); // the same key is the same node
    for (const c of [clients[0], clients[1], again]) assert.equal(await c.exited, 0, c.lines.slice(-5).join('\n'));
    const history = (await readResult(resultFile)) as (Awaited<ReturnType<typeof readResult>>[number] & {
      nodes: string[];
      seconds: number;
    })[];
    const [r1, r2] = [history[1], history[2]];
    assert.deepEqual(r1.nodes.sort(), [ids[0], ids[1]].sort(), JSON.stringify(history));
    // the round did not wait for the dead client past round-timeout (Flower reports it unavailable sooner: after
    // 2 missed heartbeat intervals)
    assert.ok(r1.seconds < ROUND_TIMEOUT + 30, `round 1 took ${r1.seconds} s`);
    assert.deepEqual(r2.nodes.sort(), [...ids].sort(), JSON.stringify(history));
    assert.ok(history.every((h) => typeof h.eval_loss === 'number' && Number.isFinite(h.eval_loss)));
    assert.match(again.lines.join('\n'), /round 2 train: 2 steps/);
    assert.equal(await intruder.exited, 1);
    assert.match(intruder.lines.join('\n'), /not registered.*flwr supernode register.*\[LK_NODE_NOT_REGISTERED\]/s);
  } finally {
    for (const c of procs) if (c.p.exitCode === null && c.p.signalCode === null) c.p.kill('SIGKILL');
    await sl.stop();
    await rm(dir, { recursive: true, force: true });
  }
});
