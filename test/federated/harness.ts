// A real federation on this machine, for the end-to-end test and the comparison in docs/federated.md: a Flower
// SuperLink (`flower-superlink --insecure`, loopback, a free port, a private FLWR_HOME), the ServerApp of
// interop/flower_app submitted with `flwr run`, and lorakit clients (runLoraClient, in this process) on non-IID
// splits of Brown-corpus fiction: each client holds other genres, and evaluates on held-out files of its genres.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, openSync, writeFileSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { readBrown, splitBrown } from '../../src/demo/brown.ts';
import { DEMO_BASE_DIR } from '../../src/demo/base.ts';
import { type LoraClientResult, runLoraClient } from '../../src/federated/index.ts';
import { loadRunConfig } from '../../src/train/index.ts';

/** The venv that holds flwr 1.42 (interop/requirements-flower.txt). */
export const FLOWER_VENV = resolve('interop/.venv-flower');
/** Why the federation cannot run here, or null. */
export const noFlower: string | null = existsSync(join(FLOWER_VENV, 'bin', 'flower-superlink'))
  ? null
  : `interop/.venv-flower is absent (python3 -m venv interop/.venv-flower && ` +
    `interop/.venv-flower/bin/pip install -r interop/requirements-flower.txt)`;

/** Genres of each client (non-IID: no genre is shared). */
export const CLIENT_GENRES = [
  ['fiction', 'romance'],
  ['mystery', 'adventure'],
  ['science_fiction', 'humor'],
];

/** Options of one federation. */
export interface FederationOptions {
  dir: string;
  strategy: 'fedavg' | 'ffa' | 'fair' | 'fedsmooth';
  rounds: number;
  localSteps: number;
  lr: number;
  rank?: number;
  /** Modules the LoRA wraps (default q_proj and v_proj). */
  targets?: string[];
  /** Training bytes per client (default 60 000) and held-out bytes (default 8 000). */
  trainBytes?: number;
  evalBytes?: number;
  seqLen?: number;
  batch?: number;
  log?: (line: string) => void;
}

/** What the ServerApp wrote: one entry per round, round 0 before training. */
export interface FederationResult {
  history: {
    round: number;
    eval_loss: number | null;
    bytes_down: number;
    bytes_up: number;
    clients: number;
    lora_modules?: number;
  }[];
  clients: LoraClientResult[];
  seconds: number;
}

async function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => ok(port));
    });
    s.on('error', fail);
  });
}

/** Writes each client's train.txt, eval.txt and run.yaml under `dir`; returns the run.yaml paths. */
export async function writeClients(o: FederationOptions): Promise<string[]> {
  const fiction = splitBrown(readBrown({ side: 'fiction' }), 'fiction');
  const paths: string[] = [];
  for (const [i, genres] of CLIENT_GENRES.entries()) {
    const dir = join(o.dir, `client-${i}`);
    await mkdir(dir, { recursive: true });
    const text = (files: typeof fiction.train, bytes: number) =>
      files
        .filter((f) => genres.includes(f.genre))
        .map((f) => f.text)
        .join('\n\n')
        .slice(0, bytes);
    await writeFile(join(dir, 'train.txt'), text(fiction.train, o.trainBytes ?? 60_000));
    await writeFile(join(dir, 'eval.txt'), text(fiction.heldOut, o.evalBytes ?? 8_000));
    const yaml = [
      `model: ${DEMO_BASE_DIR}`,
      `output_dir: ${join(dir, 'out')}`,
      'data:',
      `  path: ${join(dir, 'train.txt')}`,
      `  validation_file: ${join(dir, 'eval.txt')}`,
      `  seq_len: ${o.seqLen ?? 128}`,
      '  cache_dir: false',
      'adapter:',
      '  peft_type: LORA',
      `  r: ${o.rank ?? 8}`,
      `  lora_alpha: ${2 * (o.rank ?? 8)}`,
      `  target_modules: [${(o.targets ?? ['q_proj', 'v_proj']).join(', ')}]`,
      'training:',
      `  per_device_train_batch_size: ${o.batch ?? 8}`,
      '',
    ].join('\n');
    await writeFile(join(dir, 'run.yaml'), yaml);
    paths.push(join(dir, 'run.yaml'));
  }
  return paths;
}

/** Whether something accepts TCP connections on loopback `port` (a TLS server too, unlike a plain fetch). */
function listening(port: number): Promise<boolean> {
  return new Promise((ok) => {
    const c = connect(port, '127.0.0.1', () => {
      c.destroy();
      ok(true);
    });
    c.on('error', () => ok(false));
  });
}

function start(cmd: string, args: string[], env: NodeJS.ProcessEnv, logFile: string): ChildProcess {
  const log = openSync(logFile, 'w');
  const p = spawn(cmd, args, { env, stdio: ['ignore', log, log] });
  closeSync(log);
  return p;
}

