// TokenDataset: fixed-shape int64 batches, seeded per-epoch shuffling, and exact resume from {epoch, index}.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { TokenDataset, permutation, seededRandom, type Batch } from '../../../src/train/data/dataset.ts';
import type { RowSet } from '../../../src/train/data/rows.ts';
import { LorakitError } from '../../../src/errors.ts';

const X = -100,
  PAD = 0;

/** n rows of T tokens; row r holds ids 1000*r + t, lengths cycle through T, T-1, T-2 (with label -100 on padding). */
function dataset(n: number, T: number): TokenDataset {
  const ids = new Int32Array(n * T),
    labels = new Int32Array(n * T),
    lengths = new Uint32Array(n);
  for (let r = 0; r < n; r++) {
    lengths[r] = T - (r % 3);
    for (let t = 0; t < T; t++) {
      const real = t < lengths[r]!;
      ids[r * T + t] = real ? 1000 * r + t : PAD;
      labels[r * T + t] = real && t > 0 ? 1000 * r + t : X;
    }
  }
  const rows: RowSet = { seqLen: T, ids, labels, lengths };
  return new TokenDataset(rows, PAD);
}

/** The row numbers of a batch (from its first id). */
const rowsOf = (b: Batch) => Array.from({ length: b.shape[0] }, (_, i) => Number(b.inputIds[i * b.shape[1]]!) / 1000);

function take<T>(it: Iterator<T>, n: number): T[] {
  const out: T[] = [];
  for (let i = 0; i < n; i++) {
    const r = it.next();
    if (r.done) break;
    out.push(r.value);
  }
  return out;
}

describe('permutation', () => {
  test('is a permutation, is the same for the same seed, and differs between seed and seed + 1', () => {
    const p = permutation(1000, 7);
    assert.deepEqual(
      [...p].sort((x, y) => x - y),
      Array.from({ length: 1000 }, (_, i) => i),
    );
    assert.deepEqual(permutation(1000, 7), p);
    const q = permutation(1000, 8);
    assert.ok(q.filter((v, i) => v === p[i]).length < 20, 'adjacent seeds give unrelated orders');
  });

  test('seededRandom is uniform enough: mean and first-position frequencies of a 4-permutation', () => {
    const r = seededRandom(1);
    let sum = 0;
    for (let i = 0; i < 20000; i++) sum += r();
    assert.ok(Math.abs(sum / 20000 - 0.5) < 0.01);
    const counts = [0, 0, 0, 0];
    for (let s = 0; s < 4000; s++) counts[permutation(4, s)[0]!]!++;
    for (const c of counts) assert.ok(Math.abs(c - 1000) < 120, `counts ${counts}`);
  });
});

