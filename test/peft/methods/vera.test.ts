// VeRA against independent references: the toy model's logits and merged weights against a float64 host
// re-implementation with ΔW = diag(λ_b)·B[:out]·diag(λ_d)·A[:, :in] formed explicitly from the stored tensors; the
// shared projections' sizes against PEFT's rule and their values against the ones PEFT drew with torch's generator (bit
// for bit); PEFT-made adapters (interop/make_vera_fixtures.py), also one saved without its projections, against
// PEFT's logits, unmerged and merged; PEFT's key names in saved folders; the refusals.
// (Gradients, save/load, resume and the trainable count against the tensors: test/peft/contract.test.ts.)
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { LorakitError } from '../../../src/errors.ts';
import { Graph } from '../../../src/graph/index.ts';
import { SafetensorsFile } from '../../../src/io/index.ts';
import { Rng } from '../../../src/linalg/index.ts';
import { loadModel } from '../../../src/models/index.ts';
import { adaptable, loadAdapter, PeftModel, saveAdapter } from '../../../src/peft/index.ts';
import { compile } from '../../../src/runtime/index.ts';
import { assertAllclose } from '../../helpers.ts';
import { logitsOf } from '../logits.ts';
import { hostLogits } from '../host.ts';
import { IDS, MODULES, toyBase, toyForward, toyWeights } from '../toy.ts';

const ROOT = new URL('../../../', import.meta.url).pathname;
const TARGETS = ['q_proj', 'c_fc']; // Linear 6→5 and 5→6 (both projections sliced), GPT-2 Conv1D 6→4
const isLorakitError =
  (code: string, ...parts: string[]) =>
  (e: unknown) =>
    e instanceof LorakitError && e.code === code && parts.every((p) => e.message.includes(p));

async function veraOn(config: Record<string, unknown>, seed = 3): Promise<PeftModel> {
  const peft = new PeftModel(toyBase());
  await peft.addAdapter('default', { peft_type: 'VERA', target_modules: TARGETS, ...config }, { seed });
  return peft;
}

async function graphLogits(peft: PeftModel): Promise<Float32Array> {
  const g = new Graph('vera-toy');
  const ids = g.input('ids', 'i64', [2, 4]);
  const w = toyWeights();
  for (const [k, v] of peft.weightOverrides()) w.set(k, v);
  g.output('logits', toyForward(g, ids, w, peft.hooks()).logits);
  return (await (await compile(g, { worker: false })).run({ ids: IDS })).logits.data as Float32Array;
}

/** ΔW [out, in] in float64, straight from the paper's formula and the stored tensors. */
function denseDelta(peft: PeftModel, path: string): Float64Array {
  const a = peft.get('default');
  const l = a.layers.get(path)!;
  const [out, inn, r] = [l.info.outFeatures, l.info.inFeatures, a.config.r as number];
  const { vera_A: A, vera_B: B } = a.shared.values;
  const inMax = A.length / r;
  const { vera_lambda_b: lb, vera_lambda_d: ld } = l.values;
  const d = new Float64Array(out * inn);
  for (let j = 0; j < out; j++)
    for (let k = 0; k < inn; k++) {
      let s = 0;
      for (let m = 0; m < r; m++) s += B[j * r + m] * ld[m] * A[m * inMax + k];
      d[j * inn + k] = lb[j] * s;
    }
  return d;
}

test('VeRA logits equal a float64 host model with W0 + diag(λ_b)·B·diag(λ_d)·A, and merged weights equal W0 + ΔW', async () => {
  const peft = await veraOn({ r: 4, init_weights: false });
  assertAllclose(await graphLogits(new PeftModel(toyBase())), hostLogits(new Map()), {
    atol: 1e-5,
    what: 'the host model reproduces the base toy model',
  });
  const rng = new Rng(5); // λ_b = 1 with init_weights false: give every output its own scale
  const values = new Map([...peft.trainableValues('default')].map(([k, v]) => [k, v.map((x) => x + rng.normal())]));
  peft.setValues('default', values);
  const paths = [...peft.get('default').layers.keys()];
  assert.deepEqual(paths, ['model.layers.0.q_proj', 'model.layers.1.q_proj', 'model.layers.1.c_fc']);
  const deltas = new Map(paths.map((p) => [p, denseDelta(peft, p)]));
  const want = hostLogits(deltas);
  const base = hostLogits(new Map());
  assert.ok(
    want.some((x, i) => Math.abs(x - base[i]) > 0.05),
    'the adapter changes the logits',
  );
  assertAllclose(await graphLogits(peft), want, { atol: 1e-5, what: 'unmerged logits' });
  await peft.merge();
  const merged = peft.weightOverrides();
  for (const m of MODULES.filter((q) => deltas.has(q.path))) {
    const [W0, dW] = [toyWeights().get(m.weightName)!, deltas.get(m.path)!];
    if (m.kind === 'embedding') continue;
    const [out, inn] = [m.outFeatures, m.inFeatures];
    const expected = W0.map((w, i) => {
      const [j, k] = m.kind === 'conv1d' ? [i % out, Math.floor(i / out)] : [Math.floor(i / inn), i % inn];
      return w + dW[j * inn + k]; // Conv1D stores [in, out]: element i is (k, j)
    });
    assertAllclose(merged.get(m.weightName)!, expected, { atol: 1e-6, what: `merged ${m.weightName}` });
  }
  assertAllclose(await graphLogits(peft), want, { atol: 1e-5, what: 'merged logits' });
});

