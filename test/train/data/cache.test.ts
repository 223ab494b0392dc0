// The tokenised-example cache: a second load skips the tokenizer; content, tokenizer and option changes miss.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, writeFileSync, statSync, utimesSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HfTokenizer } from '../../../src/io/tokenizer.ts';
import { loadDataset, type LoadedDataset } from '../../../src/train/data/index.ts';
import { LorakitError } from '../../../src/errors.ts';
import { tempDir, writeData } from './fixtures.ts';

const MODELS = fileURLToPath(new URL('../../fixtures/models/', import.meta.url));

/** A fresh tokenizer whose encode calls are counted. */
async function countingTokenizer(name = 'llama'): Promise<{ tokenizer: HfTokenizer; calls: () => number }> {
  const tokenizer = await HfTokenizer.fromDir(MODELS + name);
  let n = 0;
  const encode = tokenizer.encode.bind(tokenizer);
  tokenizer.encode = (text, options) => {
    n++;
    return encode(text, options);
  };
  return { tokenizer, calls: () => n };
}

const records = Array.from({ length: 20 }, (_, i) => ({
  prompt: `Q${i}: what is ${i} + ${i}?\nA:`,
  completion: ` ${2 * i}`,
}));

/** The rows of a dataset, for comparing two loads. */
const rowsOf = (d: LoadedDataset) => Array.from({ length: d.train.size }, (_, r) => d.train.row(r));

