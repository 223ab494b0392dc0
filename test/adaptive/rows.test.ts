// The adaptive objective on the causal-LM task's rows (chat rows: loss on the answer tokens only, right padding):
// rowBatches shifts the aligned labels to next-token targets, and the coefficient-merged loss of a one-adapter pool
// at coefficient 1 equals the causal-LM task's own evaluator (aligned labels, attention mask) on the same rows with
// the same LoRA, saved by the task and read back as a pool.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { CoefficientObjective, poolFromLoras, rowBatches } from '../../src/adaptive/index.ts';
import { Rng } from '../../src/linalg/index.ts';
import { loadModel } from '../../src/models/index.ts';
import { adaptable, compose, PeftModel } from '../../src/peft/index.ts';
import { shutdownRuntime } from '../../src/runtime/index.ts';
import { TokenDataset } from '../../src/train/data/index.ts';
import { causalLmTask } from '../../src/train/index.ts';
import { assertAllclose } from '../helpers.ts';
import { LLAMA } from './tiny.ts';

after(shutdownRuntime);
const T = 12;
/** Real tokens per row and how many of them are "prompt" (no loss): 5 rows, so batches of 2 end with a filler row. */
const ROWS: [number, number][] = [
  [12, 3],
  [9, 4],
  [6, 2],
  [12, 7],
  [4, 1],
];

/** Chat-like rows: random ids, labels aligned with them on the answer part, -100 on the prompt and the padding. */
function chatRows(): TokenDataset {
  const rng = new Rng(7);
  const ids = new Int32Array(ROWS.length * T);
  const labels = new Int32Array(ROWS.length * T).fill(-100);
  ROWS.forEach(([n, prompt], r) => {
    for (let t = 0; t < n; t++) {
      ids[r * T + t] = 1 + Math.floor(rng.next() * 300);
      if (t >= prompt) labels[r * T + t] = ids[r * T + t];
    }
  });
  return new TokenDataset({ seqLen: T, ids, labels, lengths: Uint32Array.from(ROWS.map(([n]) => n)) }, 0);
}

test('rowBatches shifts aligned labels to next-token targets, row by row, the last target ignored', () => {
  const data = chatRows();
  const batches = rowBatches(data, 2);
  assert.equal(batches.length, 3);
  for (let r = 0; r < ROWS.length; r++) {
    const { inputIds, labels } = batches[Math.floor(r / 2)];
    const k = r % 2;
    const row = data.row(r);
    for (let t = 0; t < T; t++) {
      const want = t + 1 < row.labels.length ? row.labels[t + 1] : -100;
      assert.equal(Number(labels[k * T + t]), want, `row ${r} position ${t}`);
      if (t < row.inputIds.length) assert.equal(Number(inputIds[k * T + t]), row.inputIds[t]);
    }
  }
  // the filler row of the last batch counts nothing
  assert.ok(batches[2].labels.subarray(T).every((v) => v === -100n));
});

test("the coefficient-merged loss on chat rows equals the causal-LM task's evaluator with the same LoRA", async () => {
  const model = await loadModel(LLAMA);
  const dir = await mkdtemp(join(tmpdir(), 'lk-adaptive-rows-'));
  try {
    const peft = new PeftModel(adaptable(model));
    const config = { target_modules: ['q_proj', 'v_proj', 'down_proj'], r: 4, lora_alpha: 8, lora_dropout: 0 };
    await peft.addAdapter('default', config, { seed: 1 });
    // B starts at zero: random B values make the adapter change the loss
    const rng = new Rng(3);
    const params = new Map(peft.trainableValues('default'));
    let bs = 0;
    for (const [k, v] of params)
      if (k.includes('lora_B')) {
        params.set(k, Float32Array.from(rng.normalArray(v.length, 0.2)));
        bs++;
      }
    assert.equal(bs, 6, 'two layers × three targets of B factors');
    const data = chatRows();
    const task = causalLmTask({ model, peft, adapter: 'default', train: data, eval: data, batchSize: 2 });
    const want = (await task.evaluate!(params)).loss;
    const base = (await task.evaluate!(new Map(peft.trainableValues('default')))).loss;
    await task.save!(dir, params);
    const pool = poolFromLoras(['lora'], [await compose.readLora(dir)]);
    const obj = await CoefficientObjective.create({
      model,
      pool,
      spec: { granularity: 'task', phi: 'linear' },
      batch: 2,
      seqLen: T,
    });
    try {
      const batches = rowBatches(data, 2);
      assertAllclose([await obj.loss(obj.values(1), batches)], [want], { rtol: 1e-5, what: 'merged loss, w = 1' });
      assertAllclose([await obj.loss(obj.values(0), batches)], [base], { rtol: 1e-5, what: 'merged loss, w = 0' });
      assert.ok(Math.abs(want - base) > 1e-3, `the adapter changes the loss (${want} vs ${base})`);
      // the training graph's loss on one full batch is the same mean over its counted targets
      const first = await obj.lossAndGrad(obj.values(1), batches[0]);
      assertAllclose([first.loss], [await obj.loss(obj.values(1), [batches[0]])], { rtol: 1e-5 });
    } finally {
      await obj.dispose();
    }
  } finally {
    await model.close();
    await rm(dir, { recursive: true, force: true });
  }
});
