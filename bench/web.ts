/**
 * The demo page's training step in a browser against Node: tokens/s of the LoRA step on the demo base (batch 4 × 128
 * bytes, r 8 on q/k/v/o/gate/up/down, AdamW; the page's default step) on onnxruntime-web's wasm backend in headless
 * Chromium with 1 and 2 threads (the page is cross-origin isolated, so threads are real), and on onnxruntime-node
 * with 1 and 2 threads, one configuration after the other. Median over the steps after the first two (the first
 * compiles). `node --import tsx bench/web.ts [--steps 6] [--only wasm|webgpu|node] [--threads N]` prints one JSON
 * line per configuration (WebGPU only with --only webgpu: Chromium's SwiftShader adapter, or a GPU).
 * Not here: the browser tests (test/web/), the PEFT comparison (peft.ts).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEMO_BASE_DIR } from '../src/demo/base.ts';
import { readBrown, splitBrown } from '../src/demo/brown.ts';
import { DemoSession } from '../src/demo/session.ts';
import { shutdownRuntime } from '../src/runtime/index.ts';
import { query, startDemo } from '../test/web/page.ts';

const arg = (k: string, d: number) => {
  const i = process.argv.indexOf(`--${k}`);
  return i < 0 ? d : Number(process.argv[i + 1]);
};
const STEPS = arg('steps', 6);
const SHAPE = { batch: 4, seqLen: 128, rank: 8 };
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const text = splitBrown(readBrown({ side: 'fiction' }), 'fiction')
  .train.map((f) => f.text)
  .join('\n\n');

function report(backend: string, threads: number | string, tokensPerS: number[], seconds: number): void {
  const tps = median(tokensPerS.slice(2));
  const row = { backend, threads, steps: tokensPerS.length, tokens_per_s: Math.round(tps) };
  console.log(
    JSON.stringify({ ...row, step_s: +((SHAPE.batch * SHAPE.seqLen) / tps).toFixed(3), total_s: +seconds.toFixed(1) }),
  );
}

const only = process.argv.includes('--only') ? process.argv[process.argv.indexOf('--only') + 1] : null;
const threadList = process.argv.includes('--threads') ? [arg('threads', 2)] : [1, 2];
const webgpu = only === 'webgpu';
const demo =
  only === 'node'
    ? null
    : await startDemo(
        webgpu ? ['--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-webgpu-adapter=swiftshader'] : [],
      );
if (demo) {
  try {
    const configs: { ep: 'cpu' | 'webgpu'; threads: number }[] =
      only === 'node' ? [] : threadList.map((threads) => ({ ep: webgpu ? 'webgpu' : 'cpu', threads }));
    for (const c of configs) {
      const page = await demo.browser.newPage();
      await page.goto(`${demo.url}?${query({ ...SHAPE, threads: c.threads, ep: c.ep, restore: 0 })}`);
      await page.waitForFunction("/^(ready|error)/.test(document.getElementById('status').textContent)", null, {
        timeout: 120_000,
      });
      const r = (await page.evaluate(
        `window.lorakitDemo.call({ type: 'train', text: document.getElementById('text').value, steps: ${STEPS}, lr: 0.002, resume: false })`,
      )) as { tokensPerS: number[]; seconds: number };
      report(c.ep === 'cpu' ? 'wasm' : 'webgpu', c.threads, r.tokensPerS, r.seconds);
      await page.close();
    }
  } finally {
    await demo.close();
  }
}
for (const threads of only === null || only === 'node' ? threadList : []) {
  const s = await DemoSession.open(DEMO_BASE_DIR, { ...SHAPE, alpha: 16, compile: { threads } });
  await s.newAdapter();
  const dir = mkdtempSync(join(tmpdir(), 'lorakit-bench-web-'));
  const t0 = performance.now();
  const h = await s.train(text, { steps: STEPS, outputDir: join(dir, 'run') });
  report(
    'onnxruntime-node',
    threads,
    h.map((r) => r.tokens_per_s),
    (performance.now() - t0) / 1000,
  );
  await s.close();
  rmSync(dir, { recursive: true, force: true });
}
await shutdownRuntime();