async function waitFor(ok: () => Promise<boolean>, seconds: number, what: string): Promise<void> {
  const end = Date.now() + seconds * 1000;
  while (Date.now() < end) {
    if (await ok()) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out after ${seconds} s waiting for ${what}`);
}

/** A running SuperLink on loopback, with the environment and FLWR_HOME that `flwr` commands against it need. */
export interface SuperLink {
  url: string;
  env: NodeJS.ProcessEnv;
  dir: string;
  /** Stops the SuperLink (and the ServerApp processes it started). */
  stop(): Promise<void>;
}

/** A throwaway CA and a server certificate for 127.0.0.1 it signed (PEM files under `dir`), made with openssl. */
export function makeTls(dir: string): { ca: string; cert: string; key: string } {
  const f = (n: string) => join(dir, n);
  const run = (args: string[]) => {
    const r = spawnSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    if (r.status !== 0) throw new Error(`openssl ${args[0]} failed: ${r.stderr}`);
  };
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  run([
    'req',
    '-x509',
    ...ec,
    '-keyout',
    f('ca.key'),
    '-out',
    f('ca.pem'),
    '-days',
    '1',
    '-subj',
    '/CN=lorakit test CA',
  ]);
  run(['req', ...ec, '-keyout', f('server.key'), '-out', f('server.csr'), '-subj', '/CN=127.0.0.1']);
  writeFileSync(f('san.ext'), 'subjectAltName=IP:127.0.0.1\n');
  run(
    ['x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial'].concat([
      '-out',
      f('server.pem'),
      '-days',
      '1',
      '-extfile',
      f('san.ext'),
    ]),
  );
  return { ca: f('ca.pem'), cert: f('server.pem'), key: f('server.key') };
}

/** Whether openssl is on PATH (the authenticated federation needs TLS). */
export const noOpenssl: string | null =
  spawnSync('openssl', ['version']).status === 0 ? null : 'openssl is absent (node authentication needs TLS)';

/**
 * Starts `flower-superlink` on a free loopback port: `--insecure`, or with `auth` over TLS (flwr refuses
 * --enable-supernode-auth without it) with --enable-supernode-auth; `url` is then https and clients must trust `ca`.
 */
export async function startSuperLink(dir: string, opts: { auth?: boolean } = {}): Promise<SuperLink & { ca?: string }> {
  const port = await freePort();
  const home = join(dir, 'flwr-home');
  await mkdir(home, { recursive: true });
  const tls = opts.auth ? makeTls(dir) : null;
  const trust = tls ? `root-certificates = "${tls.ca}"` : 'insecure = true';
  await writeFile(
    join(home, 'config.toml'),
    `[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = "127.0.0.1:${port}"\n${trust}\n`,
  );
  const bin = join(FLOWER_VENV, 'bin');
  // one BLAS thread: the ServerApp's small products gain nothing from more, and they thrash a busy machine
  const env = { ...process.env, FLWR_HOME: home, PATH: `${bin}:${process.env.PATH}`, OPENBLAS_NUM_THREADS: '1' };
  const args = ['--host', '127.0.0.1', '--port', String(port), '--disable-runtime-dependency-installation'];
  if (tls) {
    args.push('--enable-supernode-auth', '--ssl-ca-certfile', tls.ca, '--ssl-certfile', tls.cert);
    args.push('--ssl-keyfile', tls.key);
  } else args.push('--insecure');
  const p = start(join(bin, 'flower-superlink'), args, env, join(dir, 'superlink.log'));
  const url = `${tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  const stop = async () => {
    p.kill('SIGTERM');
    await new Promise((ok) => (p.exitCode !== null || p.signalCode !== null ? ok(null) : p.on('exit', ok)));
  };
  try {
    await waitFor(async () => p.exitCode !== null || (await listening(port)), 60, 'the SuperLink to listen');
    if (p.exitCode !== null)
      throw new Error(`the SuperLink exited: ${await readFile(join(dir, 'superlink.log'), 'utf8')}`);
  } catch (e) {
    await stop();
    throw e;
  }
  return { url, env, dir, stop, ca: tls?.ca };
}

/** Runs a `flwr` command against the SuperLink; throws with its log when it fails. */
export async function flwr(sl: SuperLink, args: string[], logName: string): Promise<void> {
  const log = join(sl.dir, logName);
  const p = start(join(FLOWER_VENV, 'bin', 'flwr'), args, sl.env, log);
  await new Promise((ok) => p.on('exit', ok));
  if (p.exitCode !== 0) throw new Error(`flwr ${args.join(' ')} failed: ${await readFile(log, 'utf8')}`);
}

/**
 * Submits the ServerApp of interop/flower_app with run-config values as TOML literals (`'"fedavg"'`, `'300.0'`:
 * Flower checks each against its default's type); returns the file its history will be written to.
 */
export async function submitRun(sl: SuperLink, config: Record<string, string>): Promise<string> {
  const resultFile = join(sl.dir, `result-${Date.now()}.json`);
  const runConfig = Object.entries({ ...config, 'result-file': JSON.stringify(resultFile) })
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
  await flwr(sl, ['run', resolve('interop/flower_app'), 'local', '--run-config', runConfig], 'flwr-run.log');
  return resultFile;
}

/** The ServerApp's history once it has written it. */
export async function readResult(resultFile: string, seconds = 60): Promise<FederationResult['history']> {
  await waitFor(
    () =>
      readFile(resultFile).then(
        () => true,
        () => false,
      ),
    seconds,
    resultFile,
  );
  return JSON.parse(await readFile(resultFile, 'utf8')).history;
}

/** Runs one whole federation; every process it starts is stopped before it returns. */
export async function runFederation(o: FederationOptions): Promise<FederationResult> {
  const started = Date.now();
  const configs = await writeClients(o);
  const sl = await startSuperLink(o.dir);
  try {
    const resultFile = await submitRun(sl, {
      strategy: JSON.stringify(o.strategy),
      'num-server-rounds': String(o.rounds),
      'min-nodes': String(configs.length),
      'local-steps': String(o.localSteps),
      lr: o.lr.toExponential(),
      'round-timeout': '300.0',
    });
    const clients = await Promise.all(
      configs.map((file, i) =>
        runLoraClient({
          superlink: sl.url,
          config: loadRunConfig(file),
          pollMs: 200,
          log: o.log && ((line) => o.log!(`client ${i}: ${line}`)),
        }),
      ),
    );
    return { history: await readResult(resultFile), clients, seconds: (Date.now() - started) / 1000 };
  } finally {
    await sl.stop();
  }
}
