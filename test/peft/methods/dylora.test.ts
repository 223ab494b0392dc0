// DyLoRA on the toy model: the graph fed rank b equals a plain rank-b LoRA built from the first b rows/columns
// (saveTruncated, loaded back as LoRA); the sampled ranks are reproducible and uniform over min_rank..r; frozen mode
// gives exactly zero gradient to the components below b and the finite-difference gradient to component b;
// evaluation and merges use inference_rank. (Exact resume of the sampled ranks: test/peft/contract.test.ts.)
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { LorakitError } from '../../../src/errors.ts';
import { Graph, grad } from '../../../src/graph/index.ts';
import { Rng } from '../../../src/linalg/index.ts';
import { loadAdapter, PeftModel, saveAdapter, saveTruncated, stepKey } from '../../../src/peft/index.ts';
import { compile } from '../../../src/runtime/index.ts';
import { assertAllclose, centralDifferences } from '../../helpers.ts';
import { IDS, LABELS, toyBase, toyForward, toyLoss, toyWeights } from '../toy.ts';

const TARGETS = ['embed_tokens', 'q_proj', 'c_fc'];
const rankKey = stepKey('default', { name: 'dylora_rank', layer: null });
const frozenKey = stepKey('default', { name: 'dylora_frozen', layer: null });
const i64 = (v: number) => BigInt64Array.of(BigInt(v));

/** A DyLoRA adapter on the toy model with seeded noise on every factor (B = 0 at init otherwise). */
async function trained(dylora: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  const peft = new PeftModel(toyBase());
  await peft.addAdapter('default', { r: 4, lora_alpha: 6, target_modules: TARGETS, dylora, ...extra }, { seed: 3 });
  const r = new Rng(11);
  const noisy = [...peft.trainableValues('default')].map(([k, v]) => [k, v.map((x) => x + 0.3 * r.normal())] as const);
  peft.setValues('default', new Map(noisy));
  return peft;
}

/** Logits [2, 4, V] with the adapter's inference values (null: feed rank b as in a training graph). */
async function logits(peft: PeftModel, b: number | null = null): Promise<Float32Array> {
  const g = new Graph('dylora-logits');
  const ids = g.input('ids', 'i64', [2, 4]);
  const hooks = b === null ? peft.hooks() : peft.bind({ train: 'default', feedStepInputs: true }).hooks;
  const w = toyWeights();
  for (const [k, v] of peft.weightOverrides(b === null ? undefined : 'default')) w.set(k, v);
  g.output('logits', toyForward(g, ids, w, hooks).logits);
  const feeds =
    b === null
      ? {}
      : { ...Object.fromEntries(peft.trainableValues('default')), [rankKey]: i64(b), [frozenKey]: i64(1) };
  const s = await compile(g, { worker: false });
  return (await s.run({ ids: IDS, ...feeds })).logits.data as Float32Array;
}

/** Logits of the plain rank-b LoRA folder that saveTruncated writes, loaded back into a fresh model. */
async function truncatedLogits(peft: PeftModel, b: number) {
  const dir = mkdtempSync(join(tmpdir(), 'lk-dylora-'));
  await saveTruncated(peft, 'default', dir, b);
  const config = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
  const loaded = new PeftModel(toyBase());
  await loadAdapter(loaded, dir);
  return { logits: await logits(loaded), config, method: loaded.get('default').method.name };
}

