/**
 * `npm run loadtest`: the server under load, on loopback only, bounded in count and time. Starts `lorakit serve`'s
 * server in this process on the demo base with 50 random LoRA adapters (ranks 4–16, different target layers), then
 *   1. 1,000 completion requests spread over the 50 adapters (and the base) from 32 concurrent clients: errors,
 *      latency p50/p99, time to first token, generated tokens/s;
 *   2. 10,000 malformed bodies (broken JSON, wrong types, out-of-range fields, random bytes, bad names) from 32
 *      clients: every one must be answered 4xx, and the server must still be healthy after.
 * Prints a table and writes bench/results/serve-load.json; exits non-zero if a check fails or the 10-minute bound
 * is reached. Options: --requests N, --malformed N, --clients N, --max-tokens N.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel } from '../src/models/index.ts';
import { PeftModel, adaptable, saveAdapter } from '../src/peft/index.ts';
import { shutdownRuntime } from '../src/runtime/index.ts';
import { startServer } from '../src/server/index.ts';

const DEMO = 'models/demo-base';
const DEADLINE_MS = 10 * 60_000;

const arg = (name: string, d: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : d;
};

/** 50 adapters of varied ranks and targets, B scaled so each changes the output. */
async function makeAdapters(root: string, count: number): Promise<string[]> {
  const model = await loadModel(DEMO);
  const targets = [['q_proj', 'v_proj'], 'all-linear', ['o_proj', 'down_proj'], ['gate_proj', 'up_proj']];
  const names: string[] = [];
  for (let i = 0; i < count; i++) {
    const name = `adapter-${String(i).padStart(2, '0')}`;
    const peft = new PeftModel(adaptable(model));
    const r = [4, 8, 16][i % 3];
    const a = await peft.addAdapter(
      name,
      { peft_type: 'LORA', r, lora_alpha: 2 * r, target_modules: targets[i % 4], init_lora_weights: false },
      { seed: i },
    );
    for (const l of a.layers.values()) for (const v of Object.values(l.values)) v.forEach((x, k) => (v[k] = x * 4));
    await saveAdapter(peft, name, join(root, name));
    names.push(name);
  }
  await model.close();
  return names;
}

/** Runs `total` jobs from `clients` concurrent workers; stops early at the deadline. */
async function pool<T>(total: number, clients: number, deadline: number, job: (i: number) => Promise<T>) {
  const out: T[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (next < total && performance.now() < deadline) out.push(await job(next++));
    }),
  );
  return out;
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
};

/** Malformed body number i: a rotation of broken JSON, wrong types, bad ranges, random bytes and escaping names. */
function malformed(i: number, rng: () => number): { path: string; body: string; type: string } {
  const bytes = () => Buffer.from(Array.from({ length: 1 + Math.floor(rng() * 200) }, () => Math.floor(rng() * 256)));
  const kinds: (() => unknown)[] = [
    () => '{"model": "x", "prompt": ',
    () => '[1, 2, 3]',
    () => 'null',
    () => ({ model: DEMO }),
    () => ({ model: DEMO, prompt: 'x', max_tokens: -5 }),
    () => ({ model: DEMO, prompt: 'x', max_tokens: 1e12 }),
    () => ({ model: DEMO, prompt: 'x', temperature: 'warm' }),
    () => ({ model: DEMO, prompt: 'x', n: 0 }),
    () => ({ model: DEMO, prompt: [[1, 2, -3]] }),
    () => ({ model: DEMO, prompt: 'x', stop: [null] }),
    () => ({ model: '../../etc/passwd', prompt: 'x' }),
    () => ({ model: '/etc', prompt: 'x' }),
    () => ({ model: 'adapter-00/../../x', prompt: 'x' }),
    () => ({ model: DEMO, messages: [{ role: 'king', content: 'x' }] }),
    () => ({ model: DEMO, messages: [] }),
    () => ({ model: DEMO, prompt: 'x', logprobs: 99 }),
    () => ({ __proto__: null, constructor: { prototype: { polluted: true } }, model: DEMO }),
    () => bytes().toString('latin1'),
  ];
  const v = kinds[i % kinds.length]();
  return {
    path: i % 3 === 0 ? '/v1/chat/completions' : '/v1/completions',
    body: typeof v === 'string' ? v : JSON.stringify(v),
    type: i % 17 === 16 ? 'text/plain' : 'application/json',
  };
}

