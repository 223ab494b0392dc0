// Mask the Target: the term against a dense float64 host formula on random logits (both KL directions, a dominant
// target logit included), its gradient against finite differences of that formula, ∂R/∂z[y] = 0 exactly, R = 0
// for LoRA at init on the toy model, and a causal-LM training run that reports the term as a metric.
// (Finite differences through the toy model, save/load and resume: test/peft/contract.test.ts.)
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { LorakitError } from '../../../src/errors.ts';
import { Graph, grad, type Tensor } from '../../../src/graph/index.ts';
import { HfTokenizer } from '../../../src/io/index.ts';
import { Rng } from '../../../src/linalg/index.ts';
import { loadModel } from '../../../src/models/index.ts';
import { adaptable, type MaskTargetConfig, maskTarget, PeftModel, saveAdapter } from '../../../src/peft/index.ts';
import { compile } from '../../../src/runtime/index.ts';
import { loadDataset } from '../../../src/train/data/index.ts';
import { causalLmTask, train } from '../../../src/train/index.ts';
import { assertAllclose, needsShared } from '../../helpers.ts';
import { IDS, toyBase, toyForward, toyWeights, V as TOY_V } from '../toy.ts';

const N = 6,
  V = 7;

/** λ·mean over counted n of KL between the target-masked, renormalised softmaxes, in float64 on the host. */
function hostTerm(z: Float64Array, z0: Float64Array, y: number[], lambda: number, direction: 'fwd' | 'rev'): number {
  const masked = (row: Float64Array, t: number) => {
    let m = -Infinity;
    for (let v = 0; v < V; v++) if (v !== t) m = Math.max(m, row[v]);
    let s = 0;
    for (let v = 0; v < V; v++) if (v !== t) s += Math.exp(row[v] - m);
    return Array.from(row, (x, v) => (v === t ? 0 : Math.exp(x - m) / s)); // q̃(v) = p(v)/(1 − p(y))
  };
  let sum = 0,
    count = 0;
  for (let n = 0; n < N; n++) {
    if (y[n] === -100) continue;
    const q0 = masked(z0.subarray(n * V, (n + 1) * V), y[n]);
    const qt = masked(z.subarray(n * V, (n + 1) * V), y[n]);
    const [p, q] = direction === 'fwd' ? [q0, qt] : [qt, q0];
    for (let v = 0; v < V; v++) if (v !== y[n]) sum += p[v] * Math.log(p[v] / q[v]);
    count++;
  }
  return (lambda * sum) / Math.max(count, 1);
}

/** The variant's loss term on graph inputs z, z0 [N, V] (f64) and y [N], with its gradient with respect to z. */
async function termGraph(config: MaskTargetConfig) {
  const g = new Graph('mask-target');
  const z = g.input('z', 'f64', [N, V]);
  const z0 = g.input('z0', 'f64', [N, V]);
  const y = g.input('y', 'i64', [N]);
  const counted = y.equal(y.lift(-100)).not();
  const [term] = maskTarget.lossTerms!(config);
  const r = term.build({ config, logits: z, targets: y, counted, frozenLogits: () => z0 });
  g.output('r', r);
  g.output('dz', grad(r, [z])[0]);
  const s = await compile(g, { worker: false, optimization: 'disabled' });
  return (feeds: { z: Float64Array; z0: Float64Array; y: number[] }) =>
    s.run({ z: feeds.z, z0: feeds.z0, y: BigInt64Array.from(feeds.y.map(BigInt)) });
}

function randomLogits(seed: number) {
  const r = new Rng(seed);
  const z0 = Float64Array.from({ length: N * V }, () => 2 * r.normal());
  const z = Float64Array.from(z0, (x) => x + 0.7 * r.normal());
  const y = [3, 0, -100, 6, 2, 3];
  z[4 * V + 2] = 50; // a target with p(y) ≈ 1: its renormalised rest must stay finite and exact
  z0[4 * V + 2] = 40;
  return { z, z0, y };
}

for (const direction of ['fwd', 'rev'] as const) {
  test(`${direction}: the term equals the host float64 formula, its gradient finite differences, ∂R/∂z[y] = 0`, async () => {
    const lambda = 0.45;
    const run = await termGraph({ mask_target: { lambda, direction } });
    const data = randomLogits(direction === 'fwd' ? 1 : 2);
    const out = await run(data);
    const expected = hostTerm(data.z, data.z0, data.y, lambda, direction);
    assert.ok(expected > 1e-3, `the random logits give a non-trivial term (${expected})`);
    assertAllclose(out.r.data as Float64Array, [expected], { rtol: 1e-12, atol: 0, what: 'R' });
    const dz = out.dz.data as Float64Array;
    const h = 1e-6;
    const numeric = Float64Array.from(data.z, (z0, k) => {
      const zp = Float64Array.from(data.z);
      zp[k] = z0 + h;
      const zm = Float64Array.from(data.z);
      zm[k] = z0 - h;
      return (
        (hostTerm(zp, data.z0, data.y, lambda, direction) - hostTerm(zm, data.z0, data.y, lambda, direction)) / 2 / h
      );
    });
    assertAllclose(dz, numeric, { rtol: 1e-6, atol: 1e-9, what: 'dR/dz' });
    for (let n = 0; n < N; n++) {
      if (data.y[n] >= 0) assert.equal(dz[n * V + data.y[n]], 0, `dR/dz[${n}, y] is exactly 0`);
      else
        assert.ok(
          dz.subarray(n * V, (n + 1) * V).every((d) => d === 0),
          'a position that does not count',
        );
    }
  });
}

