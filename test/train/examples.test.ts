// The committed example runs (examples/*/run.yaml) stay valid run configs as the schema changes, and the SmolLM2 chat
// example keeps what README "Models" promises: the real GGUF, chat records rendered with the model's own template,
// a held-out file evaluated before and after. Not here: running them (minutes; README gives the measured run).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { loadRunConfig } from '../../src/train/index.ts';

const EXAMPLES = resolve('examples');

test('every examples/*/run.yaml loads as a run config', () => {
  const dirs = readdirSync(EXAMPLES).filter((d) => existsSync(join(EXAMPLES, d, 'run.yaml')));
  assert.ok(dirs.length >= 1, 'at least the SmolLM2 chat example');
  for (const d of dirs) assert.doesNotThrow(() => loadRunConfig(join(EXAMPLES, d, 'run.yaml')), d);
});

test('the SmolLM2 chat example trains the shared GGUF on chat records with the GGUF chat template', () => {
  const c = loadRunConfig(join(EXAMPLES, 'smollm2-chat', 'run.yaml'));
  assert.equal(c.model, resolve('../shared/data/models/smollm2-135m-instruct-q4_1/SmolLM2-135M-Instruct.Q4_1.gguf'));
  assert.equal(c.data.format, 'chat');
  assert.equal(c.data.chat_template, undefined, "no override: the template comes from the GGUF's metadata");
  assert.equal(c.data.chat_template_file, undefined);
  assert.equal(c.data.validation_file, resolve('runs/smollm2-chat/valid.jsonl'), 'what make-data.mjs writes');
  assert.equal(c.training.eval_on_start, true);
  assert.equal(c.training.eval_steps, c.training.max_steps, 'evaluated after the last step');
  assert.equal(loadRunConfig(join(EXAMPLES, 'smollm2-chat', 'run.yaml'), ['quantize=q4']).quantize, 'q4');
});