test('the graph fed rank b equals the plain LoRA of rank b made of the first b components (s = alpha/b)', async () => {
  const peft = await trained({});
  const seen: Float32Array[] = [];
  for (let b = 1; b <= 4; b++) {
    const fed = await logits(peft, b);
    const t = await truncatedLogits(peft, b);
    assert.equal(t.method, 'lora');
    assert.equal(t.config.r, b);
    assert.equal(t.config.lora_alpha, 6);
    assert.equal(t.config.dylora, undefined);
    assertAllclose(fed, t.logits, { atol: 2e-6, rtol: 2e-6, what: `rank ${b}` });
    for (const prev of seen)
      assert.ok(
        fed.some((v, i) => Math.abs(v - prev[i]) > 1e-3),
        'ranks differ',
      );
    seen.push(fed);
  }
  // the full-rank model is the adapter as saved: a plain LoRA with r and lora_alpha, which PEFT loads
  const dir = mkdtempSync(join(tmpdir(), 'lk-dylora-'));
  await saveAdapter(peft, 'default', dir);
  const saved = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
  assert.equal(saved.dylora, undefined);
  const loaded = new PeftModel(toyBase());
  await loadAdapter(loaded, dir);
  assertAllclose(await logits(loaded), seen[3], { atol: 2e-6, rtol: 2e-6, what: 'saved rank-r adapter' });
});

test('with use_rslora the rank-b model scales by alpha/sqrt(b), as the truncated rsLoRA folder does', async () => {
  const peft = await trained({}, { use_rslora: true });
  assertAllclose(await logits(peft, 2), (await truncatedLogits(peft, 2)).logits, { atol: 2e-6, rtol: 2e-6 });
});

test('sampled ranks come from the run generator: reproducible, uniform over min_rank..r', async () => {
  const peft = await trained({ min_rank: 2 });
  const draw = (seed: number) => {
    const rng = new Rng(seed);
    return Array.from({ length: 400 }, (_, i) => {
      const v = peft.stepInputValues('default', { step: i + 1, rng, params: new Map() });
      assert.equal(v[frozenKey][0], 1n);
      return Number(v[rankKey][0]);
    });
  };
  const ranks = draw(5);
  assert.deepEqual(draw(5), ranks);
  assert.notDeepEqual(draw(6), ranks);
  const counts = [0, 0, 0, 0, 0];
  for (const b of ranks) counts[b]++;
  assert.equal(counts[0] + counts[1], 0, 'no rank below min_rank');
  for (const b of [2, 3, 4]) assert.ok(counts[b] > 100 && counts[b] < 170, `rank ${b} drawn ${counts[b]} of 400`);
});

/** Gradients of the toy loss (float64) at rank b and their central differences, per trainable tensor. */
async function gradients(peft: PeftModel, b: number, frozen: 0 | 1) {
  const g = new Graph('dylora-grad');
  const { loss, binding } = toyLoss(g, peft, 'default', { training: true, dtype: 'f64', paramDtype: 'f64' });
  const handles = binding.trainables();
  grad(
    loss,
    handles.map((h) => h.tensor),
  ).forEach((d, i) => g.output(`d${i}`, d));
  g.output('loss', loss);
  const s = await compile(g, { worker: false, optimization: 'disabled' });
  const values = new Map(
    handles.map((h) => [h.tensor.name, Float64Array.from(peft.trainableValues('default').get(h.tensor.name)!)]),
  );
  const feeds = () => ({
    ids: IDS,
    labels: LABELS,
    dropout_seed: new Float32Array([0]),
    [rankKey]: i64(b),
    [frozenKey]: i64(frozen),
    ...Object.fromEntries(values),
  });
  const out = await s.run(feeds());
  const h = 1e-6;
  const result = [];
  for (const [i, handle] of handles.entries()) {
    const v = values.get(handle.tensor.name)!;
    const numeric = await centralDifferences(v, h, async () => (await s.run(feeds(), ['loss'])).loss.data[0] as number);
    const cols = handle.tensor.shape[1] as number;
    // component k of A is row k of [r, in]; of B column k of [out, r]
    const component = (e: number) => (handle.role === 'a' ? Math.floor(e / cols) : e % cols);
    result.push({ handle, analytic: out[`d${i}`].data as Float64Array, numeric, component });
  }
  return result;
}

