// Examples to rows of T tokens: padding with truncation, packing with EOS separators, the loss-boundary rules.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { buildRows, rowCount, type RowSet } from '../../../src/train/data/rows.ts';
import type { ExampleSet } from '../../../src/train/data/encode.ts';

const X = -100,
  EOS = 2,
  PAD = 0;

/** An ExampleSet from literal examples. */
function set(...examples: [number[], number[]][]): ExampleSet {
  const offsets = [0];
  for (const [ids] of examples) offsets.push(offsets.at(-1)! + ids.length);
  return {
    offsets: Uint32Array.from(offsets),
    ids: Int32Array.from(examples.flatMap(([i]) => i)),
    labels: Int32Array.from(examples.flatMap(([, l]) => l)),
  };
}

/** Rows as [ids, labels, length] triples. */
function rows(r: RowSet): [number[], number[], number][] {
  const T = r.seqLen;
  return Array.from({ length: rowCount(r) }, (_, k) => [
    Array.from(r.ids.subarray(k * T, (k + 1) * T)),
    Array.from(r.labels.subarray(k * T, (k + 1) * T)),
    r.lengths[k]!,
  ]);
}

// Prompt tokens 10.., completion tokens 20.., each example ends with EOS (as encode.ts makes them).
const a: [number[], number[]] = [
  [1, 10, 11, 20, 21, EOS],
  [X, X, X, 20, 21, EOS],
];
const b: [number[], number[]] = [
  [1, 12, 22, EOS],
  [X, X, 22, EOS],
];
const c: [number[], number[]] = [
  [1, 13, 14, 15, 16, 17, 23, EOS],
  [X, X, X, X, X, X, 23, EOS],
];

describe('padding', () => {
  test('one example per row, padded on the right with the pad id, label -100 and a length', () => {
    const { rows: r, stats } = buildRows(set(a, b), [0, 1], { seqLen: 6, packing: false, padId: PAD, eosId: EOS });
    assert.deepEqual(rows(r), [
      [[1, 10, 11, 20, 21, EOS], [X, X, X, 20, 21, EOS], 6],
      [[1, 12, 22, EOS, PAD, PAD], [X, X, 22, EOS, X, X], 4],
    ]);
    assert.deepEqual(stats, { truncated: 0, longest: 6, droppedNoLoss: 0 });
  });

  test('a longer example is cut to T and counted; a row left with no loss token is dropped and counted', () => {
    const { rows: r, stats } = buildRows(set(a, b, c), [0, 1, 2], {
      seqLen: 4,
      packing: false,
      padId: PAD,
      eosId: EOS,
    });
    // a → [1 10 11 20] keeps one loss token; c → [1 13 14 15] has none and is dropped.
    assert.deepEqual(rows(r), [
      [[1, 10, 11, 20], [X, X, X, 20], 4],
      [[1, 12, 22, EOS], [X, X, 22, EOS], 4],
    ]);
    assert.deepEqual(stats, { truncated: 2, longest: 8, droppedNoLoss: 1 });
  });

  test('rows follow the order of the example indices given', () => {
    const { rows: r } = buildRows(set(a, b), [1, 0], { seqLen: 6, packing: false, padId: PAD, eosId: EOS });
    assert.deepEqual(
      rows(r).map(([ids]) => ids[1]),
      [12, 10],
    );
  });
});

describe('packing', () => {
  test('examples are concatenated into full rows; only the last row is padded; nothing is truncated', () => {
    const { rows: r, stats } = buildRows(set(a, b, c), [0, 1, 2], { seqLen: 5, packing: true, padId: PAD, eosId: EOS });
    // stream: 1 10 11 20 21 | EOS 1 12 22 EOS | 1 13 14 15 16 | 17 23 EOS
    assert.deepEqual(rows(r), [
      [[1, 10, 11, 20, 21], [X, X, X, 20, 21], 5],
      [[EOS, 1, 12, 22, EOS], [X, X, X, 22, EOS], 5],
      // the row holds only prompt tokens of c: dropped
      [[17, 23, EOS, PAD, PAD], [X, 23, EOS, X, X], 3],
    ]);
    assert.deepEqual(stats, { truncated: 0, longest: 8, droppedNoLoss: 1 });
  });

  test('every row but the last is full, and the real tokens are the examples back to back', () => {
    // Text-like examples of 2..6 tokens, all with loss, so no row is dropped.
    const many = set(
      ...Array.from({ length: 30 }, (_, k): [number[], number[]] => {
        const ids = [...Array.from({ length: 1 + (k % 5) }, (_, j) => 100 + k * 10 + j), EOS];
        return [ids, [X, ...ids.slice(1)]];
      }),
    );
    const { rows: r } = buildRows(
      many,
      Array.from({ length: 30 }, (_, k) => k),
      { seqLen: 9, packing: true, padId: PAD, eosId: EOS },
    );
    // 120 tokens: 13 full rows and a tail of 3.
    assert.deepEqual(Array.from(r.lengths), [...Array(13).fill(9), 3]);
    const stream = rows(r).flatMap(([ids, , n]) => ids.slice(0, n));
    assert.deepEqual(stream, Array.from(many.ids));
  });

  test('the first token of each example and of each row carries no loss', () => {
    // Examples that are all loss (text records, whose first label encode.ts already sets to -100).
    const t1: [number[], number[]] = [
      [30, 31, 32, EOS],
      [X, 31, 32, EOS],
    ];
    const t2: [number[], number[]] = [
      [40, 41, 42, EOS],
      [X, 41, 42, EOS],
    ];
    const { rows: r } = buildRows(set(t1, t2, t1), [0, 1, 2], { seqLen: 6, packing: true, padId: PAD, eosId: EOS });
    assert.deepEqual(rows(r), [
      [[30, 31, 32, EOS, 40, 41], [X, 31, 32, EOS, X, 41], 6],
      // 42 continues t2 from the previous row: as the row's first position it is never a target
      [[42, EOS, 30, 31, 32, EOS], [X, EOS, X, 31, 32, EOS], 6],
    ]);
  });

  test('an example that does not end with EOS gets an EOS separator without loss', () => {
    const chat: [number[], number[]] = [
      [50, 51, 52, 53],
      [X, X, 52, 53],
    ];
    const { rows: r } = buildRows(set(chat, chat), [0, 1], { seqLen: 5, packing: true, padId: PAD, eosId: EOS });
    assert.deepEqual(rows(r), [
      [[50, 51, 52, 53, EOS], [X, X, 52, 53, X], 5],
      [[50, 51, 52, 53, EOS], [X, X, 52, 53, X], 5],
    ]);
  });

  test('without an EOS id, examples are joined with no separator', () => {
    const chat: [number[], number[]] = [
      [50, 51, 52],
      [X, 51, 52],
    ];
    const { rows: r } = buildRows(set(chat, chat), [0, 1], { seqLen: 3, packing: true, padId: PAD });
    assert.deepEqual(
      rows(r).map(([ids]) => ids),
      [
        [50, 51, 52],
        [50, 51, 52],
      ],
    );
  });
});
