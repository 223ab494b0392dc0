// A run's data: warnings (skipped records, truncated examples, dropped rows) reported once each with their counts,
// as soon as the data is read; a separate validation_file as the eval rows; a chat_template given in the config.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HfTokenizer } from '../../src/io/tokenizer.ts';
import { type Notice, type RunConfig, runConfigSchema } from '../../src/train/index.ts';
import { loadRunData } from '../../src/train/run-data.ts';

const root = new URL('../../', import.meta.url).pathname;
const model = (name: string) => join(root, 'test/fixtures/models', name);
const tmp = () => mkdtempSync(join(tmpdir(), 'lorakit-rundata-'));
const data = (d: Record<string, unknown>): RunConfig['data'] =>
  runConfigSchema.parse({ model: 'm', output_dir: 'o', data: { cache_dir: false, ...d } }).data;

/** A JSONL file of prompt/completion pairs: `good` short ones, `long` with long completions (truncated, still
 * trained), `longPrompt` whose prompt fills seq_len (no loss token left: dropped), `bad` malformed lines. */
function pairs(dir: string, n: { good: number; long: number; longPrompt: number; bad: number }): string {
  const lines: string[] = [];
  for (let i = 0; i < n.good; i++) lines.push(JSON.stringify({ prompt: `Q${i}?`, completion: ` A${i}.` }));
  for (let i = 0; i < n.long; i++) lines.push(JSON.stringify({ prompt: 'Say:', completion: ' word'.repeat(40) }));
  for (let i = 0; i < n.longPrompt; i++) lines.push(JSON.stringify({ prompt: 'word '.repeat(40), completion: ' x' }));
  for (let i = 0; i < n.bad; i++) lines.push(i % 2 ? '{"prompt": "no completion"}' : '{not json');
  const f = join(dir, 'pairs.jsonl');
  writeFileSync(f, `${lines.join('\n')}\n`);
  return f;
}

test('each data warning is reported once, with its count, while the data loads', async () => {
  const tok = await HfTokenizer.fromDir(model('llama'));
  const dir = tmp();
  const path = pairs(dir, { good: 12, long: 3, longPrompt: 2, bad: 2 });
  const notices: Notice[] = [];
  const r = await loadRunData(data({ path, seq_len: 16 }), tok, (n) => notices.push(n));
  assert.equal(notices.length, 3, notices.map((n) => n.message).join('\n'));
  assert.ok(notices.every((n) => n.level === 'warning'));
  const [skipped, truncated, dropped] = notices.map((n) => n.message);
  assert.match(skipped, /pairs\.jsonl: skipped 2 malformed record\(s\); the first: pairs\.jsonl:18/);
  assert.match(truncated, /5 of 17 examples were longer than seqLen 16 and were truncated/);
  assert.match(dropped, /2 row\(s\) had no token to learn .* dropped/);
  assert.deepEqual([r.skipped, r.train.size, r.eval], [2, 15, undefined]);
});

test('validation_file gives the eval rows, read with the training options; its warnings are reported too', async () => {
  const tok = await HfTokenizer.fromDir(model('llama'));
  const dir = tmp();
  const path = pairs(dir, { good: 10, long: 0, longPrompt: 0, bad: 0 });
  const val = join(dir, 'val.jsonl');
  writeFileSync(
    val,
    `${['{"prompt": "a", "completion": " b"}', '{"prompt": 1}', '{"prompt": "c", "completion": " d"}'].join('\n')}\n`,
  );
  const notices: Notice[] = [];
  const r = await loadRunData(data({ path, seq_len: 16, validation_file: val }), tok, (n) => notices.push(n));
  assert.equal(r.train.size, 10, 'nothing is held out of the training file');
  assert.equal(r.eval?.size, 2);
  assert.equal(r.eval?.seqLen, 16);
  assert.deepEqual(
    notices.map((n) => n.message.replace(/;.*/, '')),
    ['val.jsonl: skipped 1 malformed record(s)'],
  );
});

test('chat_template (inline or from a file) renders chat records for a tokenizer that has none', async () => {
  const tok = await HfTokenizer.fromDir(model('gpt2')); // its tokenizer_config.json has no chat_template
  const dir = tmp();
  const path = join(dir, 'chat.jsonl');
  const conv = (i: number) => ({
    messages: [
      { role: 'user', content: `hi ${i}` },
      { role: 'assistant', content: `hello ${i}` },
    ],
  });
  writeFileSync(path, `${[0, 1, 2, 3].map((i) => JSON.stringify(conv(i))).join('\n')}\n`);
  const template =
    "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + eos_token + '\\n' }}{% endfor %}" +
    "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}";
  await assert.rejects(
    loadRunData(data({ path, seq_len: 32 }), tok, () => {}),
    /no "chat_template"/,
  );
  const inline = await loadRunData(data({ path, seq_len: 32, chat_template: template }), tok, () => {});
  const file = join(dir, 'chat_template.jinja');
  writeFileSync(file, template);
  const fromFile = await loadRunData(data({ path, seq_len: 32, chat_template_file: file }), tok, () => {});
  assert.equal(inline.chatTemplate, template);
  assert.deepEqual(fromFile.train.row(0), inline.train.row(0));
  const row = inline.train.row(0);
  const trained = tok.decode(row.labels.filter((l) => l >= 0));
  // GPT-2's BPE merges the space before "hello" into its first token, which is the assistant's
  assert.equal(trained, ' hello 0<|endoftext|>', 'loss falls on the assistant turn as the template renders it');
  assert.equal(tok.decode(row.inputIds), 'user: hi 0<|endoftext|>\nassistant: hello 0<|endoftext|>\n');
});
