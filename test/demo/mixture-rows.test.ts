// The mixture loop on tokenised rows (chat rows with prompt-masked labels), on the tiny llama fixture: the aligned →
// next label shift, DatasetRows' seeded order, evaluateMixture on such rows against the causal-LM loss built with
// aligned labels and the attention mask (the Trainer's convention), its greedy first answer tokens against
// generate(), and trainMixture taking row-source domains.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { DatasetRows, datasetBatches, nextTargets } from '../../src/demo/data.ts';
import { evaluateMixture, trainMixture } from '../../src/demo/mixture.ts';
import { Graph } from '../../src/graph/index.ts';
import { HfTokenizer } from '../../src/io/index.ts';
import { generate, loadModel } from '../../src/models/index.ts';
import { MixtureModel, parseMixtureConfig } from '../../src/peft/mixture/index.ts';
import { compile } from '../../src/runtime/index.ts';
import { IGNORE_INDEX, TokenDataset } from '../../src/train/data/index.ts';
import { causalLmLoss } from '../../src/train/loss.ts';
import { rng } from '../helpers.ts';

const BASE = 'test/fixtures/models/llama';
const model = await loadModel(BASE);
after(() => model.close());
const T = 12;
const PAD = 0;

/** Rows like chat rows: a prompt (label -100; position 0 always), an answer (label = id), right padding. */
function dataset(lengths: number[], prompts: number[], seed: number): TokenDataset {
  const random = rng(seed);
  const ids = new Int32Array(lengths.length * T).fill(PAD);
  const labels = new Int32Array(lengths.length * T).fill(IGNORE_INDEX);
  lengths.forEach((n, r) => {
    for (let t = 0; t < n; t++) {
      ids[r * T + t] = 3 + Math.floor(random() * 380);
      if (t >= prompts[r]) labels[r * T + t] = ids[r * T + t];
    }
  });
  return new TokenDataset({ seqLen: T, ids, labels, lengths: Uint32Array.from(lengths) }, PAD);
}

const ds = dataset([12, 7, 9, 5, 10], [4, 3, 6, 2, 9], 1);

test('nextTargets shifts aligned labels left by one per row; the last position is not counted', () => {
  const b = ds.batches({ batchSize: 5, shuffle: false, epochs: 1 }).next().value!;
  const n = nextTargets(b);
  assert.equal(n.inputIds, b.inputIds);
  for (let r = 0; r < 5; r++)
    for (let t = 0; t < T; t++)
      assert.equal(n.labels[r * T + t], t === T - 1 ? BigInt(IGNORE_INDEX) : b.labels[r * T + t + 1], `${r},${t}`);
});

test('DatasetRows: one epoch visits every row once in the seeded order, the next epoch reshuffles', () => {
  const rows = new DatasetRows(ds, 7);
  assert.equal(rows.T, T);
  const firstIds = (i: number) => Number(rows.batch(i, 1).inputIds[0]);
  const epoch0 = [0, 1, 2, 3, 4].map(firstIds);
  assert.deepEqual([...epoch0].sort(), [0, 1, 2, 3, 4].map((r) => ds.row(r).inputIds[0]).sort());
  assert.deepEqual([0, 1, 2, 3, 4].map(firstIds), epoch0, 'a function of seed and index');
  const epoch1 = [5, 6, 7, 8, 9].map(firstIds);
  assert.deepEqual([...epoch1].sort(), [...epoch0].sort());
  assert.notDeepEqual(epoch1, epoch0);
  assert.deepEqual(rows.batch(1, 2).inputIds.subarray(0, T), rows.batch(2, 1).inputIds, 'batch 1 of 2 = row 2');
  assert.throws(() => new DatasetRows(ds, 0).batch(0, 6), /fewer than one batch of 6/);
});

test('evaluateMixture on dataset rows = the causal-LM loss with aligned labels and the attention mask', async () => {
  const B = 2;
  const mixture = MixtureModel.create(
    parseMixtureConfig({ method: 'lora_mixer', num_experts: 1, r: 2, top_k: 1 }, 'test'),
    model.modules(),
  );
  const e = await evaluateMixture(model, mixture, datasetBatches(ds, B), B, T, { firstTokens: true });
  // the reference: the Trainer's convention on the raw batches (shift inside the graph, padding masked)
  const g = new Graph('ref');
  const inputIds = g.input('input_ids', 'i64', [B, T]);
  const labels = g.input('labels', 'i64', [B, T]);
  const attentionMask = g.input('attention_mask', 'i64', [B, T]);
  const r = causalLmLoss({ ctx: model.context(g), inputIds, labels, attentionMask, labelsAre: 'aligned' });
  g.output('nll_sum', r.nllSum);
  g.output('count', r.count);
  const session = await compile(g);
  let sum = 0,
    count = 0;
  for (const b of ds.batches({ batchSize: B, shuffle: false, epochs: 1, dropLast: false })) {
    const out = await session.run({ input_ids: b.inputIds, labels: b.labels, attention_mask: b.attentionMask });
    sum += Number(out.nll_sum.data[0]);
    count += Number(out.count.data[0]);
  }
  await session.dispose();
  assert.ok(Math.abs(e.loss - sum / count) < 1e-5 * (sum / count), `${e.loss} vs ${sum / count}`);
  // greedy first answer tokens: generate() from each row's prompt (its own graph, KV cache and head)
  const tokenizer = await HfTokenizer.fromDir(BASE);
  const prompts = [0, 1, 2, 3, 4].map((i) => {
    const row = ds.row(i);
    return row.inputIds.slice(
      0,
      row.labels.findIndex((y) => y !== IGNORE_INDEX),
    );
  });
  const gen = await generate(model, tokenizer, { inputIds: prompts, maxNewTokens: 1, temperature: 0 });
  assert.deepEqual(
    e.firstTokens,
    [...gen.rows.map((x) => x.tokenIds[0]), -1],
    'one per row; the filler row of the last batch has none',
  );
});

test('trainMixture takes row-source domains (both LoRA-Mixer stages); a row length other than seqLen fails', async () => {
  const mixture = MixtureModel.create(
    parseMixtureConfig({ method: 'lora_mixer', num_experts: 2, r: 2, top_k: 1 }, 'test'),
    model.modules(),
  );
  const domains = [
    { name: 'a', rows: new DatasetRows(ds, 0) },
    { name: 'b', rows: new DatasetRows(dataset([9, 11, 6, 12], [2, 5, 3, 8], 2), 0) },
  ];
  const before = await evaluateMixture(model, mixture, datasetBatches(ds, 2), 2, T);
  const history = await trainMixture({
    model,
    mixture,
    domains,
    steps: 2,
    hardSteps: 3,
    batch: 2,
    seqLen: T,
    lr: 1e-2,
    seed: 0,
  });
  assert.deepEqual(
    history.map((h) => h.stage),
    ['hard', 'hard', 'hard', 'soft', 'soft'],
  );
  assert.ok(history.every((h) => Number.isFinite(h.loss)));
  const afterTraining = await evaluateMixture(model, mixture, datasetBatches(ds, 2), 2, T);
  assert.notEqual(afterTraining.loss, before.loss, 'the experts moved');
  await assert.rejects(
    trainMixture({ model, mixture, domains, steps: 1, batch: 2, seqLen: 8, lr: 1e-2, seed: 0 }),
    /mixture domain a: rows of 12 tokens, seqLen is 8/,
  );
});
