// Sample generations at eval steps: samples/step-<N>.jsonl holds each prompt's greedy continuation with the adapter
// as trained at step N — the same text generate() gives with the adapter folder saved at that step.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HfTokenizer } from '../../src/io/tokenizer.ts';
import { generate, loadModel } from '../../src/models/index.ts';
import { PeftModel, adaptable, loadAdapter } from '../../src/peft/index.ts';
import { shutdownRuntime } from '../../src/runtime/index.ts';
import { runConfigSchema, runTraining } from '../../src/train/index.ts';

after(() => shutdownRuntime());
const root = new URL('../../', import.meta.url).pathname;
const llama = join(root, 'test/fixtures/models/llama');

test('samples/step-N.jsonl equals greedy generate() with the adapter saved at step N', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lorakit-samples-'));
  writeFileSync(join(dir, 'text.txt'), readFileSync(join(root, 'test/fixtures/eval/shakespeare.txt'), 'utf8'));
  const conversation = [{ role: 'user', content: 'Speak.' }];
  const prompts = ['First Citizen:', { messages: conversation }];
  const config = runConfigSchema.parse({
    model: llama,
    output_dir: join(dir, 'run'),
    data: { path: join(dir, 'text.txt'), seq_len: 32, cache_dir: false },
    // random B (init_lora_weights false): the adapter changes the model from the first step on
    adapter: { target_modules: ['q_proj', 'v_proj'], r: 4, lora_alpha: 8, init_lora_weights: false },
    training: {
      max_steps: 4,
      per_device_train_batch_size: 2,
      learning_rate: 0.02,
      eval_steps: 2,
      sample_prompts: prompts,
      sample_max_new_tokens: 6,
    },
  });
  const out = await runTraining(config, { progress: 'none' });
  assert.equal(out.samplesDir, join(dir, 'run', 'samples'));
  assert.deepEqual(readdirSync(out.samplesDir!).sort(), ['step-2.jsonl', 'step-4.jsonl']);
  const lines = readFileSync(join(out.samplesDir!, 'step-4.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  assert.deepEqual(
    lines.map((l) => [l.step, l.prompt]),
    prompts.map((p) => [4, p]),
  );

  const model = await loadModel(llama);
  try {
    const tokenizer = await HfTokenizer.fromDir(llama);
    const peft = new PeftModel(adaptable(model));
    await loadAdapter(peft, out.adapterDir); // the adapter as trained at step 4, the last step
    const adapter = peft.generationAdapter();
    const text = await generate(model, tokenizer, { prompt: 'First Citizen:', maxNewTokens: 6, adapter });
    const chat = await generate(model, tokenizer, { messages: conversation, maxNewTokens: 6, adapter });
    for (const [i, g] of [text, chat].entries()) {
      assert.equal(lines[i].completion, g.rows[0].text, `prompt ${i}`);
      assert.equal(lines[i].new_tokens, g.rows[0].tokenIds.length);
      assert.equal(lines[i].finish_reason, g.rows[0].finishReason);
    }
    const base = await generate(model, tokenizer, { prompt: 'First Citizen:', maxNewTokens: 6 });
    assert.notEqual(base.rows[0].tokenIds.join(), text.rows[0].tokenIds.join(), 'the adapter changed the sample');
  } finally {
    await model.close();
  }
});
