// MatryoshkaLoRA against independent references: P against Algorithm 1 as the official code computes it (a count D per
// component and a sum over the largest train ranks); the training graph (fed its step inputs) against a float64 host
// model with ΔW = Σ_{t∈S} s(t)·B[:, :t]·A[:t, :] (and over |S| with "binary" masks); evaluation at inference_rank t
// against ΔW = s(t)·B[:, :t]·A[:t, :], merged and as the rank-t folder saveTruncated writes; the official init
// A ~ U(±1/√r); the refusals. (Gradients, resume and the count: test/peft/contract.test.ts.)
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { LorakitError } from '../../../src/errors.ts';
import { Graph } from '../../../src/graph/index.ts';
import { Rng } from '../../../src/linalg/index.ts';
import {
  type AdaptableBase,
  loadAdapter,
  matryoshkaWeights,
  PeftModel,
  resolveConfig,
  saveTruncated,
  trainRanks,
} from '../../../src/peft/index.ts';
import { compile } from '../../../src/runtime/index.ts';
import { assertAllclose } from '../../helpers.ts';
import { hostLogits, mm64 } from '../host.ts';
import { IDS, perturbAdapter, toyBase, toyForward, toyLogits, toyWeights } from '../toy.ts';

const TARGETS = ['q_proj', 'c_fc']; // Linear 6→5, 5→6, Conv1D 6→4

/** Algorithm 1 as adapters/matryoshka.py runs it: D[i] counts train ranks ≥ i+1, P[i] sums the D[i] largest scales. */
function officialP(rank: number, trainRanks: number[], scale: (t: number) => number): number[] {
  const D = new Array(rank).fill(0);
  const mapping = new Map<number, number>();
  let c = 0;
  const n = trainRanks.length;
  for (let r = rank; r >= 1; r--) {
    if (trainRanks.includes(r)) c++;
    D[r - 1] = c;
    if (!mapping.has(c))
      mapping.set(
        c,
        trainRanks.slice(n - c).reduce((s, t) => s + scale(t), 0),
      );
  }
  return D.map((d) => mapping.get(d)!);
}

