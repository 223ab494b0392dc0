import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HfTokenizer } from '../../src/io/tokenizer.ts';
import { LorakitError } from '../../src/errors.ts';
import { DATA, LLAMA3_DIR, QWEN3_DIR, loadFixture } from './tokenizer-fixtures.ts';
import { needsShared } from '../helpers.ts';

const DIRS: Record<string, string> = {
  llama3: LLAMA3_DIR,
  qwen3: QWEN3_DIR,
  llama2: `${DATA}tokenizers/llama2`,
  gpt2: `${DATA}tokenizers/gpt2`,
  bert: `${DATA}tokenizers/bert-base-uncased`,
};
const BPE = ['llama3', 'qwen3', 'llama2', 'gpt2'];

const loaded = new Map<string, Promise<HfTokenizer>>();
function tok(name: string): Promise<HfTokenizer> {
  if (!loaded.has(name)) loaded.set(name, HfTokenizer.fromDir(DIRS[name]!));
  return loaded.get(name)!;
}

/** Index of the first differing line, for a readable failure. */
function firstMismatch(actual: number[][], expected: number[][], texts: string[]): string | undefined {
  for (let i = 0; i < expected.length; i++) {
    if (JSON.stringify(actual[i]) !== JSON.stringify(expected[i])) {
      return (
        `line ${i} ${JSON.stringify(texts[i]!.slice(0, 80))}:\n  got      ` +
        `${JSON.stringify(actual[i]!.slice(0, 40))}\n  expected ${JSON.stringify(expected[i]!.slice(0, 40))}`
      );
    }
  }
  return undefined;
}

describe('reference ids (Python tokenizers 0.22 / transformers 4.57)', { skip: needsShared('tokenizers') }, () => {
  for (const name of Object.keys(DIRS)) {
    test(`${name}: ids equal the reference for every line, with special tokens`, async () => {
      const fx = loadFixture(name);
      const t = await tok(name);
      assert.equal(fx.texts.length, fx.ids.length);
      assert.ok(fx.texts.length >= 400, `only ${fx.texts.length} lines`);
      const bad = firstMismatch(
        fx.texts.map((x) => t.encode(x)),
        fx.ids,
        fx.texts,
      );
      assert.equal(bad, undefined, bad);
    });
    test(`${name}: ids equal the reference for every line, without special tokens`, async () => {
      const fx = loadFixture(name);
      const t = await tok(name);
      const bad = firstMismatch(
        fx.texts.map((x) => t.encode(x, { addSpecialTokens: false })),
        fx.idsNoSpecial ?? fx.ids,
        fx.texts,
      );
      assert.equal(bad, undefined, bad);
    });
  }
  for (const name of BPE) {
    test(`${name}: decode(encode(x)) gives x back (or what Python's decode gives)`, async () => {
      const fx = loadFixture(name);
      const t = await tok(name);
      fx.texts.forEach((x, i) => {
        const expected = fx.decodeMismatch?.[String(i)] ?? x;
        assert.equal(
          t.decode(t.encode(x, { addSpecialTokens: false }), { cleanUpTokenizationSpaces: false }),
          expected,
          `line ${i}`,
        );
      });
    });
  }
  test('bert: decode of the hand-made edge cases equals Python', async () => {
    const fx = loadFixture('bert');
    const t = await tok('bert');
    for (const [i, expected] of Object.entries(fx.decodedEdgeCases!)) {
      assert.equal(t.decode(fx.idsNoSpecial![Number(i)]!), expected, `line ${i}`);
    }
  });
});

