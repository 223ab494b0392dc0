// Attention masks (causal with a cache offset, padding, sliding window). Grouped-query attention's head order
// (transformers' repeat_kv) is checked by the Llama-family logits tests (fixtures with 2 and 1 kv heads).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Graph } from '../../src/graph/index.ts';
import { attentionMask } from '../../src/nn/index.ts';
import { compile } from '../../src/runtime/index.ts';

test(
  'attentionMask: query t at cache position P + t sees keys s <= P + t, not padding, within the ' + 'window',
  async () => {
    const g = new Graph();
    const pad = g.input('mask', 'i64', [2, 'S']);
    const common = { attentionMask: pad, queryLen: g.constInts([2], []), pastLen: g.constInts([3], []) };
    g.output('causal', attentionMask(g, { ...common, causal: true })!.allowed);
    g.output('window', attentionMask(g, { ...common, causal: true, slidingWindow: 2 })!.allowed);
    g.output('bidirectional', attentionMask(g, { ...common, causal: false })!.allowed);
    const out = await (await compile(g, { worker: false })).run({
      mask: { data: BigInt64Array.from([1, 1, 1, 1, 1, 0, 0, 1, 1, 1].map(BigInt)), shape: [2, 5] },
    });
    const rows = (k: string) => Array.from(out[k].data as Uint8Array).join('');
    assert.deepEqual(out.causal.shape, [2, 1, 2, 5]);
    // row 0 (no padding): t=0 sees 0..3, t=1 sees 0..4; row 1 has two left pads
    assert.equal(rows('causal'), '11110' + '11111' + '00110' + '00111');
    assert.equal(rows('window'), '00110' + '00011' + '00110' + '00011');
    assert.equal(rows('bidirectional'), '11111' + '00111');
  },
);

test(
  "attentionMask: only a padding mask can leave a query with no key (attention then zeroes that row's " + 'gradient)',
  () => {
    const g = new Graph();
    const common = { queryLen: g.constInts([2], []), pastLen: g.constInts([0], []) };
    assert.equal(attentionMask(g, { ...common, causal: true, slidingWindow: 1 })!.emptyRows, false);
    assert.equal(
      attentionMask(g, { ...common, causal: true, attentionMask: g.input('mask', 'i64', [1, 2]) })!.emptyRows,
      true,
    );
    assert.equal(attentionMask(g, { ...common, causal: false }), null);
  },
);
