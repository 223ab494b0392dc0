// Parsing dataset files: format detection, field mapping, the Alpaca template, and malformed-record reports.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { parseDataFile, alpacaPrompt, type DataRecord } from '../../../src/train/data/records.ts';
import { LorakitError } from '../../../src/errors.ts';

const jsonl = (rows: unknown[]) => `${rows.map((r) => JSON.stringify(r)).join('\n')}\n`;
const strip = (records: DataRecord[]) => records.map(({ where: _, ...r }) => r);

/** Asserts that `fn` throws a LorakitError with `code` whose message matches every pattern. */
function throwsLk(fn: () => unknown, code: string, ...patterns: RegExp[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof LorakitError, `expected a LorakitError, got ${String(e)}`);
    assert.equal(e.code, code);
    for (const p of patterns) assert.match(e.message, p);
    return true;
  });
}

describe('format detection', () => {
  test('a .txt file is one plain document, whatever it contains', () => {
    const r = parseDataFile('/d/book.txt', '{"text": "not json to us"}\n');
    assert.equal(r.format, 'plain');
    assert.deepEqual(strip(r.records), [{ kind: 'plain', text: '{"text": "not json to us"}\n' }]);
  });

  test('records are recognised by their fields: text, prompt/completion, Alpaca, messages', () => {
    assert.equal(parseDataFile('a.jsonl', jsonl([{ text: 'x' }])).format, 'text');
    assert.equal(parseDataFile('a.jsonl', jsonl([{ prompt: 'p', completion: 'c' }])).format, 'prompt-completion');
    assert.equal(
      parseDataFile('a.json', JSON.stringify([{ instruction: 'i', input: '', output: 'o' }])).format,
      'alpaca',
    );
    assert.equal(
      parseDataFile(
        'a.json',
        JSON.stringify([
          {
            messages: [
              { role: 'user', content: 'u' },
              { role: 'assistant', content: 'a' },
            ],
          },
        ]),
      ).format,
      'chat',
    );
  });

  test('a JSON array and JSONL give the same records; a .json file holding JSONL is read as JSONL', () => {
    const rows = [
      { prompt: 'a', completion: 'b' },
      { prompt: 'c', completion: 'd' },
    ];
    const fromArray = parseDataFile('x.json', JSON.stringify(rows, null, 2));
    const fromLines = parseDataFile('x.jsonl', jsonl(rows));
    const fromJsonAsLines = parseDataFile('x.json', jsonl(rows));
    assert.deepEqual(strip(fromArray.records), strip(fromLines.records));
    assert.deepEqual(strip(fromJsonAsLines.records), strip(fromLines.records));
    assert.deepEqual(
      fromArray.records.map((r) => r.where),
      [
        { file: 'x.json', index: 0 },
        { file: 'x.json', index: 1 },
      ],
    );
    assert.deepEqual(
      fromLines.records.map((r) => r.where),
      [
        { file: 'x.jsonl', line: 1 },
        { file: 'x.jsonl', line: 2 },
      ],
    );
  });

  test('field mapping reads other column names (GSM8K question/answer as prompt/completion)', () => {
    const r = parseDataFile('gsm.jsonl', jsonl([{ question: 'Q?', answer: 'A.' }]), {
      fields: { prompt: 'question', completion: 'answer' },
    });
    assert.equal(r.format, 'prompt-completion');
    assert.deepEqual(strip(r.records), [{ kind: 'pair', prompt: 'Q?', completion: 'A.' }]);
  });

  test('ShareGPT conversations (from/value, human/gpt) are read as chat messages', () => {
    const r = parseDataFile(
      's.jsonl',
      jsonl([
        {
          conversations: [
            { from: 'system', value: 's' },
            { from: 'human', value: 'h' },
            { from: 'gpt', value: 'g' },
          ],
        },
      ]),
    );
    assert.equal(r.format, 'chat');
    assert.deepEqual(strip(r.records), [
      {
        kind: 'chat',
        messages: [
          { role: 'system', content: 's' },
          { role: 'user', content: 'h' },
          { role: 'assistant', content: 'g' },
        ],
      },
    ]);
  });

  test('a forced format wins over detection, and a malformed first record does not decide the format', () => {
    const r = parseDataFile('a.jsonl', jsonl([{ text: 't', prompt: 'p', completion: 'c' }]), { format: 'text' });
    assert.deepEqual(strip(r.records), [{ kind: 'text', text: 't' }]);
    const late = parseDataFile('a.jsonl', `{"oops": 1}\n${jsonl([{ text: 't' }])}`);
    assert.equal(late.format, 'text');
    assert.deepEqual(late.problems, [{ file: 'a.jsonl', line: 1, message: 'missing field "text"' }]);
    assert.equal(parseDataFile('notes.md', 'hello', { format: 'plain' }).format, 'plain');
  });
});