describe('long inputs without pre-tokenizer (Llama-2 style)', { skip: needsShared('tokenizers') }, () => {
  test('cutting into words gives the same ids as whole-text encoding on every fixture line', async () => {
    const fx = loadFixture('llama2');
    const json = JSON.parse(readFileSync(`${DATA}tokenizers/llama2/tokenizer.json`, 'utf8'));
    const config = JSON.parse(readFileSync(`${DATA}tokenizers/llama2/tokenizer_config.json`, 'utf8'));
    const split = HfTokenizer.fromJson(json, config, { longInputChars: 0 });
    const whole = HfTokenizer.fromJson(json, config, { longInputChars: Infinity });
    for (const [i, x] of fx.texts.entries()) {
      for (const addSpecialTokens of [true, false]) {
        assert.deepEqual(split.encode(x, { addSpecialTokens }), whole.encode(x, { addSpecialTokens }), `line ${i}`);
      }
    }
    const multi = 'first line\n  indented\n\n\tlast';
    assert.deepEqual(split.encode(multi), whole.encode(multi));
  });

  test('text containing an added token is left to the library (added tokens restart the normalizer)', async () => {
    const json = JSON.parse(readFileSync(`${DATA}tokenizers/llama2/tokenizer.json`, 'utf8'));
    const split = HfTokenizer.fromJson(json, {}, { longInputChars: 0 });
    const whole = HfTokenizer.fromJson(json, {}, { longInputChars: Infinity });
    const x = 'one\ntwo </s> three\nfour';
    assert.deepEqual(split.encode(x), whole.encode(x));
  });
});

describe('special tokens and sizes', { skip: needsShared('tokenizers') }, () => {
  test('ids resolve from tokenizer_config (strings and AddedToken objects)', async () => {
    const l3 = await tok('llama3'),
      q3 = await tok('qwen3'),
      l2 = await tok('llama2'),
      g2 = await tok('gpt2'),
      b = await tok('bert');
    assert.deepEqual([l3.bosTokenId, l3.eosTokenId, l3.padTokenId, l3.vocabSize], [128000, 128001, undefined, 128256]);
    assert.deepEqual([q3.bosTokenId, q3.eosTokenId, q3.padTokenId, q3.vocabSize], [undefined, 151645, 151643, 151669]);
    assert.deepEqual(
      [l2.bosTokenId, l2.eosTokenId, l2.padTokenId, l2.unkTokenId, l2.vocabSize],
      [1, 2, undefined, 0, 32000],
    );
    assert.deepEqual([g2.bosTokenId, g2.eosTokenId, g2.padTokenId, g2.vocabSize], [50256, 50256, undefined, 50257]);
    assert.deepEqual([b.padTokenId, b.unkTokenId, b.vocabSize], [0, 100, 30522]);
    assert.ok(q3.specialTokenIds.has(151645));
    assert.deepEqual(
      b.addedTokens().map((x) => x.content),
      ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'],
    );
  });

  test('LlamaTokenizer add_eos_token: true appends </s>, add_bos_token: false drops <s>', async () => {
    const json = JSON.parse(readFileSync(`${DATA}tokenizers/llama2/tokenizer.json`, 'utf8'));
    const config = JSON.parse(readFileSync(`${DATA}tokenizers/llama2/tokenizer_config.json`, 'utf8'));
    const plain = HfTokenizer.fromJson(json, config).encode('Hello world', { addSpecialTokens: false });
    assert.deepEqual(HfTokenizer.fromJson(json, { ...config, add_eos_token: true }).encode('Hello world'), [
      1,
      ...plain,
      2,
    ]);
    assert.deepEqual(HfTokenizer.fromJson(json, { ...config, add_bos_token: false }).encode('Hello world'), plain);
  });

  test('decode checks ids and accepts an empty list', async () => {
    const t = await tok('gpt2');
    assert.equal(t.decode([]), '');
    assert.throws(
      () => t.decode([15496, 50257]),
      (e: unknown) =>
        e instanceof LorakitError && e.code === 'LK_INVALID_ARGUMENT' && /ids\[1\].*50257/.test(e.message),
    );
    assert.equal(t.decode([15496, 50256], { skipSpecialTokens: true }), 'Hello');
  });
});

describe('encodeBatch', () => {
  test('pads to the longest on the right by default, with an attention mask', async () => {
    const t = await tok('qwen3');
    const { ids, attentionMask } = t.encodeBatch(['Hello world', 'Hi']);
    assert.deepEqual(ids, [
      [9707, 1879],
      [13048, 151643],
    ]);
    assert.deepEqual(attentionMask, [
      [1, 1],
      [1, 0],
    ]);
  });

  test('pads on the left when asked, truncates to maxLength', async () => {
    const t = await tok('qwen3');
    const r = t.encodeBatch(['Hello world', 'Hi'], { paddingSide: 'left' });
    assert.deepEqual(r.ids, [
      [9707, 1879],
      [151643, 13048],
    ]);
    assert.deepEqual(r.attentionMask, [
      [1, 1],
      [0, 1],
    ]);
    assert.deepEqual(t.encodeBatch(['Hello world', 'Hi'], { maxLength: 1 }).ids, [[9707], [13048]]);
  });

  test('needs a pad id when the tokenizer has none', async () => {
    const t = await tok('llama3');
    assert.throws(
      () => t.encodeBatch(['a', 'b c']),
      (e: unknown) => e instanceof LorakitError && e.code === 'LK_INVALID_ARGUMENT' && /padTokenId/.test(e.message),
    );
    assert.deepEqual(t.encodeBatch(['a', 'b c'], { padTokenId: 128001 }).ids, [
      [64, 128001],
      [65, 272],
    ]);
  });
});

