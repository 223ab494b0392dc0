// ProtoWriter.string: a length-delimited field of the string's UTF-8 bytes, through the ASCII shortcut or not.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ProtoWriter } from '../../src/graph/protobuf.ts';

test('string fields: tag, varint length and UTF-8 bytes, for ASCII and non-ASCII names alike', () => {
  for (const s of ['', 'q_proj', 'x'.repeat(200), 'ΔW/lora_A', '名前', 'a😀b', 'é'.repeat(70)]) {
    const utf8 = new TextEncoder().encode(s);
    const len = utf8.length < 128 ? [utf8.length] : [(utf8.length % 128) | 128, Math.floor(utf8.length / 128)];
    const want = Uint8Array.from([(3 << 3) | 2, ...len, ...utf8]);
    assert.deepEqual(new ProtoWriter().string(3, s).finish(), want, JSON.stringify(s));
  }
});