test('frozen mode: components below b get exactly zero gradient, component b the finite-difference one', async () => {
  const peft = await trained({ min_rank: 2, frozen: true });
  for (const [b, frozen] of [
    [4, 1],
    [3, 1],
    [2, 1],
    [3, 0],
  ] as const) {
    for (const t of await gradients(peft, b, frozen)) {
      const what = `b = ${b}, frozen ${frozen}: d/d ${t.handle.tensor.name}`;
      for (let e = 0; e < t.numeric.length; e++) {
        const k = t.component(e);
        // detached: below b, except that at b = min_rank the first min_rank components train together
        const detached = frozen === 1 && b > 2 && k < b - 1;
        if (detached) {
          assert.equal(t.analytic[e], 0, `${what} [${e}] (component ${k + 1}) is detached`);
        } else {
          const [a, n] = [t.analytic[e], t.numeric[e]];
          assert.ok(Math.abs(a - n) <= 1e-6 + 1e-6 * Math.abs(n), `${what} [${e}]: ${a} vs finite differences ${n}`);
        }
      }
      // the detached components do change the loss: their zero gradient is the rule, not an accident
      if (frozen === 1 && b > 2) assert.ok(t.numeric.some((n, e) => t.component(e) < b - 1 && Math.abs(n) > 1e-4));
    }
  }
});

test('evaluation and merges use inference_rank', async () => {
  const peft = await trained({ inference_rank: 2 });
  const atTwo = await logits(peft, 2);
  const inferred = await logits(peft);
  assertAllclose(inferred, atTwo, { atol: 0, rtol: 0, what: 'inference graph vs fed rank 2' });
  assert.ok(
    (await logits(peft, 4)).some((v, i) => Math.abs(v - inferred[i]) > 1e-3),
    'rank 4 differs',
  );
  await peft.merge();
  assertAllclose(await logits(peft), inferred, { atol: 2e-5, rtol: 2e-5, what: 'merged at inference_rank' });
  peft.unmerge();
  assertAllclose(await logits(peft), (await truncatedLogits(peft, 2)).logits, { atol: 2e-6, rtol: 2e-6 });
});

test('config errors name the field; DyLoRA and DoRA both replace the forward; truncation checks its rank', async () => {
  const add = (cfg: Record<string, unknown>) =>
    new PeftModel(toyBase()).addAdapter('x', { r: 4, target_modules: ['q_proj'], ...cfg });
  const code = (c: string, text: string) => (e: unknown) =>
    e instanceof LorakitError && e.code === c && e.message.includes(text);
  await assert.rejects(add({ dylora: { min_rank: 5 } }), code('LK_CONFIG_INVALID', 'dylora.min_rank'));
  await assert.rejects(add({ dylora: { inference_rank: 6 } }), code('LK_CONFIG_INVALID', 'dylora.inference_rank'));
  await assert.rejects(add({ dylora: { rank: 2 } }), code('LK_CONFIG_INVALID', 'rank'));
  await assert.rejects(add({ dylora: {}, rank_pattern: { q_proj: 2 } }), code('LK_UNSUPPORTED', 'rank_pattern'));
  await assert.rejects(add({ dylora: {}, use_dora: true }), code('LK_CONFIG_INVALID', 'both replace the forward'));
  const peft = await trained({});
  const dir = mkdtempSync(join(tmpdir(), 'lk-dylora-'));
  await assert.rejects(saveTruncated(peft, 'default', dir, 5), code('LK_INVALID_ARGUMENT', '1..4'));
  await assert.rejects(saveTruncated(peft, 'default', dir, 0), code('LK_INVALID_ARGUMENT', '1..4'));
  const dora = new PeftModel(toyBase());
  await dora.addAdapter('default', { r: 2, use_dora: true, target_modules: ['q_proj'] });
  await assert.rejects(saveTruncated(dora, 'default', dir, 1), code('LK_UNSUPPORTED', 'lora+dora'));
  assert.deepEqual(peft.activeAdapters, ['default']);
});
