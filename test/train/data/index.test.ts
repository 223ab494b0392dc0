// loadDataset end to end: options, held-out split, skip vs fail, chat templates, and smoke tests on real data
// (Alpaca, Tiny Shakespeare, GSM8K from /work/shared/data, read in place; caches go to temp folders).
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadDataset, IGNORE_INDEX, type LoadDatasetOptions } from '../../../src/train/data/index.ts';
import { LorakitError } from '../../../src/errors.ts';
import { DATA, fixtureTokenizer, lossRuns, tempDir, writeData } from './fixtures.ts';
import { needsShared } from '../../helpers.ts';

const qa = Array.from({ length: 20 }, (_, i) => ({ prompt: `Q${i}?\nA:`, completion: ` a${i}` }));

async function rejectsLk(p: Promise<unknown>, code: string, re: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof LorakitError, String(e));
    assert.equal(e.code, code);
    assert.match(e.message, re);
    return true;
  });
}

describe('options', () => {
  test('bad options name the option, the rule and the value', async () => {
    const tokenizer = await fixtureTokenizer('llama');
    const path = writeData(tempDir(), 'qa.jsonl', qa);
    const bad = (o: Partial<LoadDatasetOptions> & Record<string, unknown>, re: RegExp) =>
      rejectsLk(
        loadDataset(path, { tokenizer, seqLen: 16, cacheDir: false, ...o } as LoadDatasetOptions),
        'LK_INVALID_ARGUMENT',
        re,
      );
    await bad({ seqLen: 1 }, /^loadDataset: option "seqLen": expected an integer >= 2, got 1$/);
    await bad({ heldOut: 2.5 }, /option "heldOut": expected a fraction in \(0, 1\) or a whole count, got 2.5/);
    await bad({ onError: 'ignore' as 'skip' }, /option "onError": expected 'skip' or 'fail', got "ignore"/);
    await bad(
      { fields: { question: 'q' } as object },
      /option "fields" has an unknown key "question"; expected one of text, prompt, completion/,
    );
    await bad({ seqlen: 3 }, /unknown option "seqlen"; expected one of tokenizer, seqLen, /);
    await bad({ heldOut: 20 }, /"heldOut" 20 leaves no training example: qa\.jsonl has 20 examples/);
    await rejectsLk(
      loadDataset(path, { seqLen: 16 } as LoadDatasetOptions),
      'LK_INVALID_ARGUMENT',
      /option "tokenizer" must be an HfTokenizer/,
    );
  });

  test('a missing file is LK_FILE_NOT_FOUND; a file that is not UTF-8 is LK_FILE_INVALID', async () => {
    const tokenizer = await fixtureTokenizer('llama');
    const dir = tempDir();
    await rejectsLk(
      loadDataset(join(dir, 'nope.jsonl'), { tokenizer, seqLen: 8 }),
      'LK_FILE_NOT_FOUND',
      /nope\.jsonl: dataset file not found/,
    );
    const bin = join(dir, 'bin.jsonl');
    writeFileSync(bin, Buffer.from([0x7b, 0xff, 0xfe, 0x7d]));
    await rejectsLk(
      loadDataset(bin, { tokenizer, seqLen: 8, cacheDir: false }),
      'LK_FILE_INVALID',
      /bin\.jsonl: not UTF-8 text/,
    );
  });
});

