// Trans-LoRA's pieces on tiny byte-level bases: the filter's rule, seeded synthesis, the discriminator's score
// (against the full log-probabilities at the separator, and after training on a separable task), and the whole
// transfer from a 64-wide source to a 128-wide target, with the student's KL to the teacher measured independently.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HfTokenizer } from '../../../src/io/index.ts';
import { loadModel } from '../../../src/models/index.ts';
import { PeftModel, adaptable, loadAdapter } from '../../../src/peft/index.ts';
import { transfer } from '../../../src/train/index.ts';
import { assertAllclose } from '../../helpers.ts';
import { tinyBase, tinyShape } from './tiny.ts';

const TOKENS = { separator: 124, real: 89, synthetic: 78 }; // '|', 'Y', 'N'
const TEXT = 'the quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat by the door. ';

test('filterByScore keeps passing rows in order, then fills with the best rejected ones', () => {
  const rows = [[0], [1], [2], [3], [4], [5]];
  const f = transfer.filterByScore(rows, [0.5, -1, 2, -0.2, 0, 3], 2);
  assert.deepEqual(f.rows, [[0], [2]]);
  assert.equal(f.passed, 3);
  assert.equal(f.filled, 0);
  const g = transfer.filterByScore(rows, [0.5, -1, 2, -0.2, 0, 3], 5);
  // 3 pass (0, 2, 5); then the best rejected: 4 (score 0, not > 0) and 3 (−0.2)
  assert.deepEqual(g.rows, [[0], [2], [5], [4], [3]]);
  assert.equal(g.filled, 2);
  assert.throws(() => transfer.filterByScore(rows, [1], 1), /6 candidates but 1 scores/);
});

test('separationStats: accuracy, pass rates, two-way log-loss, AUC and |score| against hand values', () => {
  const st = transfer.separationStats([2, 0, -1], [-3, 0.5]);
  // real passing (> 0): 2 only; synthetic passing: 0.5; correct: 2, −3 → 2 of 5
  assert.equal(st.accuracy, 2 / 5);
  assert.equal(st.realPassed, 1 / 3);
  assert.equal(st.syntheticPassed, 1 / 2);
  const sp = (x: number) => Math.log(1 + Math.exp(x)); // −log σ(−x)
  assertAllclose([st.logLoss], [(sp(-2) + sp(0) + sp(1) + sp(-3) + sp(0.5)) / 5], { rtol: 1e-12, what: 'logLoss' });
  // pairs (real > synthetic): 2>−3, 2>0.5, 0>−3, −1>−3 → 4 of 6
  assert.equal(st.auc, 4 / 6);
  assert.equal(st.meanAbsScore, (2 + 0 + 1 + 3 + 0.5) / 5);
  const t = transfer.separationStats([2, 0, -1], [-3, 0.5], -1.5);
  assert.equal(t.realPassed, 1);
  assert.equal(t.syntheticPassed, 1 / 2);
  // overconfident scores cost log-loss on a mistake even when accuracy is the same
  assert.ok(transfer.separationStats([30], [2]).logLoss > transfer.separationStats([3], [0.2]).logLoss);
  assert.throws(() => transfer.separationStats([], [1]), /at least one real and one synthetic/);
});

test('synthesize: seeded, exactly newTokens per row, prompts cycle over the seeds', async () => {
  const dir = await tinyBase(tinyShape(2), 11);
  const model = await loadModel(dir);
  const tok = await HfTokenizer.fromDir(dir);
  const o = { seeds: ['the cat', 'a dog'], count: 5, newTokens: 12, seed: 3, batch: 4 };
  const a = await transfer.synthesize(model, tok, o);
  const b = await transfer.synthesize(model, tok, o);
  const c = await transfer.synthesize(model, tok, { ...o, seed: 4 });
  assert.equal(a.length, 5);
  for (const r of a) assert.equal(r.length, 12);
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
  await model.close();
});