describe('Alpaca prompt template', () => {
  test('with input: the Stanford Alpaca template, byte for byte', () => {
    assert.equal(
      alpacaPrompt('Add the numbers.', '2 and 3'),
      'Below is an instruction that describes a task, paired with an input that provides further context. Write a ' +
        'response that appropriately completes the request.\n\n### Instruction:\nAdd the numbers.\n\n### Input:\n2 ' +
        'and 3\n\n### Response:\n',
    );
  });

  test('without input (missing, null or blank): the no-input template', () => {
    const expected =
      'Below is an instruction that describes a task. Write a response that appropriately completes the ' +
      'request.\n\n### Instruction:\nSay hi.\n\n### Response:\n';
    assert.equal(alpacaPrompt('Say hi.'), expected);
    const r = parseDataFile(
      'a.json',
      JSON.stringify([
        { instruction: 'Say hi.', output: 'hi' },
        { instruction: 'Say hi.', input: null, output: 'hi' },
        { instruction: 'Say hi.', input: '  ', output: 'hi' },
      ]),
    );
    for (const rec of r.records)
      assert.deepEqual(
        { ...rec, where: undefined },
        { kind: 'pair', prompt: expected, completion: 'hi', where: undefined },
      );
  });

  test('$ patterns in the data are copied as they are', () => {
    assert.match(alpacaPrompt('Price is $& and $1', '$$'), /Price is \$& and \$1\n\n### Input:\n\$\$\n/);
  });
});

describe('malformed records', () => {
  const lines = [
    '{"prompt": "p1", "completion": "c1"}',
    '{"prompt": "p2", "completion": ',
    '',
    '{"prompt": "p3"}',
    '{"prompt": "p4", "completion": 7}',
    '{"prompt": "p5", "completion": "   "}',
    '[1, 2]',
    '{"prompt": "p6", "completion": "c6"}',
  ].join('\n');

  test('each bad JSONL line is reported with its line number and what is wrong; the good ones are kept', () => {
    const r = parseDataFile('/data/train.jsonl', lines);
    assert.deepEqual(strip(r.records), [
      { kind: 'pair', prompt: 'p1', completion: 'c1' },
      { kind: 'pair', prompt: 'p6', completion: 'c6' },
    ]);
    assert.deepEqual(
      r.problems.map((p) => [p.file, p.line]),
      [
        ['train.jsonl', 2],
        ['train.jsonl', 4],
        ['train.jsonl', 5],
        ['train.jsonl', 6],
        ['train.jsonl', 7],
      ],
    );
    assert.match(r.problems[0]!.message, /^invalid JSON: /);
    assert.equal(r.problems[1]!.message, 'missing field "completion"');
    assert.equal(r.problems[2]!.message, 'field "completion": expected a string, got number 7');
    assert.equal(r.problems[3]!.message, 'field "completion" is empty');
    assert.equal(r.problems[4]!.message, 'the record: expected an object, got an array');
  });

  test(
    'JSON array records are reported by index; chat messages by path; a chat with no assistant reply is a ' + 'problem',
    () => {
      const r = parseDataFile(
        'c.json',
        JSON.stringify([
          {
            messages: [
              { role: 'user', content: 'u' },
              { role: 'assistant', content: 'a' },
            ],
          },
          { messages: [{ role: 'user', content: 'u' }, { role: 'assistant' }] },
          { messages: [{ role: 'user', content: 'u' }] },
          { messages: [] },
          { messages: 'hi' },
        ]),
      );
      assert.equal(r.records.length, 1);
      assert.deepEqual(
        r.problems.map((p) => [p.index, p.message]),
        [
          [1, 'missing field "messages[1].content"'],
          [2, 'field "messages" has no assistant message with content, so nothing would be trained'],
          [3, 'field "messages" is empty'],
          [4, 'field "messages": expected an array, got "hi"'],
        ],
      );
    },
  );

  test('Alpaca: missing instruction, empty output and a non-string input are each named', () => {
    const r = parseDataFile(
      'al.json',
      JSON.stringify([
        { output: 'o' },
        { instruction: 'i', input: '', output: '' },
        { instruction: 'i', input: 3, output: 'o' },
      ]),
    );
    assert.deepEqual(
      r.problems.map((p) => p.message),
      ['missing field "instruction"', 'field "output" is empty', 'field "input": expected a string, got number 3'],
    );
  });
});

describe('whole-file problems throw LK_FILE_INVALID', () => {
  test('an empty file', () =>
    throwsLk(() => parseDataFile('/d/e.jsonl', ' \n\n'), 'LK_FILE_INVALID', /e\.jsonl: the file is empty/));
  test('a .json file that is not JSON names the line', () =>
    throwsLk(
      () => parseDataFile('b.json', '[\n{"text": "a"},\n{"text": }\n]'),
      'LK_FILE_INVALID',
      /b\.json: not valid JSON \(line 3, column 10\)/,
    ));
  test('the located syntax error is the first one: trailing comma, raw newline in a string, truncated file', () => {
    throwsLk(() => parseDataFile('t.json', '[{"a": 1},]'), 'LK_FILE_INVALID', /\(line 1, column 11\)/);
    throwsLk(() => parseDataFile('t.json', '[\n  {"text": "a\nb"}\n]'), 'LK_FILE_INVALID', /\(line 2, column 14\)/);
    throwsLk(() => parseDataFile('t.json', '[{"a": 1}'), 'LK_FILE_INVALID', /\(line 1, column 10\)/);
  });
  test('a JSON value that is not an array', () =>
    throwsLk(
      () => parseDataFile('o.json', '"hello"'),
      'LK_FILE_INVALID',
      /expected a JSON array of records, got "hello"/,
    ));
  test('a .json file with one object, on one line or pretty-printed, with a hint when it holds an array', () => {
    throwsLk(
      () => parseDataFile('o.json', '{"text": "a"}'),
      'LK_FILE_INVALID',
      /o\.json: expected a JSON array of records or JSONL \(one object per line\), got a single object$/,
    );
    throwsLk(
      () => parseDataFile('o.json', '{\n  "version": 1,\n  "data": [{"text": "a"}]\n}\n'),
      'LK_FILE_INVALID',
      /got a single object; the records may be its field "data": save that array as the file/,
    );
  });
  test('a JSONL file in which no line is JSON', () =>
    throwsLk(
      () => parseDataFile('n.jsonl', 'hello\nworld\n'),
      'LK_FILE_INVALID',
      /no line is a JSON value \(line 1: invalid JSON/,
    ));
  test('records of an unknown format list the keys found and the fix', () =>
    throwsLk(
      () => parseDataFile('q.jsonl', jsonl([{ question: 'q', answer: 'a' }])),
      'LK_FILE_INVALID',
      /"question", "answer"/,
      /pass fields/,
    ));
  test('an unknown file type', () =>
    throwsLk(() => parseDataFile('d.tsv', 'a\tb\n'), 'LK_FILE_INVALID', /unknown dataset file type "\.tsv"/));
});