const resolved = (m: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
  resolveConfig({ r: 8, target_modules: ['q_proj'], matryoshka: m, ...extra }, 'test').config as never;

test("P is Algorithm 1's (ranks above r dropped, r in S required); binary masks divide it by |S|", () => {
  for (const [m, extra, S, scale] of [
    [{}, {}, [1, 2, 4, 8], (t: number) => 1 / t],
    [{ train_ranks: [16, 1, 2, 4, 8] }, { use_rslora: true }, [1, 2, 4, 8], (t: number) => 1 / Math.sqrt(t)],
    [{ train_ranks: [3, 8] }, {}, [3, 8], (t: number) => 1 / t],
  ] as const) {
    const c = resolved(m, extra);
    assert.deepEqual(trainRanks(c), S);
    assertAllclose(matryoshkaWeights(c), officialP(8, [...S], scale), { rtol: 1e-6, atol: 0, what: JSON.stringify(m) });
  }
  const binary = matryoshkaWeights(resolved({ mask_type: 'binary' }));
  assertAllclose(
    binary,
    officialP(8, [1, 2, 4, 8], (t) => 1 / t).map((p) => p / 4),
    { rtol: 1e-6, atol: 0 },
  );
  assert.deepEqual(trainRanks(resolved({}, { r: 6 })), [1, 2, 4, 6]);
  assert.throws(
    () => resolved({ train_ranks: [1, 2, 4] }),
    (e: unknown) =>
      e instanceof LorakitError && e.message.includes('matryoshka.train_ranks') && e.message.includes('r = 8'),
  );
});

async function matOn(m: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  const peft = new PeftModel(toyBase());
  await peft.addAdapter(
    'default',
    { r: 4, lora_alpha: 3, target_modules: TARGETS, matryoshka: m, ...extra },
    { seed: 3 },
  );
  perturbAdapter(peft);
  return peft;
}

/** ΔW [out, in] of one layer, Σ over `ranks` of weight(t)·B[:, :t]·A[:t, :] in float64. */
function nestedDelta(peft: PeftModel, path: string, ranks: number[], weight: (t: number) => number): Float64Array {
  const l = peft.get('default').layers.get(path)!;
  const [out, inn, r] = [l.info.outFeatures, l.info.inFeatures, 4];
  const [A, B] = [l.values['lora_A.weight'], l.values['lora_B.weight']];
  const d = new Float64Array(out * inn);
  for (const t of ranks) {
    const At = A.slice(0, t * inn);
    const Bt = Float64Array.from({ length: out * t }, (_, i) => B[Math.floor(i / t) * r + (i % t)]);
    const term = mm64(Bt, At, out, t, inn);
    for (let k = 0; k < d.length; k++) d[k] += weight(t) * term[k];
  }
  return d;
}

/** Logits of the training graph, its step inputs fed with their training values. */
async function trainingLogits(peft: PeftModel): Promise<Float32Array> {
  const g = new Graph('matryoshka-train');
  const ids = g.input('ids', 'i64', [2, 4]);
  const binding = peft.bind({ train: 'default', feedStepInputs: true });
  g.output('logits', toyForward(g, ids, toyWeights(), binding.hooks).logits);
  const steps = peft.stepInputValues('default', { step: 1, rng: new Rng(0), params: new Map() });
  const feeds = { ids: IDS, ...Object.fromEntries(peft.trainableValues('default')), ...steps };
  return (await (await compile(g, { worker: false })).run(feeds)).logits.data as Float32Array;
}

for (const [mask, div] of [
  ['diag', 1],
  ['binary', 3],
] as const) {
  test(`the ${mask} training forward is Σ_t s(t)·B_t·A_t${div > 1 ? ' / |S|' : ''} (float64 host model)`, async () => {
    const S = [1, 2, 4];
    const peft = await matOn({ train_ranks: S, mask_type: mask });
    const paths = [...peft.get('default').layers.keys()];
    const deltas = new Map(paths.map((p) => [p, nestedDelta(peft, p, S, (t) => 3 / t / div)]));
    assertAllclose(await trainingLogits(peft), hostLogits(deltas), { atol: 1e-5, what: `${mask} training logits` });
  });
}

test('evaluation and merges run at inference_rank t: s(t)·B_t·A_t, the rank-t folder saveTruncated writes', async () => {
  const peft = await matOn({ inference_rank: 2 }, { use_rslora: true });
  const paths = [...peft.get('default').layers.keys()];
  const want = hostLogits(new Map(paths.map((p) => [p, nestedDelta(peft, p, [2], (t) => 3 / Math.sqrt(t))])));
  const inferred = await toyLogits(peft);
  assertAllclose(inferred, want, { atol: 1e-5, what: 'inference at rank 2' });
  await peft.merge();
  assertAllclose(await toyLogits(peft), inferred, { atol: 2e-5, rtol: 2e-5, what: 'merged at rank 2' });
  peft.unmerge();
  const dir = mkdtempSync(join(tmpdir(), 'lk-matryoshka-'));
  await saveTruncated(peft, 'default', dir, 2);
  const config = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
  assert.deepEqual([config.r, config.lora_alpha, config.use_rslora, config.matryoshka], [2, 3, true, undefined]);
  const loaded = new PeftModel(toyBase());
  await loadAdapter(loaded, dir);
  assertAllclose(await toyLogits(loaded), inferred, { atol: 2e-6, rtol: 2e-6, what: 'saveTruncated rank 2' });
});

test('A is initialised as the official [in, r] tensor: U(±1/√r), not U(±1/√in); B = 0', async () => {
  const [inF, outF, r] = [96, 40, 16];
  const base: AdaptableBase = {
    modules: [{ kind: 'linear', path: 'proj', inFeatures: inF, outFeatures: outF, weightName: 'w', biasName: null }],
    outputHead: null,
    readWeight: async () => new Float32Array(inF * outF),
  };
  const peft = new PeftModel(base);
  await peft.addAdapter('default', { r, target_modules: ['proj'], matryoshka: {} }, { seed: 2 });
  const v = peft.get('default').layers.get('proj')!.values;
  const A = v['lora_A.weight'];
  const bound = 1 / Math.sqrt(r);
  assert.ok(A.every((x) => Math.abs(x) <= bound));
  assert.ok(Math.max(...A.map(Math.abs)) > 2 / Math.sqrt(inF), 'wider than LoRA’s U(±1/√in)');
  const variance = A.reduce((s, x) => s + x * x, 0) / A.length;
  assertAllclose([variance], [(bound * bound) / 3], { rtol: 0.1, atol: 0, what: 'variance' });
  assert.ok(v['lora_B.weight'].every((x) => x === 0));
});

test('matryoshka refuses rank_pattern, an inference rank above r, embeddings, and DyLoRA (both replace the forward)', async () => {
  const code = (c: string, text: string) => (e: unknown) =>
    e instanceof LorakitError && e.code === c && e.message.includes(text);
  const add = (extra: Record<string, unknown>) =>
    new PeftModel(toyBase()).addAdapter('x', { r: 4, target_modules: TARGETS, matryoshka: {}, ...extra });
  await assert.rejects(add({ rank_pattern: { c_fc: 2 } }), code('LK_UNSUPPORTED', 'rank_pattern'));
  await assert.rejects(add({ matryoshka: { inference_rank: 5 } }), code('LK_CONFIG_INVALID', 'inference_rank'));
  await assert.rejects(add({ target_modules: ['embed_tokens'] }), code('LK_UNSUPPORTED', 'embedding'));
  await assert.rejects(add({ dylora: {} }), code('LK_CONFIG_INVALID', 'both replace the forward'));
});
