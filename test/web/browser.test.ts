// The browser demo in real Chromium (Debian's /usr/bin/chromium driven by playwright-core; no browser download):
// the page loads cross-origin isolated with 2 wasm threads, trains a few steps in its Web Worker on
// onnxruntime-web, the held-out loss falls, the downloaded adapter zip is a PEFT folder that lorakit on Node
// (onnxruntime-node) loads to the same held-out loss (1e-5), and the same zip dropped back into the page generates
// exactly the page's own after-training sample. Skipped, with a note, where Chromium is not installed
// (LORAKIT_CHROMIUM names another binary).
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, test } from 'node:test';
import { unzipSync } from 'fflate';
import { DEMO_BASE_DIR } from '../../src/demo/base.ts';
import { readBrown, splitBrown } from '../../src/demo/brown.ts';
import { DemoSession } from '../../src/demo/session.ts';
import { GgufFile } from '../../src/io/gguf.ts';
import { exportAdapterGguf } from '../../src/peft/gguf-export.ts';
import { shutdownRuntime } from '../../src/runtime/index.ts';

import { CHROMIUM, HAVE_CHROMIUM, query, startDemo, statusMatches } from './page.ts';

if (!HAVE_CHROMIUM) console.log(`# browser test skipped: no Chromium at ${CHROMIUM} (apt-get install -y chromium)`);

const RUN = { steps: 8, batch: 2, seqLen: 64, threads: 2, windows: 4, bytes: 8 };
const dirs: string[] = [];
after(async () => {
  await shutdownRuntime();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

interface PageResults {
  evalBefore: number;
  evalAfter: number;
  losses: number[];
  sampleAfter: string;
  generated?: string;
  init: { crossOriginIsolated: boolean; threads: number };
}

test('the demo page trains on wasm in Chromium, and its adapter evaluates the same in Node', {
  skip: !HAVE_CHROMIUM,
}, async () => {
  const demo = await startDemo();
  try {
    const page = await demo.browser.newPage({ acceptDownloads: true });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${demo.url}?${query({ ...RUN, restore: 0 })}`);
    await page.waitForFunction(statusMatches('^(ready|error)'), null, { timeout: 60_000 });
    assert.equal(await page.textContent('#status'), 'ready');
    await page.click('#train');
    await page.waitForFunction(statusMatches('^(done|error)'), null, { timeout: 120_000 });
    assert.match((await page.textContent('#status')) ?? '', /^done: 8 steps/);
    const r = (await page.evaluate('window.lorakitDemo.results')) as PageResults;
    assert.deepEqual(r.init.crossOriginIsolated, true, 'COOP/COEP headers make the page cross-origin isolated');
    assert.equal(r.init.threads, RUN.threads);
    assert.equal(r.losses.length, RUN.steps);
    assert.ok(r.losses.every(Number.isFinite), `losses ${r.losses}`);
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    assert.ok(mean(r.losses.slice(-3)) < mean(r.losses.slice(0, 3)), `training loss falls: ${r.losses}`);
    assert.ok(r.evalAfter < r.evalBefore, `held-out loss falls: ${r.evalBefore} -> ${r.evalAfter}`);

    // the download is a PEFT folder; lorakit on Node loads it and measures the same held-out loss
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
    const tmp = mkdtempSync(join(tmpdir(), 'lorakit-web-test-'));
    dirs.push(tmp);
    const zipPath = join(tmp, 'adapter.zip');
    await download.saveAs(zipPath);
    const adapterDir = join(tmp, 'adapter');
    for (const [name, bytes] of Object.entries(unzipSync(readFileSync(zipPath)))) {
      mkdirSync(dirname(join(adapterDir, name)), { recursive: true });
      writeFileSync(join(adapterDir, name), bytes);
    }
    const config = JSON.parse(readFileSync(join(adapterDir, 'adapter_config.json'), 'utf8'));
    assert.equal(config.peft_type, 'LORA');
    const heldOutText = splitBrown(readBrown({ side: 'fiction' }), 'fiction')
      .heldOut.map((f) => f.text)
      .join('\n\n');
    const node = await DemoSession.open(DEMO_BASE_DIR, { batch: RUN.batch, seqLen: RUN.seqLen });
    try {
      await node.loadAdapter(adapterDir);
      const nodeLoss = await node.evalLoss(heldOutText, RUN.windows);
      console.log(
        `# held-out loss: page (wasm) ${r.evalAfter}, Node ${nodeLoss}, difference ${Math.abs(nodeLoss - r.evalAfter)}`,
      );
      assert.ok(Math.abs(nodeLoss - r.evalAfter) <= 1e-5, `Node ${nodeLoss} vs page ${r.evalAfter}`);

      // the GGUF download is what `lorakit export --format gguf` writes in Node for the same adapter: the same
      // metadata (but general.name, which names the adapter's folder) and bit-equal tensors
      const [gguf] = await Promise.all([page.waitForEvent('download'), page.click('#download-gguf')]);
      await gguf.saveAs(join(tmp, 'page.gguf'));
      await exportAdapterGguf(node.model, adapterDir, join(tmp, 'node.gguf'));
      const [fromPage, fromNode] = await Promise.all(
        ['page', 'node'].map((w) => GgufFile.open(join(tmp, `${w}.gguf`))),
      );
      try {
        const meta = (f: GgufFile) => [...f.header.metadata].filter(([k]) => k !== 'general.name');
        assert.deepEqual(meta(fromPage), meta(fromNode));
        assert.equal(fromPage.get('general.type'), 'adapter');
        assert.deepEqual(fromPage.names(), fromNode.names());
        assert.ok(fromPage.names().some((n) => n.endsWith('.lora_a')));
        for (const n of fromNode.names()) assert.deepEqual(await fromPage.raw(n), await fromNode.raw(n), n);
      } finally {
        await Promise.all([fromPage.close(), fromNode.close()]);
      }
    } finally {
      await node.close();
    }

    // the same zip dropped back into the page generates the page's own after-training sample
    await page.setInputFiles('#adapter-file', zipPath);
    await page.waitForFunction(statusMatches('adapter .* loaded|error'));
    await page.click('#generate');
    await page.waitForFunction("document.getElementById('generated').textContent !== ''", null, { timeout: 60_000 });
    const again = (await page.evaluate('window.lorakitDemo.results')) as PageResults;
    assert.equal(again.generated, r.sampleAfter);
    assert.deepEqual(errors, []);
  } finally {
    await demo.close();
  }
});
