/**
 * `lorakit serve` against llama.cpp's own server (`llama-server`) on the real SmolLM2-135M-Instruct GGUF (Q4_1, from
 * ../shared/data) with one LoRA adapter: the same PEFT adapter folder for lorakit, and its GGUF export
 * (`lorakit export --format gguf`) for llama.cpp's `--lora`. One run starts each server in turn (never both at once,
 * so neither takes the other's cores), sends both the same chat requests, greedy, `ignore_eos`, the same max_tokens,
 * streamed, and prints one table:
 *   - time to first token (request sent → first streamed content), median over the requests;
 *   - decode tokens/s at 1 and several concurrent requests = Σ (tokens − 1) / (last token − first token) of the wave,
 *     best of --repeat waves;
 *   - peak and final RSS of the server process (VmHWM / VmRSS), the load average before and after each side;
 *   - how many of the greedy completions at concurrency 1 are the same text on both sides.
 * Not here: llama.cpp's build (bench/RESULTS.md "Serving" gives the exact flags) or the adapter's training
 * (examples/smollm2-chat). Writes bench/results/serve-llamacpp.json.
 *   node --import tsx bench/serve-llamacpp.ts --llama-server /path/to/llama-server --adapter <PEFT dir>
 *     [--concurrency 1,4,8] [--new-tokens 64] [--repeat 2] [--threads 2] [--only lorakit]
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';

const GGUF = '../shared/data/models/smollm2-135m-instruct-q4_1/SmolLM2-135M-Instruct.Q4_1.gguf';
const PROMPTS = [
  'Give three tips for staying healthy.',
  'Explain what a hash table is in two sentences.',
  'Write a short poem about the sea.',
  'What is the capital of France, and why is it famous?',
  'Suggest a name for a bakery.',
  'Summarize the plot of Romeo and Juliet.',
  'List four uses of a paperclip.',
  'How do plants make their food?',
];
const arg = (name: string, d?: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : d;
};

/** One streamed completion: when it was sent, its first content token, its end, its text and token count. */
interface Done {
  sentMs: number;
  firstMs: number;
  endMs: number;
  text: string;
  tokens: number;
}

/** Sends one streamed chat completion and reads its server-sent events to the end. */
async function request(port: number, model: string, prompt: string, maxTokens: number, extra: object): Promise<Done> {
  const sentMs = performance.now();
  const res = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      model,
      messages: [{ role: 'user', content: prompt }],
      max_tokens: maxTokens,
      temperature: 0,
      ignore_eos: true,
      stream: true,
      stream_options: { include_usage: true },
      ...extra,
    }),
  });
  if (!res.ok || !res.body) throw new Error(`${model} on port ${port}: HTTP ${res.status} ${await res.text()}`);
  let firstMs = 0,
    text = '',
    tokens = 0,
    buf = '';
  const decoder = new TextDecoder();
  for await (const chunk of res.body) {
    buf += decoder.decode(chunk as Uint8Array, { stream: true });
    let nl = buf.indexOf('\n');
    while (nl >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      nl = buf.indexOf('\n');
      if (!line.startsWith('data:') || line === 'data: [DONE]') continue;
      const ev = JSON.parse(line.slice(5));
      const piece: string | undefined = ev.choices?.[0]?.delta?.content;
      if (piece) {
        if (firstMs === 0) firstMs = performance.now(); // the role-only first chunk is not a token
        text += piece;
      }
      if (ev.usage?.completion_tokens) tokens = ev.usage.completion_tokens;
    }
  }
  return { sentMs, firstMs, endMs: performance.now(), text, tokens };
}

/** A wave of `c` concurrent requests: its decode tokens/s and each request's time to first token. */
async function wave(port: number, model: string, c: number, n: number, offset: number, extra: object) {
  const done = await Promise.all(
    Array.from({ length: c }, (_, i) => request(port, model, PROMPTS[(offset + i) % PROMPTS.length], n, extra)),
  );
  const first = Math.min(...done.map((d) => d.firstMs)),
    last = Math.max(...done.map((d) => d.endMs));
  const decoded = done.reduce((a, d) => a + d.tokens - 1, 0);
  return { tokensPerS: (decoded * 1000) / (last - first), ttft: done.map((d) => d.firstMs - d.sentMs), done };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];

/** Peak and current resident memory of a process, MiB (Linux /proc). */
function memory(pid: number): { peakMiB: number; rssMiB: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string) => Number(new RegExp(`${key}:\\s+(\\d+)`).exec(status)?.[1] ?? Number.NaN);
  return { peakMiB: kb('VmHWM') / 1024, rssMiB: kb('VmRSS') / 1024 };
}

