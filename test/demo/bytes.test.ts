// The byte-level tokenizer of the demo model: every UTF-8 text is its bytes (plus <s>), decodes back exactly,
// streams without splitting characters, and matches the ids training uses (encodeDocument).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HfTokenizer } from '../../src/io/index.ts';
import {
  BOS_ID,
  EOS_ID,
  PAD_ID,
  VOCAB_SIZE,
  byteCharacters,
  byteTokenizerConfig,
  byteTokenizerJson,
  encodeDocument,
} from '../../src/demo/bytes.ts';
import { rng } from '../helpers.ts';

const tok = HfTokenizer.fromJson(byteTokenizerJson(), byteTokenizerConfig(256));
const bytesOf = (s: string) => [...Buffer.from(s, 'utf8')];

/** A random string of `n` code points drawn from ASCII, Latin-1, other BMP scripts and astral planes (no lone
 * surrogates). */
function randomText(r: () => number, n: number): string {
  const ranges: [number, number][] = [
    [0, 0x7f],
    [0x80, 0x7ff],
    [0x800, 0xd7ff],
    [0xe000, 0xfffd],
    [0x10000, 0x10ffff],
  ];
  let s = '';
  for (let i = 0; i < n; i++) {
    const [lo, hi] = ranges[Math.floor(r() * ranges.length)];
    s += String.fromCodePoint(lo + Math.floor(r() * (hi - lo + 1)));
  }
  return s;
}

test('the vocabulary is 256 bytes plus <s>, </s>, <pad>', () => {
  assert.equal(tok.vocabSize, VOCAB_SIZE);
  assert.deepEqual([tok.bosTokenId, tok.eosTokenId, tok.padTokenId], [BOS_ID, EOS_ID, PAD_ID]);
  assert.equal(new Set(byteCharacters()).size, 256);
  assert.deepEqual(
    tok.addedTokens().map((t) => t.content),
    ['<s>', '</s>', '<pad>'],
  );
});

test('known texts encode to their UTF-8 bytes after <s> and decode back', () => {
  for (const s of [
    'Hello, world!',
    '  two spaces\n\nand\ttabs\r\n',
    'naïve café — “quotes”',
    '日本語のテキスト',
    'emoji 🎉👩‍💻',
    '\u0000\u0001\u007f\u0080\u00ff',
    '',
  ]) {
    assert.deepEqual(tok.encode(s, { addSpecialTokens: false }), bytesOf(s), JSON.stringify(s));
    assert.deepEqual(tok.encode(s), [BOS_ID, ...bytesOf(s)]);
    assert.equal(tok.decode(tok.encode(s), { skipSpecialTokens: true }), s);
  }
});

test('random UTF-8 round-trips byte for byte (seeded)', () => {
  const r = rng(7);
  for (let i = 0; i < 300; i++) {
    const s = randomText(r, 1 + Math.floor(r() * 40));
    const ids = tok.encode(s, { addSpecialTokens: false });
    assert.deepEqual(ids, bytesOf(s), `case ${i}`);
    assert.equal(tok.decode(ids), s, `case ${i}`);
  }
  const long = randomText(rng(8), 3000); // longer than HfTokenizer's word-cutting threshold
  assert.deepEqual(tok.encode(long, { addSpecialTokens: false }), bytesOf(long));
});

test('streamed decoding never splits a multi-byte character', () => {
  const s = 'café 🎉 ok 日本';
  const d = tok.createStreamDecoder();
  const pieces = bytesOf(s).map((id) => d.push(id));
  assert.equal(pieces.join('') + d.flush(), s);
  assert.ok(pieces.every((p) => !p.includes('\uFFFD')));
});

test('training ids (encodeDocument) are the tokenizer ids framed by <s> and </s>', () => {
  const s = 'The jury said, "No."\n\nIt was 1961.';
  assert.deepEqual([...encodeDocument(s)], [...tok.encode(s), EOS_ID]);
  // Special-token text in the input is read as the special token, as every Hugging Face tokenizer does.
  assert.deepEqual(tok.encode('a<s>b', { addSpecialTokens: false }), [97, BOS_ID, 98]);
});