test('the term with equal logits is exactly 0; lambda scales it', async () => {
  const data = randomLogits(3);
  const same = { ...data, z: Float64Array.from(data.z0) };
  assert.equal((await (await termGraph({ mask_target: { lambda: 1, direction: 'fwd' } }))(same)).r.data[0], 0);
  const one = (await (await termGraph({ mask_target: { lambda: 1, direction: 'rev' } }))(data)).r.data[0] as number;
  const tenth = (await (await termGraph({ mask_target: { lambda: 0.1, direction: 'rev' } }))(data)).r.data[0];
  assert.ok(Math.abs((tenth as number) - 0.1 * one) <= 1e-15 * one);
});

/** The mask_target term of the toy model (LoRA adapter, float64) and the adapted logits. */
async function toyTerm(peft: PeftModel) {
  const g = new Graph('toy-term');
  const ids = g.input('ids', 'i64', [2, 4]);
  const labels = BigInt64Array.from([3, 1, 4, 1, 5, 9, 2, -100].map(BigInt));
  const targets = g.constant(labels, 'i64', [8]);
  const binding = peft.bind();
  const flat = (t: Tensor) => t.reshape([8, TOY_V]);
  const logits = flat(toyForward(g, ids, toyWeights(), binding.hooks, { dtype: 'f64' }).logits);
  const frozenLogits = () =>
    flat(toyForward(g, ids, toyWeights(), {}, { dtype: 'f64', namePrefix: 'frozen/' }).logits).detach();
  const [term] = peft.bind({ train: 'default' }).lossTerms();
  const counted = targets.equal(targets.lift(-100)).not();
  g.output('r', term.build({ logits, targets, counted, frozenLogits }));
  return (await (await compile(g, { worker: false })).run({ ids: IDS })).r.data[0] as number;
}

test('R = 0 for LoRA at init (B = 0) on the toy model, R > 0 once the adapter changes it', async () => {
  const peft = new PeftModel(toyBase());
  const config = { r: 2, target_modules: ['q_proj', 'c_fc'], mask_target: {} };
  await peft.addAdapter('default', config, { seed: 4 });
  assert.deepEqual(peft.get('default').config.mask_target, { lambda: 0.3, direction: 'fwd' });
  assert.equal(await toyTerm(peft), 0);
  const r = new Rng(9);
  peft.setValues(
    'default',
    new Map([...peft.trainableValues('default')].map(([k, v]) => [k, v.map((x) => x + 0.3 * r.normal())])),
  );
  assert.ok((await toyTerm(peft)) > 1e-4);
  // training-only: the saved folder is the plain LoRA PEFT loads
  const dir = mkdtempSync(join(tmpdir(), 'lk-mask-'));
  await saveAdapter(peft, 'default', dir);
  assert.equal(JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8')).mask_target, undefined);
});

test('config errors name the field', async () => {
  for (const bad of [{ direction: 'both' }, { lambda: -1 }, { weight: 1 }]) {
    await assert.rejects(
      new PeftModel(toyBase()).addAdapter('x', { target_modules: ['q_proj'], mask_target: bad }),
      (e: unknown) => e instanceof LorakitError && e.code === 'LK_CONFIG_INVALID' && e.message.includes('mask_target'),
    );
  }
});

test('a causal-LM training run reports the term as a metric: 0 at LoRA init, then positive', {
  skip: needsShared('tinyshakespeare/input.txt'),
}, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lk-mask-'));
  const shared = new URL('../../../../shared/data/', import.meta.url).pathname;
  writeFileSync(join(dir, 't.txt'), readFileSync(join(shared, 'tinyshakespeare/input.txt'), 'utf8').slice(0, 3000));
  const modelDir = new URL('../../fixtures/models/llama', import.meta.url).pathname;
  const model = await loadModel(modelDir);
  const tokenizer = await HfTokenizer.fromDir(modelDir);
  const data = await loadDataset(join(dir, 't.txt'), { tokenizer, seqLen: 16, heldOut: 0.1, cacheDir: false });
  const peft = new PeftModel(adaptable(model));
  await peft.addAdapter('default', {
    target_modules: ['q_proj', 'v_proj'],
    r: 4,
    lora_alpha: 8,
    mask_target: { lambda: 0.5, direction: 'rev' },
  });
  const task = causalLmTask({ model, peft, adapter: 'default', train: data.train, batchSize: 2 });
  const result = await train(task, { outputDir: join(dir, 'run'), steps: 4, lr: 2e-2, progress: 'none', plot: false });
  for (const rec of result.history) {
    const m = rec as unknown as Record<string, number>;
    assert.ok(Number.isFinite(m.mask_target) && Number.isFinite(m.ce), `step ${rec.step} reports ce and mask_target`);
    assert.ok(Math.abs(rec.loss - (m.ce + m.mask_target)) <= 1e-5 * rec.loss, 'loss = ce + λ·R');
  }
  const terms = result.history.map((h) => (h as unknown as Record<string, number>).mask_target);
  assert.equal(terms[0], 0, 'the adapter starts as the frozen model');
  assert.ok(terms.at(-1)! > 0, `the term grows once the adapter trains (${terms})`);
  await model.close();
});
