// One training step of the demo on onnxruntime-web's WebGPU backend in Chromium against the same step (same seed,
// windows and adapter init) on onnxruntime-node's CPU backend: same loss and same gradient norm. The gradient norm
// is what broke before RMSNorm's backward recomputed the inverse RMS (SimplifiedLayerNormalization's second output
// is wrong on WebGPU: grad norm 7.9e8 against 0.387). Chromium offers a WebGPU adapter through SwiftShader
// (software) with --enable-unsafe-webgpu, or a real GPU where one exists; the test skips, with a note, when no
// adapter is found or Chromium is missing.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { DEMO_BASE_DIR } from '../../src/demo/base.ts';
import { readBrown, splitBrown } from '../../src/demo/brown.ts';
import { DemoSession } from '../../src/demo/session.ts';
import { shutdownRuntime } from '../../src/runtime/index.ts';
import { CHROMIUM, HAVE_CHROMIUM, query, startDemo, statusMatches } from './page.ts';

const WEBGPU_ARGS = ['--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-webgpu-adapter=swiftshader'];
const RUN = { batch: 2, seqLen: 32, threads: 1, restore: 0 };

/** The same first step on onnxruntime-node (CPU): the reference. */
async function nodeStep(): Promise<{ loss: number; gradNorm: number }> {
  const text = splitBrown(readBrown({ side: 'fiction' }), 'fiction')
    .train.map((f) => f.text)
    .join('\n\n');
  const s = await DemoSession.open(DEMO_BASE_DIR, { batch: RUN.batch, seqLen: RUN.seqLen });
  const dir = mkdtempSync(join(tmpdir(), 'lorakit-webgpu-test-'));
  try {
    await s.newAdapter();
    const [r] = await s.train(text, { steps: 1, lr: 0.002, outputDir: join(dir, 'run') });
    return { loss: r.loss, gradNorm: r.grad_norm };
  } finally {
    await s.close();
    await shutdownRuntime();
    rmSync(dir, { recursive: true, force: true });
  }
}

interface Step {
  losses: number[];
  gradNorms: number[];
  seconds: number;
}

test('one WebGPU training step equals the CPU step of onnxruntime-node (loss and gradient norm)', {
  skip: !HAVE_CHROMIUM,
}, async (t) => {
  const demo = await startDemo(WEBGPU_ARGS);
  try {
    const step = async (ep: 'webgpu'): Promise<{ r: Step; warnings: string[]; adapter: string }> => {
      const page = await demo.browser.newPage();
      const warnings: string[] = [];
      page.on('console', (m) => {
        if (m.type() === 'warning' || m.type() === 'error') warnings.push(m.text());
      });
      await page.goto(`${demo.url}?${query({ ...RUN, ep })}`);
      const adapter = (await page.evaluate(
        'navigator.gpu ? navigator.gpu.requestAdapter().then((a) => (a ? a.info.architecture || a.info.vendor || "?" : "")) : ""',
      )) as string;
      await page.waitForFunction(statusMatches('^(ready|error)'), null, { timeout: 60_000 });
      assert.equal(await page.textContent('#status'), 'ready');
      const r = (await page.evaluate(
        "window.lorakitDemo.call({ type: 'train', text: document.getElementById('text').value, steps: 1, lr: 0.002, resume: false })",
      )) as Step;
      await page.close();
      return { r, warnings, adapter };
    };
    const gpu = await step('webgpu');
    if (!gpu.adapter) {
      console.log(`# WebGPU test skipped: Chromium (${CHROMIUM}) found no WebGPU adapter`);
      t.skip('no WebGPU adapter');
      return;
    }
    // lorakit falls back to CPU with a warning when the WebGPU provider cannot load; that would compare CPU to CPU
    assert.deepEqual(
      gpu.warnings.filter((w) => /WebGPU execution provider is unavailable/.test(w)),
      [],
      'the step ran on WebGPU',
    );
    const cpu = await nodeStep();
    console.log(
      `# WebGPU (${gpu.adapter}) step: loss ${gpu.r.losses[0]}, grad norm ${gpu.r.gradNorms[0]}, ` +
        `${gpu.r.seconds.toFixed(1)} s with compile; onnxruntime-node CPU: loss ${cpu.loss}, grad norm ${cpu.gradNorm}`,
    );
    assert.ok(Math.abs(gpu.r.losses[0] - cpu.loss) <= 1e-4 * cpu.loss, `loss ${gpu.r.losses[0]} vs ${cpu.loss}`);
    assert.ok(
      Math.abs(gpu.r.gradNorms[0] - cpu.gradNorm) <= 1e-3 * cpu.gradNorm,
      `gradient norm ${gpu.r.gradNorms[0]} vs ${cpu.gradNorm}`,
    );
  } finally {
    await demo.close();
  }
});