test('the shared projections are [r, largest in] and [largest out, r] over the targeted layers, U(±√(6/fan_in))', async () => {
  const one = await veraOn({ target_modules: ['q_proj'], layers_to_transform: [1] }); // 5 → 6 only
  assert.deepEqual(
    one.get('default').shared.specs.map((s) => [s.name, s.shape]),
    [
      ['vera_A', [256, 5]],
      ['vera_B', [6, 256]],
    ],
  );
  const peft = await veraOn({ r: 256 }); // in 6, 5, 6 → 6; out 5, 6, 4 → 6
  const { vera_A: A, vera_B: B } = peft.get('default').shared.values;
  assert.deepEqual([A.length, B.length], [256 * 6, 6 * 256]);
  for (const [name, x, fanIn] of [
    ['vera_A', A, 6],
    ['vera_B', B, 256],
  ] as const) {
    const bound = Math.sqrt(6 / fanIn); // kaiming_uniform with gain √2 (PEFT's _kaiming_init), not LoRA's a = √5
    const mean = x.reduce((s, v) => s + v, 0) / x.length;
    const variance = x.reduce((s, v) => s + v * v, 0) / x.length;
    assert.ok(
      x.every((v) => Math.abs(v) <= bound),
      `${name} within ±${bound}`,
    );
    assert.ok(Math.abs(mean) < 0.1 * bound, `${name} mean ${mean}`);
    assertAllclose([variance], [(bound * bound) / 3], { rtol: 0.1, atol: 0, what: `${name} variance` });
  }
  // seeded by projection_prng_key alone, as in PEFT: another adapter seed gives the same projections, another key not
  const sameKey = (await veraOn({ r: 256 }, 99)).get('default').shared.values;
  assert.deepEqual(sameKey.vera_A, A);
  assert.deepEqual(sameKey.vera_B, B);
  const otherKey = (await veraOn({ r: 256, projection_prng_key: 1 })).get('default').shared.values;
  assert.ok(otherKey.vera_A.some((v, i) => v !== A[i]));
});

test('VeRA initialises λ_b = 0 and λ_d = d_initial (init_weights false: λ_b = 1, λ_d ~ N(0, 1) as in PEFT)', async () => {
  const layer = (p: PeftModel) => p.get('default').layers.get('model.layers.1.c_fc')!.values;
  const init = layer(await veraOn({ r: 64, d_initial: 0.25 }));
  assert.deepEqual([...init.vera_lambda_b], [0, 0, 0, 0]);
  assert.ok(init.vera_lambda_d.length === 64 && init.vera_lambda_d.every((v) => v === 0.25));
  const random = layer(await veraOn({ r: 64, init_weights: false }));
  assert.deepEqual([...random.vera_lambda_b], [1, 1, 1, 1]);
  const d = random.vera_lambda_d;
  const std = Math.sqrt(d.reduce((s, v) => s + v * v, 0) / d.length);
  assert.ok(std > 0.6 && std < 1.4, `λ_d std ${std}`);
  const count = (await veraOn({ r: 3 })).get('default');
  const layers = [...count.layers.values()].map((l) => ({ layer: l.info, settings: l.settings }));
  assert.equal(count.method.trainableCount(count.config, layers), 5 + 3 + (6 + 3) + (4 + 3)); // Σ (out + r)
});

