// The demo job on the committed base model: a handful of steps on small batches must lower the held-out fiction
// loss, save a PEFT adapter, and give the same numbers again for the same seed. Also checks that models/demo-base
// is the folder the code describes (config, tokenizer) and that it loads.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { DEMO_BASE_DIR, demoConfigJson } from '../../src/demo/base.ts';
import { byteTokenizerJson } from '../../src/demo/bytes.ts';
import { type DemoOptions, runDemo } from '../../src/demo/run.ts';
import { SafetensorsFile } from '../../src/io/index.ts';
import { loadModel } from '../../src/models/index.ts';
import { shutdownRuntime } from '../../src/runtime/index.ts';

const dirs: string[] = [];
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), 'lorakit-demo-test-'));
  dirs.push(d);
  return d;
};
after(async () => {
  await shutdownRuntime();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const small: DemoOptions = { steps: 4, batch: 4, seqLen: 128, evalWindows: 8, sampleBytes: 12, lr: 3e-3, seed: 5 };

test('models/demo-base is the byte-level Llama the code describes, with a model card', async () => {
  const json = (f: string) => JSON.parse(readFileSync(join(DEMO_BASE_DIR, f), 'utf8'));
  assert.deepEqual(json('config.json'), demoConfigJson());
  assert.deepEqual(json('tokenizer.json'), byteTokenizerJson());
  const model = await loadModel(DEMO_BASE_DIR);
  assert.ok(model.paramCount > 2_000_000 && model.paramCount < 5_000_000, `${model.paramCount} parameters`);
  assert.deepEqual(Object.keys(model.dtypes), ['F32']);
  await model.close();
  assert.match(readFileSync(join(DEMO_BASE_DIR, 'README.md'), 'utf8'), /held out \(all held-out bytes\) \| \d\.\d{4}/);
});

test(
  'a few LoRA steps lower the held-out fiction loss and save a PEFT adapter; the same seed gives the ' + 'same run',
  async () => {
    const out = tmp();
    const r = await runDemo({ ...small, outDir: out });
    assert.ok(r.heldOutAfter < r.heldOutBefore, `held-out loss ${r.heldOutBefore} -> ${r.heldOutAfter}`);
    assert.equal(r.trainLosses.length, 4);
    assert.equal(r.adapterDir, join(out, 'final'));
    const config = JSON.parse(readFileSync(join(r.adapterDir, 'adapter_config.json'), 'utf8'));
    assert.equal(config.peft_type, 'LORA');
    assert.deepEqual([config.r, config.lora_alpha], [16, 32]);
    const st = await SafetensorsFile.open(join(r.adapterDir, 'adapter_model.safetensors'));
    assert.equal(st.names().length, 4 * 7 * 2); // 4 layers x q/k/v/o/gate/up/down x lora_A/lora_B
    await st.close();
    assert.equal(typeof r.sampleAfter, 'string');

    const again = await runDemo({ ...small, outDir: tmp() });
    assert.deepEqual(
      [again.heldOutBefore, again.heldOutAfter, again.trainLosses, again.sampleBefore, again.sampleAfter],
      [r.heldOutBefore, r.heldOutAfter, r.trainLosses, r.sampleBefore, r.sampleAfter],
    );
  },
);

test('bad options are refused naming the option', async () => {
  await assert.rejects(runDemo({ steps: 0 }), {
    code: 'LK_INVALID_ARGUMENT',
    message: /demo: steps must be a positive integer, got 0/,
  });
  await assert.rejects(runDemo({ seqLen: 512, outDir: tmp() }), {
    code: 'LK_INVALID_ARGUMENT',
    message: /seqLen 512 exceeds the model's 256 positions/,
  });
});
