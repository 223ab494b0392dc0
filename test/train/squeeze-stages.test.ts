// In-Squeeze / Cont-Squeeze as staged runs on the tiny Llama fixture: each stage trains its share of the steps, the
// adapter between stages is exactly squeezeAdapter's output for the previous stage's final adapter, the next stage
// continues it at its rank and the run ends at the last rank;
// the default annealing schedule halves the rank at evenly spaced steps; bad schedules are refused.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LorakitError } from '../../src/errors.ts';
import { loadModel } from '../../src/models/index.ts';
import { PeftModel, adaptable, loadAdapter, squeezeAdapter } from '../../src/peft/index.ts';
import { shutdownRuntime } from '../../src/runtime/index.ts';
import { annealingStages, runConfigSchema, runSqueezeStages } from '../../src/train/index.ts';

after(() => shutdownRuntime());
const root = new URL('../../', import.meta.url).pathname;
const llama = join(root, 'test/fixtures/models/llama');

function config(dir: string, steps: number) {
  writeFileSync(join(dir, 'text.txt'), readFileSync(join(root, 'test/fixtures/eval/shakespeare.txt'), 'utf8'));
  return runConfigSchema.parse({
    model: llama,
    output_dir: join(dir, 'run'),
    data: { path: join(dir, 'text.txt'), seq_len: 32, cache_dir: false },
    adapter: { target_modules: ['q_proj', 'v_proj', 'down_proj'], r: 8, lora_alpha: 16, init_lora_weights: false },
    training: { max_steps: steps, per_device_train_batch_size: 2, learning_rate: 0.01, save_steps: 100 },
  });
}

test('staged squeeze: each stage continues the squeezed adapter of the one before, down to the last rank', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lorakit-stages-'));
  const c = config(dir, 5);
  const out = await runSqueezeStages(
    c,
    [
      { at: 2, rank: 4 },
      { at: 4, rank: 2 },
    ],
    { progress: 'none' },
  );
  assert.deepEqual(
    out.stages.map((s) => [s.steps, s.rank, s.output.result.step]),
    [
      [2, null, 2],
      [2, 4, 2],
      [1, 2, 1],
    ],
  );
  assert.equal(out.adapterDir, join(c.output_dir, 'stage-2', 'final'));
  assert.equal(JSON.parse(readFileSync(join(out.adapterDir, 'adapter_config.json'), 'utf8')).r, 2);
  const model = await loadModel(llama);
  try {
    for (const [i, s] of out.stages.slice(0, 2).entries()) {
      // the folder between stages is squeezeAdapter's output for the stage's final adapter, byte for byte
      const peft = new PeftModel(adaptable(model));
      await loadAdapter(peft, s.output.adapterDir);
      const again = await mkdtemp(join(dir, 'again-'));
      await squeezeAdapter(peft, 'default', again, { rank: [4, 2][i], baseModel: llama });
      for (const f of ['adapter_model.safetensors', 'adapter_config.json'])
        assert.ok(readFileSync(join(again, f)).equals(readFileSync(join(s.squeezed!.dir, f))), `stage ${i} ${f}`);
      assert.ok(s.squeezed!.report.layers.every((l) => l.rank === [4, 2][i]));
    }
  } finally {
    await model.close();
  }
});

test('annealingStages halves the rank at evenly spaced steps over the first half; bad schedules are refused', async () => {
  assert.deepEqual(annealingStages({ sourceRank: 16, targetRank: 2, steps: 100 }), [
    { at: 17, rank: 8 },
    { at: 33, rank: 4 },
    { at: 50, rank: 2 },
  ]);
  assert.deepEqual(annealingStages({ sourceRank: 16, targetRank: 3, steps: 40, until: 0.25 }), [
    { at: 3, rank: 8 },
    { at: 7, rank: 4 },
    { at: 10, rank: 3 },
  ]);
  const c = config(mkdtempSync(join(tmpdir(), 'lorakit-stages-')), 4);
  const bad = (stages: { at: number; rank: number }[]) =>
    assert.rejects(
      runSqueezeStages(c, stages),
      (e: unknown) => e instanceof LorakitError && e.code === 'LK_INVALID_ARGUMENT',
    );
  await bad([{ at: 4, rank: 2 }]);
  await bad([
    { at: 1, rank: 2 },
    { at: 2, rank: 4 },
  ]);
  await bad([]);
});