describe('streaming decoder', { skip: needsShared('tokenizers') }, () => {
  const text = 'Emoji 👨‍👩‍👧 and 🙂, CJK 日本語, accents naïve café.\nNew line  two  spaces';
  for (const name of BPE) {
    test(`${name}: characters split across byte tokens come out whole; pieces join to decode(ids)`, async () => {
      const t = await tok(name);
      const ids = t.encode(text, { addSpecialTokens: false });
      // The test is only meaningful if some token alone is an incomplete UTF-8 character.
      assert.ok(
        ids.some((id) => t.decode([id]).includes('\uFFFD')),
        'no token splits a character',
      );
      const s = t.createStreamDecoder();
      const pieces = ids.map((id) => s.push(id));
      pieces.push(s.flush());
      for (const p of pieces) assert.ok(!p.includes('\uFFFD'), `piece ${JSON.stringify(p)} holds a partial character`);
      assert.equal(pieces.join(''), t.decode(ids, { cleanUpTokenizationSpaces: false }));
      assert.equal(pieces.join(''), text);
    });
  }

  test('an emoji of four byte tokens is emitted once, when its last byte arrives', async () => {
    const t = await tok('llama2');
    const ids = t.encode('🙂', { addSpecialTokens: false }); // ▁ then <0xF0> <0x9F> <0x99> <0x82>
    assert.deepEqual(
      ids.slice(-4).map((id) => t.idToToken(id)),
      ['<0xF0>', '<0x9F>', '<0x99>', '<0x82>'],
    );
    const s = t.createStreamDecoder();
    const out = ids.map((id) => s.push(id));
    assert.deepEqual(out.slice(-4), ['', '', '', '🙂']);
    assert.equal(out.join(''), '🙂');
  });

  test('skipSpecialTokens drops special tokens from the stream', async () => {
    const t = await tok('llama3');
    const s = t.createStreamDecoder({ skipSpecialTokens: true });
    // This Llama-3 tokenizer.json has a ByteLevel post-processor, so BOS is not added by encode (nor by Python's).
    const ids = [128000, ...t.encode('Hi there'), 128001];
    assert.equal(ids.map((id) => s.push(id)).join('') + s.flush(), 'Hi there');
  });
});

describe('loading errors', () => {
  test('a missing folder is LK_FILE_NOT_FOUND naming the path', async () => {
    await assert.rejects(
      HfTokenizer.fromDir('/nonexistent/tok'),
      (e: unknown) =>
        e instanceof LorakitError && e.code === 'LK_FILE_NOT_FOUND' && e.message.includes('/nonexistent/tok'),
    );
  });

  test('malformed tokenizer_config.json is LK_FILE_INVALID with line and column', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lk-tok-'));
    writeFileSync(join(dir, 'tokenizer_config.json'), '{\n  "bos_token": "<s>",\n  "eos_token": \n}\n');
    await assert.rejects(
      HfTokenizer.fromDir(dir),
      (e: unknown) =>
        e instanceof LorakitError &&
        e.code === 'LK_FILE_INVALID' &&
        e.message.includes('tokenizer_config.json') &&
        /line 4 column 1/.test(e.message),
    );
  });

  test('a folder without tokenizer files lists what it looked for', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lk-tok-'));
    await assert.rejects(
      HfTokenizer.fromDir(dir),
      (e: unknown) =>
        e instanceof LorakitError &&
        e.code === 'LK_FILE_NOT_FOUND' &&
        /tokenizer\.json.*merges\.txt.*vocab\.txt/.test(e.message),
    );
  });
});