test('Discriminator: its score is log p(real) − log p(synthetic) at the separator; training separates', async () => {
  const dir = await tinyBase(tinyShape(2), 12);
  const model = await loadModel(dir);
  const L = 10;
  const enc = (s: string) => Array.from(Buffer.from(s));
  const real = Array.from({ length: 16 }, (_, i) => enc(TEXT.slice(i, i + L)));
  const synthetic = Array.from({ length: 16 }, (_, i) => enc('zqxj#@kvwz%&'.repeat(3).slice(i % 12, (i % 12) + L)));
  const peft = new PeftModel(adaptable(model));
  await peft.addAdapter('disc', transfer.transferLoraConfig(4, 8), { seed: 0 });
  const before = await transfer.Discriminator.create(model, peft.generationAdapter(), TOKENS, L, { batch: 4 });
  const full = await transfer.LogProbs.create(model, { batch: 4, seqLen: L + 1 });
  const rows = [...real.slice(0, 3), ...synthetic.slice(0, 3)];
  const s0 = await before.score(rows);
  const lp = await full.run(rows.map((r) => transfer.questionRow(r, TOKENS)));
  const V = 259;
  const expected = rows.map((_, n) => {
    const at = (n * (L + 1) + L) * V;
    return lp[at + TOKENS.real] - lp[at + TOKENS.synthetic];
  });
  assertAllclose(s0, expected, { rtol: 1e-4, atol: 1e-4, what: 'score (B = 0: adapter is the identity)' });
  await before.dispose();
  await full.dispose();
  await transfer.trainDiscriminator({
    model,
    peft,
    adapter: 'disc',
    tokens: TOKENS,
    real,
    synthetic,
    length: L,
    batch: 8,
    steps: 40,
    lr: 1e-2,
    seed: 0,
    outputDir: mkdtempSync(join(tmpdir(), 'lk-disc-')),
    baseModel: dir,
  });
  const after = await transfer.Discriminator.create(model, peft.generationAdapter(), TOKENS, L, { batch: 4 });
  const s = await after.score([...real.slice(0, 4), ...synthetic.slice(0, 4)]);
  assert.ok(s.slice(0, 4).every((x) => x > 0) && s.slice(4).every((x) => x < 0), `scores ${[...s]}`);
  await after.dispose();

  // early stopping: held-out rows labelled against the training task, so the held-out loss rises as training
  // separates; the adapter must end at the best evaluation, whose loss an independent scorer reproduces
  const fresh = new PeftModel(adaptable(model));
  await fresh.addAdapter('early', transfer.transferLoraConfig(4, 8), { seed: 0 });
  const heldReal = synthetic.slice(0, 8),
    heldSynthetic = real.slice(0, 8);
  const early = { model, peft: fresh, adapter: 'early', tokens: TOKENS, real, synthetic, length: L, lr: 1e-2 };
  const history = await transfer.trainDiscriminator({
    ...early,
    batch: 8,
    steps: 20,
    seed: 0,
    outputDir: mkdtempSync(join(tmpdir(), 'lk-disc-early-')),
    baseModel: dir,
    heldOut: { real: heldReal, synthetic: heldSynthetic, every: 4 },
  });
  const evals = history.filter((r) => r.eval_loss !== undefined).map((r) => r.step);
  assert.deepEqual(evals, [4, 8, 12, 16, 20]);
  const best = transfer.bestEval(history)!;
  assert.ok(best.step < 20, `best held-out step ${best.step}: the rising held-out loss should stop it early`);
  const scorer = await transfer.LogProbs.create(model, {
    batch: 4,
    seqLen: L + 1,
    lastOnly: true,
    adapter: fresh.generationAdapter(),
  });
  const heldRows = [...heldReal, ...heldSynthetic];
  const out = await scorer.run(heldRows.map((r) => transfer.questionRow(r, TOKENS)));
  await scorer.dispose();
  // the held-out loss: −log p(label) at the separator, labels real for heldReal and synthetic for heldSynthetic
  const ce = heldRows.reduce((a, _, n) => a - out[n * V + (n < 8 ? TOKENS.real : TOKENS.synthetic)], 0) / 16;
  assertAllclose([ce], [best.eval_loss!], { rtol: 1e-4, atol: 1e-4, what: 'held-out loss of the kept adapter' });
  await assert.rejects(
    () =>
      transfer.trainDiscriminator({
        ...early,
        steps: 1,
        seed: 0,
        outputDir: tmpdir(),
        baseModel: dir,
        heldOut: { real: heldReal.slice(0, 3), synthetic: heldSynthetic.slice(0, 3), every: 1 },
      }),
    /multiple of 4 each; got 3 real, 3 synthetic/,
  );
  await model.close();
});