describe('dataset cache', () => {
  test('a second load is served from the cache: no tokenizer call, the same rows', async () => {
    const dir = tempDir(),
      cacheDir = join(dir, 'cache');
    const path = writeData(dir, 'qa.jsonl', records);
    const { tokenizer, calls } = await countingTokenizer();
    const first = await loadDataset(path, { tokenizer, seqLen: 32, cacheDir });
    assert.equal(first.stats.cache, 'miss');
    assert.equal(calls(), 40, 'prompt and prompt+completion per record');
    assert.equal(readdirSync(cacheDir).filter((f) => f.endsWith('.lkds')).length, 1);
    const second = await loadDataset(path, { tokenizer, seqLen: 32, cacheDir });
    assert.equal(second.stats.cache, 'hit');
    assert.equal(calls(), 40);
    assert.deepEqual(rowsOf(second), rowsOf(first));
    assert.deepEqual(second.stats, { ...first.stats, cache: 'hit' });
  });

  test('a same-size edit with the old mtime restored is a miss (the key hashes the bytes)', async () => {
    const dir = tempDir(),
      cacheDir = join(dir, 'cache');
    const path = writeData(dir, 'qa.jsonl', records);
    const { tokenizer, calls } = await countingTokenizer();
    await loadDataset(path, { tokenizer, seqLen: 32, cacheDir });
    const { mtime, size } = statSync(path);
    writeFileSync(path, readFileSync(path, 'utf8').replace(' 38', ' 83'));
    utimesSync(path, mtime, mtime);
    assert.equal(statSync(path).size, size);
    const after = await loadDataset(path, { tokenizer, seqLen: 32, cacheDir });
    assert.equal(after.stats.cache, 'miss');
    assert.equal(calls(), 80);
    assert.equal(tokenizer.decode(after.train.row(19).labels.filter((l) => l !== -100)), ' 83</s>');
  });

  test(
    'another tokenizer, format option or field map misses; packing and (for records) seqLen reuse the ' + 'entry',
    async () => {
      const dir = tempDir(),
        cacheDir = join(dir, 'cache');
      const path = writeData(
        dir,
        'qa.jsonl',
        records.map(({ prompt, completion }) => ({ q: prompt, a: completion, text: prompt + completion })),
      );
      const llama = await countingTokenizer('llama');
      const qwen = await countingTokenizer('qwen2');
      const base = { seqLen: 64, cacheDir, fields: { prompt: 'q', completion: 'a' } };
      assert.equal((await loadDataset(path, { ...base, tokenizer: llama.tokenizer })).stats.cache, 'miss');
      assert.equal((await loadDataset(path, { ...base, tokenizer: qwen.tokenizer })).stats.cache, 'miss');
      assert.equal(
        (await loadDataset(path, { ...base, tokenizer: llama.tokenizer, format: 'text', fields: {} })).stats.cache,
        'miss',
      );
      assert.equal(
        (await loadDataset(path, { ...base, tokenizer: llama.tokenizer, packing: true })).stats.cache,
        'hit',
      );
      assert.equal((await loadDataset(path, { ...base, tokenizer: llama.tokenizer, seqLen: 48 })).stats.cache, 'hit');
      assert.equal(readdirSync(cacheDir).length, 3);
    },
  );

  test('for a plain text file seqLen is part of the key (it sets the windows)', async () => {
    const dir = tempDir(),
      cacheDir = join(dir, 'cache');
    const path = writeData(dir, 'book.txt', 'To be, or not to be, that is the question.\n'.repeat(20));
    const { tokenizer } = await countingTokenizer();
    assert.equal((await loadDataset(path, { tokenizer, seqLen: 32, cacheDir })).stats.cache, 'miss');
    assert.equal((await loadDataset(path, { tokenizer, seqLen: 64, cacheDir })).stats.cache, 'miss');
    assert.equal((await loadDataset(path, { tokenizer, seqLen: 32, cacheDir })).stats.cache, 'hit');
  });

  test('a damaged cache file is a miss and is rewritten', async () => {
    const dir = tempDir(),
      cacheDir = join(dir, 'cache');
    const path = writeData(dir, 'qa.jsonl', records);
    const { tokenizer } = await countingTokenizer();
    const first = await loadDataset(path, { tokenizer, seqLen: 32, cacheDir });
    const entry = join(cacheDir, readdirSync(cacheDir)[0]!);
    const bytes = readFileSync(entry);
    writeFileSync(entry, bytes.subarray(0, bytes.length - 7));
    const second = await loadDataset(path, { tokenizer, seqLen: 32, cacheDir });
    assert.equal(second.stats.cache, 'miss');
    assert.deepEqual(rowsOf(second), rowsOf(first));
    assert.equal(readFileSync(entry).length, bytes.length);
    assert.equal((await loadDataset(path, { tokenizer, seqLen: 32, cacheDir })).stats.cache, 'hit');
  });

  test(
    'the default cache folder is $LORAKIT_CACHE/datasets, never beside the data; cacheDir false writes ' + 'nothing',
    async () => {
      const dir = tempDir();
      const path = writeData(dir, 'qa.jsonl', records);
      const { tokenizer } = await countingTokenizer();
      const saved = process.env.LORAKIT_CACHE;
      process.env.LORAKIT_CACHE = join(dir, 'home-cache');
      try {
        assert.equal((await loadDataset(path, { tokenizer, seqLen: 32, cacheDir: false })).stats.cache, 'off');
        assert.ok(!existsSync(join(dir, 'home-cache')));
        await loadDataset(path, { tokenizer, seqLen: 32 });
        assert.equal(readdirSync(join(dir, 'home-cache', 'datasets')).length, 1);
        assert.deepEqual(readdirSync(dir).sort(), ['home-cache', 'qa.jsonl']);
      } finally {
        if (saved === undefined) delete process.env.LORAKIT_CACHE;
        else process.env.LORAKIT_CACHE = saved;
      }
    },
  );

  test(
    'skipped records are remembered: a hit reports the same count, and onError fail still throws with ' + 'the line',
    async () => {
      const dir = tempDir(),
        cacheDir = join(dir, 'cache');
      const path = writeData(
        dir,
        'qa.jsonl',
        `${JSON.stringify(records[0])}\n{"prompt": "x"}\n${JSON.stringify(records[1])}\n`,
      );
      const { tokenizer, calls } = await countingTokenizer();
      const first = await loadDataset(path, { tokenizer, seqLen: 32, cacheDir, onError: 'skip' });
      const second = await loadDataset(path, { tokenizer, seqLen: 32, cacheDir, onError: 'skip' });
      assert.equal(calls(), 4);
      assert.equal(second.stats.cache, 'hit');
      assert.equal(second.skipped, 1);
      assert.deepEqual(second.problems, first.problems);
      await assert.rejects(
        loadDataset(path, { tokenizer, seqLen: 32, cacheDir }),
        (e: unknown) => e instanceof LorakitError && /^qa\.jsonl:2: missing field "completion"/.test(e.message),
      );
    },
  );

  test('a cache that cannot be written is a warning, not an error', async () => {
    const dir = tempDir();
    const path = writeData(dir, 'qa.jsonl', records);
    const blocker = writeData(dir, 'not-a-folder', 'x');
    const { tokenizer } = await countingTokenizer();
    const d = await loadDataset(path, { tokenizer, seqLen: 32, cacheDir: join(blocker, 'cache') });
    assert.equal(d.train.size, 20);
    assert.equal(d.warnings.length, 1);
    assert.match(d.warnings[0]!, /could not write the dataset cache .*; pass cacheDir/);
  });
});