describe('malformed records', () => {
  const lines = [
    JSON.stringify(qa[0]),
    '{"prompt": "Q?", "completion": ""}',
    JSON.stringify(qa[1]),
    'not json',
    JSON.stringify(qa[2]),
  ].join('\n');

  test(
    "onError 'fail' (the default) throws LK_FILE_INVALID at the first bad record, naming file, line and " + 'field',
    async () => {
      const tokenizer = await fixtureTokenizer('llama');
      const path = writeData(tempDir(), 'bad.jsonl', lines);
      await rejectsLk(
        loadDataset(path, { tokenizer, seqLen: 16, cacheDir: false }),
        'LK_FILE_INVALID',
        /^bad\.jsonl:2: field "completion" is empty \(pass onError: 'skip'/,
      );
    },
  );

  test("onError 'skip' drops them, counts them, lists them and warns once", async () => {
    const tokenizer = await fixtureTokenizer('llama');
    const path = writeData(tempDir(), 'bad.jsonl', lines);
    const d = await loadDataset(path, { tokenizer, seqLen: 16, cacheDir: false, onError: 'skip' });
    assert.equal(d.skipped, 2);
    assert.equal(d.stats.examples, 3);
    assert.deepEqual(
      d.problems.map((p) => [p.line, p.message.split(':')[0]]),
      [
        [2, 'field "completion" is empty'],
        [4, 'invalid JSON'],
      ],
    );
    assert.deepEqual(d.warnings, [
      'bad.jsonl: skipped 2 malformed record(s); the first: bad.jsonl:2: field "completion" is empty',
    ]);
  });

  test('a file in which every record is malformed is an error even with skip', async () => {
    const tokenizer = await fixtureTokenizer('llama');
    const path = writeData(tempDir(), 'all-bad.jsonl', '{"prompt": "a", "completion": 1}\n{"prompt": "b"}\n');
    await rejectsLk(
      loadDataset(path, { tokenizer, seqLen: 16, cacheDir: false, onError: 'skip' }),
      'LK_FILE_INVALID',
      /no usable record \(2 malformed; the first: all-bad\.jsonl:1: field "completion": expected a string/,
    );
  });
});

describe('held-out split', () => {
  test('a fraction or a count, the same on every load, disjoint from train, changed by splitSeed', async () => {
    const tokenizer = await fixtureTokenizer('qwen2');
    const path = writeData(tempDir(), 'qa.jsonl', qa);
    const opts = { tokenizer, seqLen: 16, cacheDir: false as const };
    const prompts = (ds: { size: number; row(r: number): { inputIds: number[] } }) =>
      Array.from({ length: ds.size }, (_, r) => tokenizer.decode(ds.row(r).inputIds).split('\n')[0]);
    const a = await loadDataset(path, { ...opts, heldOut: 0.2 });
    assert.deepEqual([a.stats.train.examples, a.stats.eval?.examples], [16, 4]);
    const b = await loadDataset(path, { ...opts, heldOut: 4 });
    assert.deepEqual(prompts(b.eval!), prompts(a.eval!));
    const all = [...prompts(a.train), ...prompts(a.eval!)].sort();
    assert.deepEqual(all, qa.map((r) => r.prompt.split('\n')[0]).sort());
    const c = await loadDataset(path, { ...opts, heldOut: 4, splitSeed: 1 });
    assert.notDeepEqual(prompts(c.eval!), prompts(a.eval!));
    assert.equal(a.eval!.batchesPerEpoch(3, false), 2);
  });
});

describe('chat datasets', () => {
  const chats = [
    {
      messages: [
        { role: 'user', content: 'Hi' },
        { role: 'assistant', content: 'Yo' },
      ],
    },
    {
      messages: [
        { role: 'system', content: 'Terse.' },
        { role: 'user', content: 'Bye' },
        { role: 'assistant', content: 'Ok' },
      ],
    },
  ];

  test('qwen2 ChatML with packing: loss only on replies and <|im_end|>, separators between conversations', async () => {
    const tokenizer = await fixtureTokenizer('qwen2');
    const path = writeData(tempDir(), 'chat.json', chats);
    const d = await loadDataset(path, { tokenizer, seqLen: 128, packing: true, cacheDir: false });
    assert.equal(d.stats.format, 'chat');
    assert.equal(d.train.size, 1);
    const { inputIds, labels } = d.train.row(0);
    assert.deepEqual(lossRuns(tokenizer, inputIds, labels), ['Yo<|im_end|>', 'Ok<|im_end|>']);
    // Each conversation ends with "\n", so an <|im_end|> separator without loss follows it.
    assert.equal(inputIds.filter((id, i) => id === tokenizer.eosTokenId && labels[i] === IGNORE_INDEX).length, 5);
  });

  test('a tokenizer without a chat template needs the chatTemplate option', async () => {
    const tokenizer = await fixtureTokenizer('gpt2');
    const path = writeData(tempDir(), 'chat.jsonl', chats);
    await rejectsLk(
      loadDataset(path, { tokenizer, seqLen: 64, cacheDir: false }),
      'LK_CONFIG_INVALID',
      /chat\.jsonl: chat records need a chat template.*pass the chatTemplate option/,
    );
    const chatTemplate =
      "{% for m in messages %}{{ m['role'] + ': ' + m['content'] }}{% if m['role'] == 'assistant' %}{{ eos_token " +
      "}}{% endif %}{{ '\\n' }}{% endfor %}";
    const d = await loadDataset(path, { tokenizer, seqLen: 64, cacheDir: false, chatTemplate });
    assert.deepEqual(lossRuns(tokenizer, d.train.row(0).inputIds, d.train.row(0).labels), ['Yo<|endoftext|>']);
  });
});

describe('real data', { skip: needsShared('') }, () => {
  test('Alpaca (first 200 records): every row trains on exactly its response + EOS; batches [4, T]', async () => {
    const tokenizer = await fixtureTokenizer('llama');
    const records = (
      JSON.parse(readFileSync(`${DATA}alpaca/alpaca_5000.json`, 'utf8')) as {
        instruction: string;
        input: string;
        output: string;
      }[]
    ).slice(0, 200);
    const dir = tempDir();
    const path = writeData(dir, 'alpaca200.json', records);
    const full = await loadDataset(path, { tokenizer, seqLen: 2048, cacheDir: join(dir, 'c') });
    assert.deepEqual(
      [full.stats.format, full.stats.examples, full.stats.truncated, full.train.size],
      ['alpaca', 200, 0, 200],
    );
    for (let r = 0; r < 200; r++) {
      const { inputIds, labels } = full.train.row(r);
      assert.deepEqual(lossRuns(tokenizer, inputIds, labels), [`${records[r]!.output}</s>`], `record ${r}`);
      assert.ok(tokenizer.decode(inputIds).includes(`### Instruction:\n${records[r]!.instruction}\n\n`));
    }
    const padded = await loadDataset(path, { tokenizer, seqLen: 256, cacheDir: join(dir, 'c'), heldOut: 0.1 });
    assert.equal(padded.stats.cache, 'hit');
    const [b] = padded.train.batches({ batchSize: 4, seed: 1 });
    assert.deepEqual(b!.shape, [4, 256]);
    assert.equal(b!.inputIds.length, 1024);
    const frac = padded.stats.train.lossFraction;
    assert.ok(frac > 0.1 && frac < 0.6, `loss fraction ${frac}`);
    const packed = await loadDataset(path, { tokenizer, seqLen: 256, cacheDir: join(dir, 'c'), packing: true });
    const lengths = Array.from({ length: packed.train.size }, (_, r) => packed.train.row(r).inputIds.length);
    assert.ok(
      lengths.slice(0, -1).every((n) => n === 256),
      'packed rows are full',
    );
    assert.ok(packed.stats.train.lossFraction > frac, 'packing wastes no padding');
  });

  test(
    'Tiny Shakespeare as plain text: one document in full windows, BOS first, loss on all but each first ' + 'token',
    async () => {
      const tokenizer = await fixtureTokenizer('llama');
      const d = await loadDataset(`${DATA}tinyshakespeare/input.txt`, {
        tokenizer,
        seqLen: 512,
        cacheDir: join(tempDir(), 'c'),
        heldOut: 0.05,
      });
      assert.equal(d.stats.format, 'plain');
      const rows = d.stats.train.rows + d.stats.eval!.rows;
      assert.ok(rows > 1000, `${rows} windows`);
      assert.equal(
        d.stats.train.tokens + d.stats.eval!.tokens,
        d.stats.train.lossTokens + d.stats.eval!.lossTokens + rows,
      );
      assert.ok(d.stats.train.lossFraction > 0.99);
      const it = d.train.batches({ batchSize: 8, seed: 0 });
      for (const b of [it.next().value!, it.next().value!]) {
        assert.deepEqual(b.shape, [8, 512]);
        assert.ok(b.tokens >= 8 * 511);
      }
      const first = d.train.row(0).inputIds;
      assert.equal(first[0], tokenizer.bosTokenId);
      assert.ok(tokenizer.decode(first).startsWith('<s>First Citizen:\nBefore we proceed any further, hear me speak.'));
    },
  );

  test('GSM8K (first 100 lines) through a field map: loss on the answer and EOS', async () => {
    const tokenizer = await fixtureTokenizer('qwen2');
    const lines = readFileSync(`${DATA}gsm8k/train.jsonl`, 'utf8').split('\n').slice(0, 100);
    const path = writeData(tempDir(), 'gsm.jsonl', `${lines.join('\n')}\n`);
    const d = await loadDataset(path, {
      tokenizer,
      seqLen: 1024,
      fields: { prompt: 'question', completion: 'answer' },
      cacheDir: false,
    });
    assert.equal(d.stats.format, 'prompt-completion');
    const { answer } = JSON.parse(lines[0]!) as { answer: string };
    assert.deepEqual(lossRuns(tokenizer, d.train.row(0).inputIds, d.train.row(0).labels), [`${answer}<|im_end|>`]);
  });

  test('a TSV file (SST-2) is refused as a whole-file problem with the supported types', async () => {
    const tokenizer = await fixtureTokenizer('qwen2');
    await rejectsLk(
      loadDataset(`${DATA}sst2/dev.tsv`, { tokenizer, seqLen: 64, cacheDir: false }),
      'LK_FILE_INVALID',
      /dev\.tsv: unknown dataset file type "\.tsv"; expected \.txt/,
    );
  });
});