async function waitHealthy(port: number, child: ChildProcess, log: string): Promise<number> {
  const t0 = performance.now();
  for (;;) {
    if (child.exitCode !== null) throw new Error(`server on ${port} exited ${child.exitCode}; see ${log}`);
    const ok = await fetch(`http://127.0.0.1:${port}/health`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) return (performance.now() - t0) / 1000;
    if (performance.now() - t0 > 600_000) throw new Error(`server on ${port} not healthy after 600 s; see ${log}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** Starts one server, measures it at every concurrency, stops it. */
async function side(name: string, cmd: string[], port: number, model: string, extra: object, work: string, o: Options) {
  const log = join(work, `${name}.log`);
  const load0 = loadavg()[0];
  const child = spawn(cmd[0], cmd.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  child.stdout?.on('data', (b) => out.push(b));
  child.stderr?.on('data', (b) => out.push(b));
  try {
    const startS = await waitHealthy(port, child, log);
    const idle = memory(child.pid!);
    await wave(port, model, 1, 4, 0, extra); // warm-up: first graph/session runs
    const rows: { c: number; tokensPerS: number; ttftMs: number }[] = [];
    const texts: string[] = [];
    for (const c of o.concurrency) {
      let best = 0;
      const ttft: number[] = [];
      for (let r = 0; r < o.repeat; r++) {
        const w = await wave(port, model, c, o.newTokens, r * c, extra);
        best = Math.max(best, w.tokensPerS);
        ttft.push(...w.ttft);
      }
      rows.push({ c, tokensPerS: best, ttftMs: median(ttft) });
      console.log(`${name}: ${c} concurrent: ${best.toFixed(1)} decode tokens/s, TTFT ${median(ttft).toFixed(0)} ms`);
    }
    for (const p of PROMPTS.slice(0, 4)) texts.push((await request(port, model, p, o.newTokens, extra)).text);
    const mem = memory(child.pid!);
    return { name, startS, idleRssMiB: idle.rssMiB, ...mem, load: [load0, loadavg()[0]], rows, texts };
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    writeFileSync(log, Buffer.concat(out));
  }
}

interface Options {
  concurrency: number[];
  newTokens: number;
  repeat: number;
}

async function main(): Promise<void> {
  const llamaServer = arg('llama-server');
  const adapter = arg('adapter');
  const only = arg('only'); // 'lorakit' checks this script's lorakit side without a llama.cpp build
  if ((!llamaServer && only !== 'lorakit') || !adapter)
    throw new Error('usage: --llama-server <binary> --adapter <PEFT adapter folder> [--only lorakit]');
  if (!existsSync(GGUF)) throw new Error(`${GGUF} is missing (the shared data folder)`);
  const threads = arg('threads', String(cpus().length))!;
  const o: Options = {
    concurrency: arg('concurrency', '1,4,8')!.split(',').map(Number),
    newTokens: Number(arg('new-tokens', '64')),
    repeat: Number(arg('repeat', '2')),
  };
  const maxC = Math.max(...o.concurrency);
  const work = mkdtempSync(join(tmpdir(), 'lorakit-vs-llamacpp-'));
  cpSync(adapter, join(work, 'adapters', 'chat'), { recursive: true });
  const ggufAdapter = join(work, 'chat.gguf');
  const ex = spawnSync(
    process.execPath,
    ['bin/lorakit.mjs', 'export', '--format', 'gguf', '--model', GGUF, '--adapter', adapter, '--out', ggufAdapter],
    { encoding: 'utf8' },
  );
  if (ex.status !== 0) throw new Error(`lorakit export failed: ${ex.stdout}${ex.stderr}`);
  const lorakit = await side(
    'lorakit',
    [process.execPath, 'bin/lorakit.mjs', 'serve', '--model', GGUF, '--adapters', join(work, 'adapters')]
      .concat(['--port', '8931', '--max-model-len', '2048', '--kv-cache-memory', '256', '--max-lora-rank', '16'])
      .concat(['--max-batch', String(Math.max(maxC, 8))]),
    8931,
    'chat',
    {},
    work,
    o,
  );
  if (only === 'lorakit') {
    console.log(JSON.stringify(lorakit));
    rmSync(work, { recursive: true, force: true });
    return;
  }
  const llama = await side(
    'llama.cpp',
    [llamaServer!, '-m', GGUF, '--lora', ggufAdapter, '--port', '8932', '-t', threads, '-tb', threads].concat([
      '-np',
      String(maxC),
      '-c',
      String(512 * maxC),
      '--no-webui',
    ]),
    8932,
    'chat',
    { cache_prompt: false }, // llama-server reuses a cached prompt prefix by default; lorakit has no prefix cache
    work,
    o,
  );
  const same = lorakit.texts.filter((t, i) => t === llama.texts[i]).length;
  const result = {
    date: new Date().toISOString(),
    cpu: cpus()[0]?.model,
    cores: cpus().length,
    model: GGUF,
    adapter,
    new_tokens: o.newTokens,
    repeat: o.repeat,
    sides: [lorakit, llama],
    same_greedy_text: `${same} of ${lorakit.texts.length}`,
  };
  const f = (x: number, d = 0) => x.toFixed(d);
  console.log(`\n| ${o.newTokens} new tokens, greedy, 1 LoRA | lorakit serve | llama-server |`);
  console.log('|---|--:|--:|');
  for (let i = 0; i < o.concurrency.length; i++) {
    const [a, b] = [lorakit.rows[i], llama.rows[i]];
    console.log(`| decode tokens/s, ${a.c} concurrent | ${f(a.tokensPerS, 1)} | ${f(b.tokensPerS, 1)} |`);
    console.log(`| TTFT median, ${a.c} concurrent (ms) | ${f(a.ttftMs)} | ${f(b.ttftMs)} |`);
  }
  console.log(`| start to healthy (s) | ${f(lorakit.startS, 1)} | ${f(llama.startS, 1)} |`);
  console.log(
    `| RSS idle / peak (MiB) | ${f(lorakit.idleRssMiB)} / ${f(lorakit.peakMiB)} | ` +
      `${f(llama.idleRssMiB)} / ${f(llama.peakMiB)} |`,
  );
  console.log(
    `| load average before → after | ${lorakit.load.map((x) => f(x, 1)).join(' → ')} | ` +
      `${llama.load.map((x) => f(x, 1)).join(' → ')} |`,
  );
  console.log(`same greedy text at concurrency 1: ${result.same_greedy_text}`);
  mkdirSync('bench/results', { recursive: true });
  writeFileSync('bench/results/serve-llamacpp.json', `${JSON.stringify(result, null, 2)}\n`);
  rmSync(work, { recursive: true, force: true });
}

await main();
