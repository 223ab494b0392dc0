/**
 * What the two benchmark commands share: command-line options, running one workload in a child process (lorakit
 * or PEFT) and reading its RESULT line, the machine description, and printing aligned tables.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { type Options, type Workload, loraConfig } from './workloads.ts';
import { ensureModel } from './models.ts';

export const ROOT = join(import.meta.dirname, '..');
export const RESULTS = join(ROOT, 'bench', 'results');

export interface CliOptions extends Options {
  /** Regex over workload ids. */
  only: RegExp | null;
  /** lorakit compile options (JSON), for experiments. */
  compile: Record<string, unknown> | undefined;
  /** Where to write the JSON (default: bench/results/<name>.json). */
  out: string | null;
  /** Runs of each workload (per side); the best of them is reported. */
  repeat: number;
}

const HELP = `options:
  --steps N        timed steps per workload (default 3)      --warmup N   untimed steps after the first (default 1)
  --batch N        rows per training step (default 4)        --seq N      tokens per row (default 256)
  --rank N         LoRA rank (default 16)                    --new-tokens N  generated tokens per row (default 32)
  --threads N      intra-op threads (default: all cores)     --only REGEX    workloads whose id matches
  --compile JSON   extra lorakit compile options, e.g. '{"optimization":"basic"}'
  --peft-attn sdpa|eager  transformers' attention for the PEFT side (default sdpa, transformers' default)
  --malloc retain|glibc   both sides' glibc malloc told to keep freed memory (default), or as it comes
                   (workloads.ts Malloc says why)
  --repeat N       runs of each workload per side, best reported (default 1): other jobs on a shared machine
                   only ever slow a run down
  --quick          tiny shapes for a smoke test (batch 1, seq 32, 1 step)
  --out PATH       write the JSON here instead of bench/results/`;

