/**
 * `npm run bench:serve`: the multi-adapter engine on the demo base (the only model benchmarks may use on the shared
 * machine). Writes bench/results/serve.json and prints a table:
 *   - decode tokens/s of one batch of B = 32 rows whose rows use 1, 8 or 32 distinct adapters (row i → adapter i mod k;
 *     rank 16 on every Linear), against the same batch on one adapter (floor: 32 distinct ≥ 0.8× of one adapter),
 *     and the base model alone;
 *   - the same batches through transformers + PEFT's mixed-adapter generate (`adapter_names=`), same prompt ids,
 *     greedy, torch on the same threads (interop/bench_serve_peft.py; floor: lorakit ≥ 3× with 32 distinct);
 *   - time to first token of one request on an idle engine (prefill of a 16-token prompt and the first draw);
 *   - memory per resident adapter: bytes of its LoRA form, and the process RSS growth per adapter over 32 loads.
 * Decode tokens/s = rows × (N − 1) / (time from the batch's first token to its last), best of --repeat runs.
 * llama.cpp's server with one LoRA on the real SmolLM2 GGUF: bench/serve-llamacpp.ts (a model this one may not load).
 * Options: --repeat N (2), --new-tokens N (64), --python PATH (interop/.venv/bin/python), --no-peft.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { HfTokenizer } from '../src/io/index.ts';
import { loadModel } from '../src/models/index.ts';
import { PeftModel, adaptable, saveAdapter } from '../src/peft/index.ts';
import { shutdownRuntime } from '../src/runtime/index.ts';
import { createEngine, type Engine } from '../src/serve/index.ts';

const DEMO = 'models/demo-base';
const B = 32;
const arg = (name: string, d: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : d;
};

/** Decode tokens/s and the batch's time to first token for one batch: row i uses names[i] (null: base). */
async function batch(engine: Engine, names: (string | null)[], prompt: number[], n: number) {
  const t0 = performance.now();
  const done = await Promise.all(
    names.map((adapter) =>
      engine.generate({ adapter, promptIds: prompt, maxTokens: n, sampling: { temperature: 0 }, ignoreEos: true }),
    ),
  );
  const first = Math.max(...done.map((d) => d.timings.firstTokenMs));
  const last = Math.max(...done.map((d) => d.timings.totalMs));
  const tokens = done.reduce((a, d) => a + d.completionTokens - 1, 0);
  return { tokensPerS: (tokens * 1000) / (last - first), batchFirstMs: first, wallMs: performance.now() - t0 };
}

