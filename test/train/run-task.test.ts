// runTaskOf: the one reader of a run config's `task` key, which `lorakit train` dispatches on. A config without the
// key, or a file that is missing, a folder or not YAML, goes to the causal-LM trainer, whose loader reports the problem.
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { runTaskOf } from '../../src/train/index.ts';

test('runTaskOf reads the task key; anything else is the causal-LM trainer', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lk-task-'));
  const file = (name: string, text: string) => {
    const p = join(dir, name);
    writeFileSync(p, text);
    return p;
  };
  assert.equal(runTaskOf(file('seg.yaml', 'task: segmentation\nmethod: lora_c\n')), 'segmentation');
  assert.equal(runTaskOf(file('diff.yaml', 'task: diffusion\n')), 'diffusion');
  assert.equal(runTaskOf(file('lm.yaml', 'model: {path: m}\n')), 'causal_lm');
  assert.equal(runTaskOf(file('other.yaml', 'task: detection\n')), 'causal_lm');
  assert.equal(runTaskOf(file('list.yaml', '- task: diffusion\n')), 'causal_lm');
  assert.equal(runTaskOf(file('bad.yaml', 'task: [unclosed\n')), 'causal_lm');
  assert.equal(runTaskOf(join(dir, 'missing.yaml')), 'causal_lm');
  assert.equal(runTaskOf(dir), 'causal_lm');
});