/** Parses argv (after the script name). */
export function parseArgs(argv: string[]): CliOptions {
  const o: CliOptions = {
    steps: 3,
    warmup: 1,
    batch: 4,
    seq: 256,
    rank: 16,
    newTokens: 32,
    threads: availableParallelism(),
    only: null,
    compile: undefined,
    out: null,
    repeat: 1,
    peftAttention: 'sdpa',
    malloc: 'retain',
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value\n${HELP}`);
      return v;
    };
    const num = () => {
      const v = Number(next());
      if (!Number.isInteger(v) || v < 0) throw new Error(`${a}: expected a non-negative integer\n${HELP}`);
      return v;
    };
    switch (a) {
      case '--steps':
        o.steps = num();
        break;
      case '--warmup':
        o.warmup = num();
        break;
      case '--batch':
        o.batch = num();
        break;
      case '--seq':
        o.seq = num();
        break;
      case '--rank':
        o.rank = num();
        break;
      case '--new-tokens':
        o.newTokens = num();
        break;
      case '--threads':
        o.threads = num();
        break;
      case '--only':
        o.only = new RegExp(next());
        break;
      case '--compile':
        o.compile = JSON.parse(next());
        break;
      case '--peft-attn': {
        const v = next();
        if (v !== 'sdpa' && v !== 'eager') throw new Error(`--peft-attn: expected sdpa or eager\n${HELP}`);
        o.peftAttention = v;
        break;
      }
      case '--malloc': {
        const v = next();
        if (v !== 'retain' && v !== 'glibc') throw new Error(`--malloc: expected retain or glibc\n${HELP}`);
        o.malloc = v;
        break;
      }
      case '--out':
        o.out = next();
        break;
      case '--repeat':
        o.repeat = Math.max(1, num());
        break;
      case '--quick':
        Object.assign(o, { batch: 1, seq: 32, steps: 1, warmup: 0, newTokens: 4 });
        break;
      case '--help':
      case '-h':
        console.log(HELP);
        return process.exit(0);
      default:
        throw new Error(`unknown option ${a}\n${HELP}`);
    }
  }
  return o;
}

export interface Machine {
  cpu: string;
  cores: number;
  loadBefore: number[];
}

export function machine(): Machine {
  return {
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: availableParallelism(),
    loadBefore: loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

export type Result = Record<string, any> & { id: string; side: 'lorakit' | 'peft'; load1: number };

/** glibc's malloc never mmaps and never trims: freed memory is kept for the next malloc (workloads.ts Malloc). */
const RETAIN = 'glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184';

/** The environment of a workload's child: its allocator setting, then `env`. */
function childEnv(w: Workload, env?: Record<string, string>): NodeJS.ProcessEnv {
  if (w.malloc === 'glibc') return { ...process.env, ...env };
  const tunables = [process.env.GLIBC_TUNABLES, RETAIN].filter(Boolean).join(':');
  return { ...process.env, GLIBC_TUNABLES: tunables, ...env };
}

/** Runs a command, returning its RESULT line as an object; throws with the output tail on failure. */
function runChild(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<Record<string, any>> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env });
    let out = '',
      err = '';
    p.stdout.on('data', (d) => {
      out += d;
    });
    p.stderr.on('data', (d) => {
      err += d;
    });
    p.on('close', (code) => {
      const line = out.split('\n').find((l) => l.startsWith('RESULT '));
      if (code === 0 && line) resolve(JSON.parse(line.slice(7)));
      else
        reject(new Error(`${cmd} ${args.slice(0, -1).join(' ')} failed (exit ${code}):\n${(out + err).slice(-3000)}`));
    });
  });
}

/** One lorakit workload in a fresh Node process (`env` adds to its environment, e.g. its own LORAKIT_CACHE). */
export async function runLorakit(w: Workload, env?: Record<string, string>): Promise<Result> {
  const load1 = loadavg()[0];
  const args = ['--import', 'tsx', join('bench', 'lorakit.ts'), JSON.stringify(w)];
  const r = await runChild(process.execPath, args, childEnv(w, env));
  return { ...r, id: w.id, side: 'lorakit', load1 } as Result;
}

export const PYTHON = join(ROOT, 'interop', '.venv', 'bin', 'python');

/** Creates interop/.venv with interop/setup.sh when it is missing. */
export async function ensureVenv(): Promise<void> {
  if (existsSync(PYTHON)) return;
  console.log('creating interop/.venv (interop/setup.sh) ...');
  await new Promise<void>((resolve, reject) => {
    const p = spawn('bash', [join(ROOT, 'interop', 'setup.sh')], { cwd: ROOT, stdio: 'inherit' });
    p.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`interop/setup.sh failed (exit ${code})`))));
  });
}

/** One PEFT workload in a fresh Python process (same spec plus the model folder and the adapter config). */
export async function runPeft(w: Workload): Promise<Result> {
  const load1 = loadavg()[0];
  const spec = { ...w, dir: await ensureModel(w.model), lora: loraConfig(w) };
  const r = await runChild(PYTHON, [join('interop', 'bench_peft.py'), JSON.stringify(spec)], childEnv(w));
  return { ...r, id: w.id, side: 'peft', load1 } as Result;
}

/** Formats rows of cells as an aligned text table (first row: header). */
export function table(rows: (string | number)[][]): string {
  const cells = rows.map((r) => r.map((c) => (typeof c === 'number' ? fmt(c) : c)));
  const widths = cells[0].map((_, j) => Math.max(...cells.map((r) => r[j].length)));
  return cells
    .map((r, i) => {
      const line = r.map((c, j) => (j === 0 ? c.padEnd(widths[j]) : c.padStart(widths[j]))).join('  ');
      return i === 0 ? `${line}\n${widths.map((w) => '-'.repeat(w)).join('  ')}` : line;
    })
    .join('\n');
}

/** Three significant digits, no exponent. */
export function fmt(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  const a = Math.abs(x);
  return a >= 100 ? x.toFixed(0) : a >= 10 ? x.toFixed(1) : a >= 1 ? x.toFixed(2) : x.toFixed(3);
}

export function readJson(path: string): any {
  return JSON.parse(readFileSync(path, 'utf8'));
}

const HIGHER = ['tokensPerSec', 'prefillTokensPerSec', 'decodeTokensPerSec', 'gflops'];
const LOWER = ['msPerStep', 'timeToFirstStepMs', 'compileMs', 'peakRssMb'];

/** The best of repeated runs of one workload on one side, field by field; `runs` keeps them all. */
export function bestOf(runs: Result[]): Result {
  const best: Result = {
    ...runs[0],
    runs: runs.length > 1 ? runs : undefined,
    load1: Math.min(...runs.map((r) => r.load1)),
  };
  for (const k of HIGHER) if (runs[0][k] !== undefined) best[k] = Math.max(...runs.map((r) => r[k]));
  for (const k of LOWER) if (runs[0][k] !== undefined) best[k] = Math.min(...runs.map((r) => r[k]));
  return best;
}

/** One reported quantity of a workload. `higher`: larger is better (throughput); else smaller is (memory, time). */
export interface Metric {
  name: string;
  unit: string;
  value: number;
  higher: boolean;
}

/** The quantities of a workload result; MFU against the machine's measured MatMul peak (GFLOP/s). */
export function metricsOf(r: Result, peakGflops: number | null): Metric[] {
  const m: Metric[] = [];
  if (r.tokensPerSec !== undefined) {
    m.push({ name: 'tokens/s', unit: 'tok/s', value: r.tokensPerSec, higher: true });
    m.push({ name: 'ms/step', unit: 'ms', value: r.msPerStep, higher: false });
    m.push({ name: 'time to first step', unit: 's', value: r.timeToFirstStepMs / 1000, higher: false });
    if (r.gflops !== undefined && peakGflops)
      m.push({ name: 'MFU', unit: '%', value: (100 * r.gflops) / peakGflops, higher: true });
  }
  if (r.prefillTokensPerSec !== undefined) {
    m.push({ name: 'prefill tokens/s', unit: 'tok/s', value: r.prefillTokensPerSec, higher: true });
    m.push({ name: 'decode tokens/s', unit: 'tok/s', value: r.decodeTokensPerSec, higher: true });
  }
  if (r.id.startsWith('matmul')) m.push({ name: 'fp32 MatMul', unit: 'GFLOP/s', value: r.gflops, higher: true });
  else if (r.id.startsWith('gemm')) m.push({ name: 'step GEMM mix', unit: 'GFLOP/s', value: r.gflops, higher: true });
  else m.push({ name: 'peak RSS', unit: 'MB', value: r.peakRssMb, higher: false });
  return m;
}
