// The SmolLM2 pool's task framing (scripts/smollm2-pool-tasks.ts) on a few hand-written records — each task's chat,
// the SST-2 parser's errors and the first-token rule — and, where ../shared/data is present, the fixed held-out sets:
// 64 per task, none of them among the (first 2,000) training records the data phase writes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import {
  firstTokenCorrect,
  gsm8kChat,
  HELD_OUT,
  instructionChat,
  parseSst2,
  POOL_TASKS,
  readTask,
  sst2Chat,
} from '../../scripts/smollm2-pool-tasks.ts';
import { needsShared } from '../helpers.ts';

const said = (r: { messages: { role: string; content: string }[] }) => r.messages.map((m) => `${m.role}: ${m.content}`);

test('Alpaca-style records: the input follows the instruction after a blank line, only when it has text', () => {
  assert.deepEqual(said(instructionChat({ instruction: 'Sort.', input: '3, 1', output: '1, 3' })), [
    'user: Sort.\n\n3, 1',
    'assistant: 1, 3',
  ]);
  assert.deepEqual(said(instructionChat({ instruction: 'Say hi.', input: '  \n', output: 'hi' })), [
    'user: Say hi.',
    'assistant: hi',
  ]);
  assert.deepEqual(said(instructionChat({ instruction: 'Say hi.', output: 'hi' })), ['user: Say hi.', 'assistant: hi']);
});

test('GSM8K keeps the worked answer verbatim, calculator notes and the final line included', () => {
  const answer = 'She sold 48/2 = <<48/2=24>>24 clips.\n#### 24';
  assert.deepEqual(said(gsm8kChat({ question: 'How many?', answer })), ['user: How many?', `assistant: ${answer}`]);
});

test('SST-2: sentence and question in the user turn, the label as one word', () => {
  assert.deepEqual(said(sst2Chat(' a charming journey . ', 1)), [
    'user: Sentence: a charming journey .\nIs the sentiment positive or negative?',
    'assistant: positive',
  ]);
  assert.equal(sst2Chat('bleak', 0).messages[1].content, 'negative');
});

test('parseSst2 reads the TSV and names the line of a bad label or a missing header', () => {
  assert.deepEqual(parseSst2('sentence\tlabel\nit works \t1\nit fails\t0\n', 'x.tsv'), [
    { sentence: 'it works ', label: 1 },
    { sentence: 'it fails', label: 0 },
  ]);
  assert.throws(() => parseSst2('sentence\tlabel\nok\t1\nbad\t2\n', 'x.tsv'), /x\.tsv line 3: expected/);
  assert.throws(() => parseSst2('text\tlabel\nok\t1\n', 'x.tsv'), /x\.tsv: expected the header/);
});

test('first-token accuracy: a prefix of the right label only', () => {
  assert.equal(firstTokenCorrect('positive', 'positive'), true);
  assert.equal(firstTokenCorrect(' Pos', 'positive'), true);
  assert.equal(firstTokenCorrect('negative', 'positive'), false);
  assert.equal(firstTokenCorrect('The', 'positive'), false);
  assert.equal(firstTokenCorrect(' ', 'negative'), false);
});

const DATA = join(import.meta.dirname, '..', '..', '..', 'shared', 'data');
for (const task of POOL_TASKS) {
  const rel = { alpaca: 'alpaca', gsm8k: 'gsm8k', code_alpaca: 'code_alpaca_2k', sst2: 'sst2' }[task];
  test(`${task}: ${HELD_OUT} held-out chats, none of them trained on`, { skip: needsShared(rel) }, () => {
    const s = readTask(task, DATA, 2000); // the records the data phase writes
    assert.equal(s.heldOut.length, HELD_OUT);
    assert.ok(s.train.length > 1000 && s.train.length <= 2000, `${task}: ${s.train.length} training records`);
    const train = new Set(s.train.map((r) => JSON.stringify(r)));
    // SST-2's and GSM8K's held-out sets come from their dev/test splits; a verbatim repeat in train would leak
    const leaked = s.heldOut.filter((r) => train.has(JSON.stringify(r))).length;
    assert.equal(leaked, 0, `${task}: ${leaked} held-out records also in train`);
    for (const r of [...s.heldOut, ...s.train.slice(0, 50)]) {
      assert.deepEqual(
        r.messages.map((m) => m.role),
        ['user', 'assistant'],
      );
      assert.ok(r.messages[1].content.length > 0);
    }
  });
}