async function main(): Promise<void> {
  const requests = arg('requests', 1000);
  const bad = arg('malformed', 10_000);
  const clients = arg('clients', 32);
  const maxTokens = arg('max-tokens', 16);
  const deadline = performance.now() + DEADLINE_MS;
  const root = mkdtempSync(join(tmpdir(), 'lorakit-load-'));
  const names = await makeAdapters(root, 50);
  const server = await startServer({ model: DEMO, adapterDir: root, port: 0, host: '127.0.0.1', maxLoras: 32 });
  let failed = false;
  try {
    const url = server.url;
    const post = (path: string, body: string, type = 'application/json') =>
      fetch(`${url}${path}`, { method: 'POST', headers: { 'content-type': type }, body });
    // 1. real requests
    let seed = 1;
    const rng = () => ((seed = (seed * 16807) % 2147483647) - 1) / 2147483646;
    const words = ['The', 'old', 'house', 'stood', 'by', 'the', 'river', 'and', 'a', 'man', 'walked', 'slowly'];
    const t0 = performance.now();
    const results = await pool(requests, clients, deadline, async (i) => {
      const model = i % 51 === 50 ? DEMO : names[i % 50];
      const prompt = Array.from({ length: 2 + Math.floor(rng() * 10) }, () => words[Math.floor(rng() * words.length)]);
      const start = performance.now();
      const r = await post(
        '/v1/completions',
        JSON.stringify({
          model,
          prompt: prompt.join(' '),
          max_tokens: maxTokens,
          temperature: 0.8,
          seed: i,
          stream: true,
          stream_options: { include_usage: true },
        }),
      );
      let first = NaN;
      let tokens = 0;
      let ok = r.status === 200;
      let buf = '';
      const decoder = new TextDecoder();
      for await (const part of r.body!) {
        if (Number.isNaN(first)) first = performance.now() - start; // the first event: the first token
        buf += decoder.decode(part as Uint8Array, { stream: true });
      }
      for (const line of buf.split('\n')) {
        if (!line.startsWith('data: {')) continue;
        const ev = JSON.parse(line.slice(6));
        if (ev.error) ok = false;
        if (ev.usage) tokens = ev.usage.completion_tokens;
      }
      return { ok, ms: performance.now() - start, first, tokens, status: r.status };
    });
    const wall = (performance.now() - t0) / 1000;
    const errors = results.filter((r) => !r.ok).length;
    const ms = results.map((r) => r.ms);
    const tokens = results.reduce((a, r) => a + r.tokens, 0);
    const firsts = results.map((r) => r.first);
    const real = {
      requests: results.length,
      errors,
      p50_ms: pct(ms, 50),
      p99_ms: pct(ms, 99),
      ttft_p50_ms: pct(firsts, 50),
      ttft_p99_ms: pct(firsts, 99),
      generated_tokens: tokens,
      tokens_per_s: tokens / wall,
      wall_s: wall,
    };
    console.log(
      `real: ${real.requests} requests over 50 adapters + base, ${clients} clients: ${errors} errors, p50 ` +
        `${real.p50_ms.toFixed(0)} ms, p99 ${real.p99_ms.toFixed(0)} ms, TTFT p50 ${real.ttft_p50_ms.toFixed(0)} ms ` +
        `p99 ${real.ttft_p99_ms.toFixed(0)} ms, ` +
        `${real.tokens_per_s.toFixed(1)} tokens/s (${tokens} tokens in ${wall.toFixed(1)} s)`,
    );
    // 2. malformed bodies
    const statuses = new Map<number, number>();
    const t1 = performance.now();
    const answered = await pool(bad, clients, deadline, async (i) => {
      const m = malformed(i, rng);
      const r = await post(m.path, m.body, m.type);
      await r.arrayBuffer();
      statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
      return r.status;
    });
    const not4xx = answered.filter((s) => s < 400 || s >= 500).length;
    const healthy = (await fetch(`${url}/health`)).status === 200;
    const malformedResult = {
      sent: answered.length,
      not_4xx: not4xx,
      statuses: Object.fromEntries(statuses),
      healthy_after: healthy,
      wall_s: (performance.now() - t1) / 1000,
    };
    console.log(
      `malformed: ${answered.length} bodies, ${not4xx} not answered 4xx (statuses ${JSON.stringify(malformedResult.statuses)}), ` +
        `healthy after: ${healthy}`,
    );
    failed = errors > 0 || results.length < requests || not4xx > 0 || answered.length < bad || !healthy;
    mkdirSync('bench/results', { recursive: true });
    writeFileSync(
      'bench/results/serve-load.json',
      `${JSON.stringify({ date: new Date().toISOString(), clients, max_tokens: maxTokens, real, malformed: malformedResult }, null, 2)}\n`,
    );
  } finally {
    await server.close();
    await shutdownRuntime();
    rmSync(root, { recursive: true, force: true });
  }
  if (failed) {
    console.error('loadtest: FAILED');
    process.exit(1);
  }
  console.log('loadtest: ok');
}

await main();