test('transferLora: a 64-wide source LoRA moves to a 128-wide target; the student nears the teacher', async () => {
  const sourceDir = await tinyBase(tinyShape(2, 1), 21);
  const targetDir = await tinyBase(tinyShape(2, 2), 22);
  const source = await loadModel(sourceDir);
  const target = await loadModel(targetDir);
  const work = mkdtempSync(join(tmpdir(), 'lk-translora-'));
  const L = 12;
  // a source adapter with non-zero B, so the teacher differs from the source base
  const sp = new PeftModel(adaptable(source));
  await sp.addAdapter('source', transfer.transferLoraConfig(4, 8), { seed: 1 });
  const vals = sp.trainableValues('source');
  for (const [n, v] of vals) if (n.includes('lora_B')) for (let i = 0; i < v.length; i++) v[i] = 0.05 * Math.sin(i + 1);
  sp.setValues('source', Object.fromEntries(vals));
  const { saveAdapter } = await import('../../../src/peft/index.ts');
  await saveAdapter(sp, 'source', join(work, 'source'), { baseModel: sourceDir });
  const real = Array.from({ length: 12 }, (_, i) => Array.from(Buffer.from(TEXT.slice(i * 3, i * 3 + L))));
  await transfer.buildTransferKit({
    source,
    tokenizer: await HfTokenizer.fromDir(sourceDir),
    real,
    seeds: ['the quick brown', 'over the lazy', 'the warm mat'],
    tokens: TOKENS,
    length: L,
    syntheticCount: 12,
    steps: 6,
    lr: 5e-3,
    seed: 0,
    outDir: join(work, 'kit'),
  });
  assert.ok(existsSync(join(work, 'kit', 'adapter_config.json')) && existsSync(join(work, 'kit', 'transfer_kit.json')));
  const result = await transfer.transferLora({
    source,
    sourceAdapterDir: join(work, 'source'),
    kitDir: join(work, 'kit'),
    target,
    targetTokenizer: await HfTokenizer.fromDir(targetDir),
    keep: 8,
    candidatesPerRound: 8,
    maxRounds: 2,
    steps: 25,
    lr: 1e-2,
    batch: 4,
    seed: 0,
    outDir: join(work, 'out'),
  });
  assert.equal(result.filter!.passed + result.filter!.filled >= 8, true);
  const cfg = JSON.parse(readFileSync(join(result.adapterDir, 'adapter_config.json'), 'utf8'));
  assert.equal(cfg.r, 4);
  assert.equal(cfg.base_model_name_or_path, targetDir);
  // independent check: KL(teacher ‖ student) on fixed rows, from each model's own log-probabilities, on the host
  const rows = real.slice(0, 4);
  const teacher = await transfer.LogProbs.create(source, { batch: 4, seqLen: L, adapter: sp.generationAdapter() });
  const tl = await teacher.run(rows);
  const kl = async (adapterDir: string | null) => {
    const tp = new PeftModel(adaptable(target));
    if (adapterDir) await loadAdapter(tp, adapterDir, 'x');
    const s = await transfer.LogProbs.create(target, { batch: 4, seqLen: L, adapter: tp.generationAdapter() });
    const lp = await s.run(rows);
    await s.dispose();
    return transfer.distillKlHost(lp, tl, new Float64Array(4 * L).fill(1), 259); // lp are log-softmaxed logits
  };
  const klBase = await kl(null);
  const klStudent = await kl(result.adapterDir);
  // held-out rows (real text, not the synthetic rows it was trained on): a small but real decrease
  assert.ok(klStudent < klBase - 0.05, `KL to the teacher: target base ${klBase}, transferred ${klStudent}`);
  const losses = result.history.map((r) => r.loss);
  const mean = (a: number[]) => a.reduce((x, y) => x + y, 0) / a.length;
  assert.ok(
    mean(losses.slice(-5)) < 0.8 * mean(losses.slice(0, 5)),
    `distillation KL ${losses.map((l) => l.toFixed(2))}`,
  );
  await teacher.dispose();

  // the ablation without the filter distils on the target's first `keep` candidates, generated independently here
  const plain = await transfer.transferLora({
    source,
    sourceAdapterDir: join(work, 'source'),
    kitDir: join(work, 'kit'),
    target,
    targetTokenizer: await HfTokenizer.fromDir(targetDir),
    keep: 6,
    candidatesPerRound: 4,
    maxRounds: 3,
    filter: false,
    steps: 2,
    lr: 1e-2,
    batch: 4,
    seed: 0,
    outDir: join(work, 'plain'),
  });
  assert.equal(plain.filter, null);
  const tok = await HfTokenizer.fromDir(targetDir);
  const seeds = ['the quick brown', 'over the lazy', 'the warm mat'];
  const round = (k: number) => transfer.synthesize(target, tok, { seeds, count: 4, newTokens: L, seed: 1 + k });
  assert.deepEqual(plain.rows, [...(await round(0)), ...(await round(1))].slice(0, 6));
  await source.close();
  await target.close();
});