async function main(): Promise<void> {
  const repeat = Number(arg('repeat', '2'));
  const N = Number(arg('new-tokens', '64'));
  const python = arg('python', join('interop', '.venv', 'bin', 'python'));
  const root = mkdtempSync(join(tmpdir(), 'lorakit-bench-serve-'));
  const model = await loadModel(DEMO);
  const tokenizer = await HfTokenizer.fromDir(DEMO);
  const names: string[] = [];
  for (let i = 0; i < 32; i++) {
    const name = `a${i}`;
    const peft = new PeftModel(adaptable(model));
    await peft.addAdapter(
      name,
      { peft_type: 'LORA', r: 16, lora_alpha: 32, target_modules: 'all-linear', init_lora_weights: false },
      { seed: i },
    );
    await saveAdapter(peft, name, join(root, name));
    names.push(name);
  }
  const prompt = tokenizer.encode('The old house stood by the river and the');
  const engine = await createEngine({ model, tokenizer, adapterDir: root, maxLoras: 32, maxRows: B, maxLoraRank: 16 });
  const rss0 = process.memoryUsage().rss;
  for (const n of names) await engine.parts.adapters.acquire(n).then((a) => engine.parts.adapters.unpin(a.name));
  const rssPerAdapter = (process.memoryUsage().rss - rss0) / names.length;
  const formBytes = engine.parts.adapters.residents()[0].bytes;
  await batch(engine, names, prompt, 4); // warm-up: every adapter in a slot
  const rows: Record<string, number> = {};
  const cases: [string, (string | null)[]][] = [
    ['base', new Array(B).fill(null)],
    ['1 adapter', new Array(B).fill(names[0])],
    ['8 distinct', Array.from({ length: B }, (_, i) => names[i % 8])],
    ['32 distinct', Array.from({ length: B }, (_, i) => names[i % 32])],
  ];
  for (const [label, rowNames] of cases) {
    let best = 0;
    for (let r = 0; r < repeat; r++) best = Math.max(best, (await batch(engine, rowNames, prompt, N)).tokensPerS);
    rows[label] = best;
    console.log(`lorakit ${label}: ${best.toFixed(1)} decode tokens/s (batch ${B}, ${N} new tokens)`);
  }
  // time to first token, idle engine, one request
  const ttft: number[] = [];
  for (let r = 0; r < 5; r++) {
    const d = await engine.generate({
      adapter: names[r],
      promptIds: prompt,
      maxTokens: 1,
      sampling: { temperature: 0 },
    });
    ttft.push(d.timings.firstTokenMs);
  }
  ttft.sort((a, b) => a - b);
  await engine.close();
  await engine.parts.session.dispose();
  await model.close();
  await shutdownRuntime();
  let peft: Record<string, { decode_tokens_per_s: number }> | null = null;
  if (!process.argv.includes('--no-peft')) {
    const r = spawnSync(
      python,
      [
        join('interop', 'bench_serve_peft.py'),
        '--model',
        DEMO,
        '--adapters',
        JSON.stringify(names.map((n) => [n, join(root, n)])),
        '--prompt',
        JSON.stringify(prompt),
        '--batch',
        String(B),
        '--new-tokens',
        String(N),
        '--repeat',
        String(repeat),
        '--threads',
        String(cpus().length),
      ],
      { encoding: 'utf8', maxBuffer: 2 ** 24 },
    );
    const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '));
    if (!line) throw new Error(`PEFT side failed (exit ${r.status}):\n${(r.stdout + r.stderr).slice(-3000)}`);
    peft = JSON.parse(line.slice(7)).distinct;
    for (const [k, v] of Object.entries(peft!))
      console.log(`PEFT ${k} distinct: ${v.decode_tokens_per_s.toFixed(1)} decode tokens/s`);
  }
  const out = {
    date: new Date().toISOString(),
    cpu: cpus()[0]?.model,
    cores: cpus().length,
    load: loadavg(),
    batch: B,
    new_tokens: N,
    lorakit_decode_tokens_per_s: rows,
    ratio_32_distinct_vs_1: rows['32 distinct'] / rows['1 adapter'],
    peft_decode_tokens_per_s: peft,
    speedup_vs_peft_32_distinct: peft ? rows['32 distinct'] / peft['32'].decode_tokens_per_s : null,
    ttft_ms_idle: { median: ttft[2], min: ttft[0] },
    adapter_bytes_lora_form: formBytes,
    rss_bytes_per_resident_adapter: rssPerAdapter,
  };
  console.log(
    `32 distinct / 1 adapter: ${out.ratio_32_distinct_vs_1.toFixed(2)}x; vs PEFT (32 distinct): ` +
      `${out.speedup_vs_peft_32_distinct?.toFixed(2) ?? 'n/a'}x; TTFT idle ${ttft[2].toFixed(1)} ms; adapter ` +
      `${(formBytes / 2 ** 20).toFixed(2)} MiB in LoRA form, RSS +${(rssPerAdapter / 2 ** 20).toFixed(2)} MiB each`,
  );
  mkdirSync('bench/results', { recursive: true });
  writeFileSync('bench/results/serve.json', `${JSON.stringify(out, null, 2)}\n`);
  rmSync(root, { recursive: true, force: true });
}

await main();