describe('batches', () => {
  test('have shape [B, T] as int64 arrays, right padding, mask 1 on real tokens, and token counts', () => {
    const ds = dataset(6, 5);
    const [b] = take(ds.batches({ batchSize: 3, shuffle: false }), 1);
    assert.deepEqual(b!.shape, [3, 5]);
    for (const a of [b!.inputIds, b!.labels, b!.attentionMask])
      assert.ok(a instanceof BigInt64Array && a.length === 15);
    assert.deepEqual(
      Array.from(b!.inputIds, Number),
      [0, 1, 2, 3, 4, 1000, 1001, 1002, 1003, 0, 2000, 2001, 2002, 0, 0],
    );
    assert.deepEqual(Array.from(b!.labels, Number), [X, 1, 2, 3, 4, X, 1001, 1002, 1003, X, X, 2001, 2002, X, X]);
    assert.deepEqual(Array.from(b!.attentionMask, Number), [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 0, 0]);
    assert.equal(b!.tokens, 12);
    assert.equal(b!.lossTokens, 9);
    assert.deepEqual(
      [b!.position, b!.next],
      [
        { epoch: 0, index: 0 },
        { epoch: 0, index: 1 },
      ],
    );
  });

  test('an epoch visits every row once; the incomplete last batch is dropped by default', () => {
    const ds = dataset(10, 4);
    assert.equal(ds.batchesPerEpoch(3), 3);
    const epoch = [...ds.batches({ batchSize: 3, seed: 5, epochs: 1 })];
    assert.equal(epoch.length, 3);
    const seen = epoch.flatMap(rowsOf);
    assert.equal(new Set(seen).size, 9);
  });

  test('dropLast false fills the last batch with filler rows that carry no loss and one attended token', () => {
    const ds = dataset(4, 3);
    const epoch = [...ds.batches({ batchSize: 3, shuffle: false, epochs: 1, dropLast: false })];
    assert.equal(epoch.length, 2);
    const last = epoch[1]!;
    assert.equal(last.fillerRows, 2);
    assert.deepEqual(Array.from(last.labels.subarray(3), Number), Array(6).fill(X));
    assert.deepEqual(Array.from(last.attentionMask.subarray(3), Number), [1, 0, 0, 1, 0, 0]);
    assert.equal(last.tokens, 3);
  });

  test('each epoch has its own order, fixed by seed + epoch', () => {
    const ds = dataset(40, 2);
    const run = (seed: number) => [...ds.batches({ batchSize: 4, seed, epochs: 3 })].map(rowsOf);
    const a = run(11);
    assert.deepEqual(run(11), a, 'same seed, same batches');
    assert.notDeepEqual(a.slice(0, 10), a.slice(10, 20), 'epoch 1 is reshuffled');
    // Epoch 1 of seed 11 is epoch 0 of seed 12.
    assert.deepEqual(a.slice(10, 20), run(12).slice(0, 10));
    assert.notDeepEqual(run(12).slice(0, 10), a.slice(0, 10));
  });

  test('resuming from any saved position yields exactly the batches of an uninterrupted run', () => {
    const ds = dataset(23, 3);
    const opts = { batchSize: 4, seed: 3, epochs: 4 };
    const full = [...ds.batches(opts)];
    assert.equal(full.length, 20);
    for (const stop of [0, 1, 4, 5, 6, 13, 19]) {
      const it = ds.batches(opts);
      const before = take(it, stop + 1);
      const saved = JSON.parse(JSON.stringify(before.at(-1)!.next));
      const resumed = [...ds.batches({ ...opts, start: saved })];
      assert.equal(resumed.length, full.length - stop - 1, `stop ${stop}`);
      resumed.forEach((b, i) => {
        const want = full[stop + 1 + i]!;
        assert.deepEqual(b.position, want.position);
        assert.deepEqual(b.inputIds, want.inputIds);
        assert.deepEqual(b.labels, want.labels);
        assert.deepEqual(b.attentionMask, want.attentionMask);
      });
    }
  });

  test('a position at the end of an epoch resumes at the next epoch; the default runs without end', () => {
    const ds = dataset(8, 2);
    const [b] = [...ds.batches({ batchSize: 4, start: { epoch: 2, index: 2 }, epochs: 4 })].slice(0, 1);
    assert.deepEqual(b!.position, { epoch: 3, index: 0 });
    assert.equal(take(ds.batches({ batchSize: 4 }), 50).length, 50);
  });

  test('bad options are LK_INVALID_ARGUMENT errors that say what is wrong', () => {
    const ds = dataset(5, 2);
    const fails = (opts: Parameters<TokenDataset['batches']>[0], re: RegExp) =>
      assert.throws(
        () => ds.batches(opts).next(),
        (e: unknown) => e instanceof LorakitError && e.code === 'LK_INVALID_ARGUMENT' && re.test(e.message),
      );
    fails({ batchSize: 0 }, /batchSize must be an integer >= 1, got 0/);
    fails({ batchSize: 8 }, /batchSize 8 is larger than the dataset \(5 rows of 2 tokens\)/);
    fails(
      { batchSize: 2, start: { epoch: 0, index: 3 } },
      /start.index 3 is past the end of an epoch \(2 batches of 2\)/,
    );
    fails({ batchSize: 2, start: { epoch: -1, index: 0 } }, /start.epoch must be an integer >= 0/);
  });

  test('row(r) returns a row without its padding', () => {
    assert.deepEqual(dataset(3, 4).row(1), { inputIds: [1000, 1001, 1002], labels: [X, 1001, 1002] });
  });
});
