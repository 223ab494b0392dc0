// Byte-stream batches of the demo: the stream layout, reproducible training windows with shifted labels, and
// evaluation windows that count every text byte once and no special token.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { BrownFile } from '../../src/demo/brown.ts';
import { BOS_ID, EOS_ID } from '../../src/demo/bytes.ts';
import { IGNORE, WindowSampler, evalBatches, targetCount, tokenStream } from '../../src/demo/data.ts';

const file = (id: string, text: string): BrownFile => ({ id, genre: 'news', side: 'nonfiction', text });
const stream = tokenStream([file('a', 'abcdefghij'), file('b', 'KLMNOPQRSTUVWXYZ')]);

test('the stream is <s> text </s> per file, in order', () => {
  assert.equal(stream.length, 10 + 16 + 4);
  assert.deepEqual(
    [stream[0], stream[1], stream[11], stream[12], stream[13], stream[29]],
    [BOS_ID, 97, EOS_ID, BOS_ID, 75, EOS_ID],
  );
});

test('training batch i depends only on the seed and i; labels are the next tokens', () => {
  const s = new WindowSampler(stream, 8, 3);
  const a = s.batch(5, 4),
    b = new WindowSampler(stream, 8, 3).batch(5, 4);
  assert.deepEqual(a, b);
  assert.notDeepEqual(s.batch(6, 4).inputIds, a.inputIds);
  for (let row = 0; row < 4; row++) {
    for (let t = 0; t < 7; t++) assert.equal(a.labels[row * 8 + t], a.inputIds[row * 8 + t + 1]);
  }
  assert.throws(() => new WindowSampler(stream.subarray(0, 5), 8, 0), { code: 'LK_INVALID_ARGUMENT' });
});

test('evaluation windows cover the stream once, ignore special-token targets, and pad the last batch', () => {
  const batches = evalBatches(stream, 4, 3); // (30 - 1) / 4 = 7 windows: 3 batches, the last with 1 row
  assert.equal(batches.length, 3);
  // targets are stream[1..28]; two of them (</s> of a, <s> of b) are special
  assert.equal(targetCount(batches), 7 * 4 - 2);
  assert.ok(batches[2].labels.slice(4).every((y) => y === BigInt(IGNORE)));
  const few = evalBatches(stream, 4, 2, 2);
  assert.equal(few.length, 1);
  assert.equal(few[0].inputIds[0], BigInt(BOS_ID));
  assert.equal(few[0].inputIds[4], BigInt(stream[12])); // windows 0 and 3 of 7 (evenly spaced)
});

test("a model tokenizer's stream (firstSpecial Infinity) counts every target, ids above the bytes included", () => {
  const ids = Uint16Array.from({ length: 29 }, (_, i) => 300 + i * 1000); // every id ≥ BOS_ID, as a real vocabulary's
  assert.equal(targetCount(evalBatches(ids, 4, 3)), 0, 'the byte default would drop them all');
  const batches = evalBatches(ids, 4, 3, Infinity, Number.POSITIVE_INFINITY);
  assert.equal(targetCount(batches), 7 * 4);
  assert.equal(batches[0].labels[0], BigInt(ids[1]));
});
