// LoRAPrune end to end on the tiny Llama fixture: the run trains the LoRA under the cubic schedule, its last
// checkpoint's masks prune exactly the target (one of two KV-head groups and 64 of 128 channels per layer), the
// merged, sliced folder computes what the full model with the trained LoRA and those masks computes (the loraprune
// variant fed the plan's masks), it is smaller, and the report measures loss and speed of base, adapted and pruned.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Graph } from '../../src/graph/index.ts';
import { buildCausalLM, loadModel } from '../../src/models/index.ts';
import { MASK_INPUTS, PeftModel, adaptable, loadAdapter, planMasks, stepKey } from '../../src/peft/index.ts';
import { compile, shutdownRuntime } from '../../src/runtime/index.ts';
import { runConfigSchema, runPrune } from '../../src/train/index.ts';
import { assertAllclose } from '../helpers.ts';

after(() => shutdownRuntime());
const root = new URL('../../', import.meta.url).pathname;
const llama = join(root, 'test/fixtures/models/llama');
const IDS = [
  [1, 40, 77, 5, 200, 31, 9, 12],
  [1, 3, 300, 250, 6, 61, 90, 2],
];

async function logits(dir: string, hooks?: (m: Awaited<ReturnType<typeof loadModel>>) => Promise<object>) {
  const model = await loadModel(dir);
  try {
    const g = new Graph('prune-logits');
    const inputIds = g.input('input_ids', 'i64', [2, 8]);
    const extra = hooks ? await hooks(model) : {};
    const { hooks: h, feeds } = extra as { hooks?: never; feeds?: Record<string, Float32Array> };
    g.output('logits', buildCausalLM(model.context(g, { hooks: h }), { inputIds }).logits);
    const s = await compile(g, { worker: false });
    return (await s.run({ input_ids: BigInt64Array.from(IDS.flat(), BigInt), ...feeds })).logits.data as Float32Array;
  } finally {
    await model.close();
  }
}

test('runPrune trains with masks, slices the target structure and measures the pruned model', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lorakit-prune-'));
  const text = readFileSync(join(root, 'test/fixtures/eval/shakespeare.txt'), 'utf8');
  writeFileSync(join(dir, 'train.txt'), text);
  writeFileSync(join(dir, 'eval.txt'), text.slice(0, 2000));
  const config = runConfigSchema.parse({
    model: llama,
    output_dir: join(dir, 'run'),
    data: { path: join(dir, 'train.txt'), seq_len: 32, cache_dir: false },
    adapter: { target_modules: 'all-linear', r: 4, lora_alpha: 8, init_lora_weights: false },
    training: { max_steps: 6, per_device_train_batch_size: 2, learning_rate: 0.01 },
  });
  const loraprune = { prune_freq: 1, warmup: 0, cooldown: 0.5 }; // the target is reached at step 6 (g = 4)
  const out = await runPrune(
    config,
    { out: join(dir, 'pruned'), loraprune, evalData: join(dir, 'eval.txt') },
    { progress: 'none' },
  );
  const r = out.report;
  assert.deepEqual(r.kept, { heads: [1, 1], channels: [64, 64] });
  assert.equal(r.finalPrunes, 0);
  assert.deepEqual([r.sizes.num_key_value_heads, r.sizes.num_attention_heads, r.sizes.intermediate_size], [1, 2, 64]);
  assert.ok(r.bytes.pruned < 0.8 * r.bytes.base && r.parameters.pruned < r.parameters.base, JSON.stringify(r));
  assert.deepEqual(JSON.parse(readFileSync(join(dir, 'run', 'prune_report.json'), 'utf8')), r);
  for (const m of [r.eval!.base, r.eval!.adapted, r.eval!.pruned])
    assert.ok(Number.isFinite(m.loss) && m.tokensPerSecond > 0, JSON.stringify(m));
  assert.notEqual(r.eval!.adapted.loss, r.eval!.base.loss);

  // the sliced folder (LoRA merged) equals the full model running the trained LoRA under the final masks
  const masks = planMasks(out.plan);
  const masked = await logits(llama, async (model) => {
    const peft = new PeftModel(adaptable(model));
    const overrides = { loraprune: { total_steps: 6, kv_heads: 2, skip_last: 0 } };
    await loadAdapter(peft, out.run.adapterDir, 'default', { configOverrides: overrides });
    const binding = peft.bind({ train: 'default', feedStepInputs: true });
    const feeds = {
      ...Object.fromEntries(peft.trainableValues('default')),
      [stepKey('default', { name: MASK_INPUTS.heads, layer: null })]: masks.heads,
      [stepKey('default', { name: MASK_INPUTS.channels, layer: null })]: masks.channels,
    };
    return { hooks: binding.hooks, feeds };
  });
  assertAllclose(await logits(out.slice.dir), masked, { atol: 2e-5, rtol: 0, what: 'sliced vs masked' });
});
