// LoRAM as one run on the tiny Llama fixture: the base is pruned to the ratio (from calibration gradients), the LoRA
// trains on the pruned folder, the recovered adapter loads on the full base with full shapes, and the report holds
// the full-base losses without adapter, with the LoRAM adapter and with the baseline LoRA.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SafetensorsFile } from '../../src/io/index.ts';
import { shutdownRuntime } from '../../src/runtime/index.ts';
import { runConfigSchema, runLoram } from '../../src/train/index.ts';

after(() => shutdownRuntime());
const root = new URL('../../', import.meta.url).pathname;

test('runLoram prunes, trains small, recovers to the full base and evaluates there', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lorakit-loram-run-'));
  const text = readFileSync(join(root, 'test/fixtures/eval/shakespeare.txt'), 'utf8');
  writeFileSync(join(dir, 'train.txt'), text);
  writeFileSync(join(dir, 'eval.txt'), text.slice(0, 1500));
  const c = runConfigSchema.parse({
    model: join(root, 'test/fixtures/models/llama'),
    output_dir: join(dir, 'run'),
    data: { path: join(dir, 'train.txt'), seq_len: 32, cache_dir: false, validation_file: join(dir, 'eval.txt') },
    adapter: { target_modules: 'all-linear', r: 4, lora_alpha: 8 },
    training: { max_steps: 3, per_device_train_batch_size: 2, learning_rate: 0.01 },
  });
  const out = await runLoram(c, { ratio: 0.5, calibrationBatches: 2 }, { progress: 'none' });
  assert.deepEqual(
    out.plan.layers.map((l) => [l.heads.length, l.channels.length]),
    [
      [1, 64],
      [1, 64],
    ],
  );
  assert.ok(out.parameters.pruned < out.parameters.full);
  // r·(out + in) per projection and layer (q, k, v, o, gate, up, down): pruned, q/k/v/gate/up lose half their rows
  // and o/down half their columns.
  const per = (q: number, kv: number, c: number) => 4 * (q + 64 + 2 * (kv + 64) + 64 + q + 3 * (c + 64));
  assert.deepEqual(out.trainable, { loram: 2 * per(32, 16, 64), lora: 2 * per(64, 32, 128) });
  const st = await SafetensorsFile.open(join(out.recoveredDir, 'adapter_model.safetensors'));
  assert.deepEqual(st.info('base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight').shape, [64, 4]);
  assert.deepEqual(st.info('base_model.model.model.layers.0.mlp.down_proj.lora_A.weight').shape, [4, 128]);
  await st.close();
  const e = out.eval!;
  for (const v of [e.fullBase, e.loram, e.lora!, e.prunedBase, e.prunedWithAdapter]) assert.ok(Number.isFinite(v));
  assert.notEqual(e.loram, e.fullBase);
  assert.deepEqual(JSON.parse(readFileSync(join(c.output_dir, 'loram_report.json'), 'utf8')).eval, e);
});
