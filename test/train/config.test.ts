// Run configs: strict YAML validation naming keys and types, --set overrides, relative paths.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadRunConfig } from '../../src/train/index.ts';

const write = (text: string) => {
  const d = mkdtempSync(join(tmpdir(), 'lk-cfg-'));
  const f = join(d, 'run.yaml');
  writeFileSync(f, text);
  return { d, f };
};
const base = 'model: ./m\noutput_dir: out\ndata:\n  path: data.jsonl\ntraining:\n  max_steps: 5\n';

test('a minimal config gets defaults and paths relative to the config file', () => {
  const { d, f } = write(base);
  const c = loadRunConfig(f);
  assert.equal(c.model, join(d, 'm'));
  assert.equal(c.data.path, join(d, 'data.jsonl'));
  assert.equal(c.data.seq_len, 256);
  assert.deepEqual(c.adapter, { target_modules: 'all-linear' });
});

test("training defaults are transformers' TrainingArguments defaults", () => {
  const c = loadRunConfig(write('model: ./m\noutput_dir: out\ndata:\n  path: data.jsonl\n').f);
  const t = c.training;
  assert.deepEqual(
    [t.learning_rate, t.per_device_train_batch_size, t.max_grad_norm, t.num_train_epochs, t.max_steps, t.save_steps],
    [5e-5, 8, 1, 3, undefined, 500],
  );
  assert.deepEqual([t.weight_decay, t.lr_scheduler_type, t.gradient_accumulation_steps, t.seed], [0, 'linear', 1, 42]);
});

test('model: a folder next to the config is a path; a hub id that names no folder there stays an id', () => {
  const { d, f } = write(base.replace('./m', 'TinyOrg/tiny'));
  assert.equal(loadRunConfig(f).model, 'TinyOrg/tiny');
  mkdirSync(join(d, 'TinyOrg', 'tiny'), { recursive: true });
  assert.equal(loadRunConfig(f).model, join(d, 'TinyOrg', 'tiny'));
});

test('--set overrides nested values, parsed as YAML scalars', () => {
  const { f } = write(base);
  const c = loadRunConfig(f, ['training.learning_rate=1e-3', 'data.packing=true', 'adapter.r=4']);
  assert.equal(c.training.learning_rate, 1e-3);
  assert.equal(c.data.packing, true);
  assert.equal(c.adapter.r, 4);
});

test('unknown keys and wrong types are named with their path', () => {
  const { f } = write(`${base}  lerning_rate: 1\n`);
  assert.throws(() => loadRunConfig(f), /unknown key training\.lerning_rate/);
  const { f: f2 } = write(base.replace('max_steps: 5', 'max_steps: five'));
  assert.throws(() => loadRunConfig(f2), /training\.max_steps: .*expected number/i);
  const { f: f4 } = write('model: [unclosed\n');
  assert.throws(() => loadRunConfig(f4), /not valid YAML at line \d+, column \d+/);
  assert.throws(() => loadRunConfig('/nope/run.yaml'), /does not exist/);
  assert.throws(
    () => loadRunConfig(tmpdir()),
    /^LorakitError: run config .* is a folder, not a file; name the YAML file$/,
  );
  assert.throws(() => loadRunConfig(write(base).f, ['novalue']), /expected key\.path=value/);
});

test('validation_file and chat_template_file resolve against the config; each excludes its alternative', () => {
  const { d, f } = write(
    `${base}`.replace(
      '  path: data.jsonl\n',
      '  path: data.jsonl\n  validation_file: ev.jsonl\n  chat_template_file: t.jinja\n',
    ),
  );
  const c = loadRunConfig(f);
  assert.equal(c.data.validation_file, join(d, 'ev.jsonl'));
  assert.equal(c.data.chat_template_file, join(d, 't.jinja'));
  assert.throws(
    () => loadRunConfig(f, ['data.held_out=4']),
    /data\.validation_file: held_out and validation_file both choose the eval data/,
  );
  assert.throws(() => loadRunConfig(f, ['data.chat_template=x']), /data\.chat_template_file: chat_template and/);
  const t = loadRunConfig(write(base).f, ['training.logging_steps=3', 'training.resume_override=true']).training;
  assert.deepEqual([t.logging_steps, t.resume_override, t.sample_max_new_tokens], [3, true, 32]);
});
