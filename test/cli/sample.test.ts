// `lorakit sample` on a tiny U-Net trained with positional prompts: the CLI reads the prompt kind from the folder
// (lorakit_prompt.json) and its PNG equals an in-process draw with positional states (and not one with the tokens
// alone); a positional prompt needs exactly [left, right]; --compose cmlora-freq scores and orders the LoRAs.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { test } from 'node:test';
import { canvasGridPng } from '../../src/cli/png.ts';
import { Rng } from '../../src/linalg/index.ts';
import {
  initUNetConditionWeights,
  loadUNetCondition,
  memoryUNetCondition,
  noiseSchedule,
  saveUNetCondition,
} from '../../src/models/index.ts';
import { loadAdapter, PeftModel, saveAdapter } from '../../src/peft/index.ts';
import { shutdownRuntime } from '../../src/runtime/index.ts';
import { sampleComposed } from '../../src/serve/index.ts';
import { canvasPrompt, oneHotStates, promptStates, savePromptKind } from '../../src/train/index.ts';
import { tinyUNetConditionConfig } from '../unet-configs.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const lorakit = (...args: string[]) =>
  spawnSync(process.execPath, [join(ROOT, 'bin/lorakit.mjs'), ...args], { encoding: 'utf8' });

test('sample reads a positional U-Net folder, draws what promptStates gives, and composes with cmlora-freq', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'lk-sample-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const config = tinyUNetConditionConfig({ cross_attention_dim: 14, sample_size: [4, 8] });
  const weights = initUNetConditionWeights(config, new Rng(3));
  const model = join(dir, 'unet');
  await saveUNetCondition(model, config, weights);
  await savePromptKind(model, 'positional');
  const peft = new PeftModel(memoryUNetCondition(config, weights).base());
  const lora = { peft_type: 'LORA', r: 2, lora_alpha: 4, init_lora_weights: false, target_modules: ['to_k', 'conv1'] };
  for (const [name, seed] of [
    ['la', 1],
    ['lb', 2],
  ] as const) {
    await peft.addAdapter(name, lora, { seed });
    await saveAdapter(peft, name, join(dir, name));
  }
  const png = join(dir, 'merge.png');
  const args = ['--model', model, '--steps', '4', '--n', '2', '--seed', '5', '--prompt', '5,7'];
  const r = lorakit('sample', ...args, '--lora', join(dir, 'la'), '--out', png);
  assert.equal(r.status, 0, r.stderr);

  // the same draw in-process: positional states of [5, 7] and of the null prompt
  const unet = await loadUNetCondition(model);
  const p2 = new PeftModel(unet.base());
  await loadAdapter(p2, join(dir, 'la'), 'la');
  const draw = (states: (t: Int32Array) => Float32Array) =>
    sampleComposed({
      unet,
      peft: p2,
      adapters: ['la'],
      method: 'merge',
      schedule: noiseSchedule(),
      batch: 2,
      states: states(canvasPrompt(2, 5, 7)),
      nullStates: states(canvasPrompt(2, 11, 11)),
      sampleShape: [1, 4, 8],
      guidance: 3,
      steps: 4,
      sampler: 'ddim',
      seed: 5,
    });
  const grid = (x: Float32Array) => canvasGridPng([x], { height: 4, width: 8, scale: 4 });
  const positional = grid(await draw((t) => promptStates(t, 'positional')));
  // tokens without positions (zero position columns): what a reader ignoring the folder's kind would build
  const tokensOnly = grid(await draw((t) => oneHotStates(t, 14)));
  await unet.close();
  await shutdownRuntime();
  assert.deepEqual(readFileSync(png), positional);
  assert.notDeepEqual(readFileSync(png), tokensOnly);

  const bad = lorakit('sample', '--model', model, '--prompt', '5,7,1', '--out', join(dir, 'x.png'));
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /\[left, right\]: positional prompts/);

  const freq = join(dir, 'freq.png');
  const f = lorakit(
    'sample',
    ...args,
    '--lora',
    join(dir, 'la'),
    '--lora',
    join(dir, 'lb'),
    '--compose',
    'cmlora-freq',
    '--out',
    freq,
  );
  assert.equal(f.status, 0, f.stderr);
  assert.match(f.stdout, /frequency scores: .*la \d\.\d{4}, .*lb \d\.\d{4}; order .*\(1 high\)/);
  assert.match(f.stdout, /wrote 2 samples \(cmlora-freq, 2 LoRA\(s\)/);
  assert.ok(readFileSync(freq).length > 0);
});