test("a saved VeRA folder has PEFT's keys and shapes and a config PEFT's VeraConfig takes", async () => {
  const peft = await veraOn({ r: 4, projection_prng_key: 7 });
  const dir = mkdtempSync(join(tmpdir(), 'lk-vera-'));
  await saveAdapter(peft, 'default', dir);
  const st = await SafetensorsFile.open(join(dir, 'adapter_model.safetensors'));
  const keys = Object.fromEntries(st.names().map((k) => [k, st.info(k).shape]));
  await st.close();
  assert.deepEqual(keys, {
    'base_model.vera_A': [4, 6],
    'base_model.vera_B': [6, 4],
    'base_model.model.model.layers.0.q_proj.vera_lambda_b': [5],
    'base_model.model.model.layers.0.q_proj.vera_lambda_d': [4],
    'base_model.model.model.layers.1.q_proj.vera_lambda_b': [6],
    'base_model.model.model.layers.1.q_proj.vera_lambda_d': [4],
    'base_model.model.model.layers.1.c_fc.vera_lambda_b': [4],
    'base_model.model.model.layers.1.c_fc.vera_lambda_d': [4],
  });
  const config = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
  assert.equal(config.peft_type, 'VERA');
  assert.equal(config.save_projection, true);
  assert.equal(config.projection_prng_key, 7);
  assert.ok(!('exclude_modules' in config), 'VeraConfig has no exclude_modules field');
  // save_projection false: the projections stay out of the file and come back from the key
  const noproj = await veraOn({ r: 4, save_projection: false });
  const dir2 = mkdtempSync(join(tmpdir(), 'lk-vera-'));
  await saveAdapter(noproj, 'default', dir2);
  const st2 = await SafetensorsFile.open(join(dir2, 'adapter_model.safetensors'));
  assert.ok(st2.names().every((k) => k.includes('vera_lambda_')));
  await st2.close();
  const loaded = new PeftModel(toyBase());
  await loadAdapter(loaded, dir2);
  assert.deepEqual(loaded.get('default').shared.values, noproj.get('default').shared.values);
});

/** Loads PEFT's fixture `c` into the model it was made on, checks PEFT's logits unmerged and merged, then `more`. */
async function fixtureCase(c: string, more: (peft: PeftModel, expected: any) => Promise<void>) {
  const dir = join(ROOT, 'test/fixtures/vera', c);
  const expected = JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8'));
  const model = await loadModel(join(ROOT, expected.base_model));
  try {
    const peft = new PeftModel(adaptable(model));
    const { unused } = await loadAdapter(peft, dir);
    assert.deepEqual(unused, []);
    // the projections' shapes come from lorakit's own sizing (loadAdapter refuses a file whose shapes differ)
    const { vera_A, vera_B } = expected.projection_shapes;
    assert.deepEqual(
      peft.get('default').shared.specs.map((s) => s.shape),
      [vera_A, vera_B],
    );
    const st = await SafetensorsFile.open(join(dir, 'expected.safetensors'));
    const [want, wantMerged] = [await st.readAs('logits', 'f32'), await st.readAs('merged_logits', 'f32')];
    await st.close();
    const run = () => logitsOf(model, expected, { hooks: peft.hooks(), overrides: peft.weightOverrides() });
    assertAllclose(await run(), want, { atol: 1e-4, rtol: 0, what: `${c} logits` });
    await peft.merge();
    assertAllclose(await run(), wantMerged, { atol: 1e-4, rtol: 0, what: `${c} merged logits` });
    peft.unmerge();
    await more(peft, expected);
  } finally {
    await model.close();
  }
}

for (const c of ['llama_vera', 'gpt2_vera']) {
  test(`PEFT's VeRA adapter ${c}: PEFT's logits unmerged and merged (1e-4); PEFT's projections drawn bit for bit`, async () => {
    await fixtureCase(c, async (peft) => {
      // a new adapter with the folder's config draws from torch's stream what PEFT drew (and PEFT regenerates)
      const config = JSON.parse(readFileSync(join(ROOT, 'test/fixtures/vera', c, 'adapter_config.json'), 'utf8'));
      const fresh = new PeftModel(peft.base);
      await fresh.addAdapter('fresh', config, { seed: 12345 });
      const [drawn, saved] = [fresh.get('fresh').shared.values, peft.get('default').shared.values];
      assert.deepEqual(drawn.vera_A, saved.vera_A, 'vera_A');
      assert.deepEqual(drawn.vera_B, saved.vera_B, 'vera_B');
    });
  });
}

test("PEFT's VeRA adapter saved with save_projection=False: lorakit regenerates the projections, PEFT's logits", async () => {
  await fixtureCase('llama_vera_noproj', async (peft, expected) => {
    assert.ok(!('base_model.vera_A' in expected.adapter_tensors), 'the file has no projections');
    assert.equal(peft.get('default').config.save_projection, false);
  });
});

test('VeRA refuses what PEFT would not save or would ignore: trained biases, exclude_modules', async () => {
  await assert.rejects(veraOn({ bias: 'all' }), isLorakitError('LK_UNSUPPORTED', 'bias', 'vera_lambda_'));
  await assert.rejects(veraOn({ bias: 'vera_only' }), isLorakitError('LK_UNSUPPORTED', 'bias'));
  await assert.rejects(
    veraOn({ exclude_modules: ['c_fc'] }),
    isLorakitError('LK_UNSUPPORTED', 'exclude_modules', 'VERA config has no exclude_modules'),
  );
  await assert.rejects(
    veraOn({ layers_pattern: 'layers' }),
    isLorakitError('LK_CONFIG_INVALID', 'layers_to_transform'),
  );
  await assert.rejects(veraOn({ target_modules: ['embed_tokens'] }), isLorakitError('LK_UNSUPPORTED', 'embedding'));
});
