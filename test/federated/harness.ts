// A real federation on this machine, for the end-to-end test and the comparison in docs/federated.md: a Flower
// SuperLink (`flower-superlink --insecure`, loopback, a free port, a private FLWR_HOME), the ServerApp of
// interop/flower_app submitted with `flwr run`, and lorakit clients (runLoraClient, in this process) on non-IID
// splits of Brown-corpus fiction: each client holds other genres, and evaluates on held-out files of its genres.
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, existsSync, openSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
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

/** Runs one whole federation; every process it starts is stopped before it returns. */
export async function runFederation(o: FederationOptions): Promise<FederationResult> {
  const started = Date.now();
  const configs = await writeClients(o);
  const port = await freePort();
  const home = join(o.dir, 'flwr-home');
  await mkdir(home, { recursive: true });
  await writeFile(
    join(home, 'config.toml'),
    `[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = "127.0.0.1:${port}"\ninsecure = true\n`,
  );
  const bin = join(FLOWER_VENV, 'bin');
  // one BLAS thread: the ServerApp's small products gain nothing from more, and they thrash a busy machine
  const env = { ...process.env, FLWR_HOME: home, PATH: `${bin}:${process.env.PATH}`, OPENBLAS_NUM_THREADS: '1' };
  const superlink = start(
    join(bin, 'flower-superlink'),
    ['--insecure', '--host', '127.0.0.1', '--port', String(port), '--disable-runtime-dependency-installation'],
    env,
    join(o.dir, 'superlink.log'),
  );
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitFor(
      () =>
        fetch(`${url}/v1/fleet/pull-messages`, { method: 'POST' }).then(
          () => true,
          () => false,
        ),
      60,
      'the SuperLink to listen',
    );
    const resultFile = join(o.dir, `result-${o.strategy}.json`);
    const runConfig = [
      `strategy="${o.strategy}"`,
      `num-server-rounds=${o.rounds}`,
      `min-nodes=${configs.length}`,
      `local-steps=${o.localSteps}`,
      `lr=${o.lr}`,
      'round-timeout=300.0',
      `result-file="${resultFile}"`,
    ].join(' ');
    const submit = start(
      join(bin, 'flwr'),
      ['run', resolve('interop/flower_app'), 'local', '--run-config', runConfig],
      env,
      join(o.dir, 'flwr-run.log'),
    );
    await new Promise((ok) => submit.on('exit', ok));
    if (submit.exitCode !== 0) throw new Error(`flwr run failed: see ${join(o.dir, 'flwr-run.log')}`);
    const clients = await Promise.all(
      configs.map((file, i) =>
        runLoraClient({
          superlink: url,
          config: loadRunConfig(file),
          pollMs: 200,
          log: o.log && ((line) => o.log!(`client ${i}: ${line}`)),
        }),
      ),
    );
    await waitFor(
      () =>
        readFile(resultFile).then(
          () => true,
          () => false,
        ),
      60,
      resultFile,
    );
    const result = JSON.parse(await readFile(resultFile, 'utf8'));
    return { history: result.history, clients, seconds: (Date.now() - started) / 1000 };
  } finally {
    superlink.kill('SIGTERM');
    await new Promise((ok) => (superlink.exitCode !== null ? ok(null) : superlink.on('exit', ok)));
  }
}
