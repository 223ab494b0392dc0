// NumpyGenerator against values printed by numpy 2.4.6 (the current interop set): np.random.default_rng(seed)'s raw
// 64-bit PCG64 outputs (bit_generator.random_raw), Generator.choice(n, size, replace=False) on both of numpy's paths
// (Floyd's algorithm, and the tail shuffle for n > 10000 and size > n/50), Generator.shuffle, and the draws continuing
// across calls on one generator. PEFT's Uni-LoRA index assignment built on it is checked in unilora.test.ts.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { NumpyGenerator } from '../../src/linalg/index.ts';

/** The next 64-bit output as hex: numpy's 32-bit draws are its low half, then its high half. */
function raw64(g: NumpyGenerator): string {
  const lo = g.nextUint32();
  const hi = g.nextUint32();
  return `0x${((BigInt(hi) << 32n) | BigInt(lo)).toString(16)}`;
}

test('default_rng(seed) seeds PCG64 through SeedSequence as numpy does (seeds 0, 42 and one above 2^32)', () => {
  const want: [number, string[]][] = [
    [0, ['0xa30febcfd9c2825f', '0x4510bdf882d9d721', '0xa7d3da94ecde8b8']],
    [42, ['0xc621fbcd16d92688', '0x705a5661a791ffc1', '0xdbcd12c26eda1624']],
    [2 ** 40 + 7, ['0xd46e9e2034de21aa', '0x415badc99c087675', '0x275ed40f045acb84']],
  ];
  for (const [seed, outputs] of want) {
    const g = new NumpyGenerator(seed);
    assert.deepEqual([raw64(g), raw64(g), raw64(g)], outputs, `seed ${seed}`);
  }
});

test('choice without replacement (Floyd) then shuffle continue one stream, as on one numpy Generator', () => {
  const g = new NumpyGenerator(7);
  assert.deepEqual(g.choiceWithoutReplacement(1000, 12), [55, 299, 829, 890, 678, 873, 771, 618, 224, 574, 934, 284]);
  const a = Array.from({ length: 15 }, (_, i) => i);
  g.shuffle(a);
  assert.deepEqual(a, [13, 6, 5, 4, 10, 7, 12, 9, 3, 8, 11, 1, 14, 0, 2]);
  assert.deepEqual(new NumpyGenerator(3).choiceWithoutReplacement(5, 5), [4, 1, 2, 3, 0]);
});

test('choice takes the tail-shuffle path for n > 10000 and size > n/50, as numpy does', () => {
  const c = new NumpyGenerator(9).choiceWithoutReplacement(20000, 500);
  assert.deepEqual(c.slice(0, 8), [10394, 18789, 15237, 9248, 5984, 19370, 17386, 14003]);
  assert.deepEqual(c.slice(-4), [5735, 19218, 17404, 8430]);
  assert.equal(
    c.reduce((s, x) => s + x, 0),
    5224083,
  );
  assert.equal(new Set(c).size, 500);
});
