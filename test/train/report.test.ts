// metrics.jsonl writing and the number formats of progress lines.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MetricsLog, formatDuration, formatRate, type StepRecord } from '../../src/train/index.ts';

const rec = (step: number): StepRecord => ({
  step,
  loss: 1 / step,
  lr: 1e-3,
  grad_norm: 0.5,
  tokens: 8 * step,
  tokens_per_s: 100,
  elapsed: step,
});

test('MetricsLog.reset replaces the file with a checkpoint history, append adds one JSON line', async () => {
  const log = new MetricsLog(join(mkdtempSync(join(tmpdir(), 'lorakit-metrics-')), 'metrics.jsonl'));
  await log.reset([rec(1), rec(2), rec(3)]);
  await log.reset([rec(1), rec(2)]); // a resumed run drops lines after its checkpoint
  await log.append({ ...rec(3), eval_loss: 0.3, eval_ppl: Math.exp(0.3) });
  const lines = readFileSync(log.path, 'utf8').split('\n');
  assert.equal(lines.pop(), '', 'the file ends with a newline');
  assert.deepEqual(
    lines.map((l) => JSON.parse(l).step),
    [1, 2, 3],
  );
  assert.equal(JSON.parse(lines[2]).eval_loss, 0.3);
});

test('durations and rates read as a person writes them', () => {
  assert.deepEqual([0, 12.4, 185, 3725, Infinity].map(formatDuration), ['0s', '12s', '3m05s', '1h02m', '?']);
  assert.deepEqual([950, 12_345, 1_200_000].map(formatRate), ['950', '12.3k', '1.20M']);
});
