// SLoRA against independent references: the toy model's logits and merged weights against a float64 host model with
// ΔW = s·B·N·A formed from the stored tensors (Linear and Conv1D, rsLoRA, rank_pattern); the official slora_init's
// distributions (Kaiming a = √5: A U(±1/√in), N U(±1/√r), B = 0); the official fork's folder layout (LORA,
// init_lora_weights "s_lora", lora_N.weight [r, r]); the count r·(in + out) + r²; the refusals.
// (Gradients, save/load, resume and the count against the tensors: test/peft/contract.test.ts.)
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { LorakitError } from '../../../src/errors.ts';
import { SafetensorsFile } from '../../../src/io/index.ts';
import { type AdaptableBase, loadAdapter, PeftModel, saveAdapter } from '../../../src/peft/index.ts';
import { assertAllclose } from '../../helpers.ts';
import { hostLogits, mm64 } from '../host.ts';
import { MODULES, perturbAdapter, toyBase, toyLogits, toyWeights } from '../toy.ts';

const TARGETS = ['q_proj', 'c_fc']; // Linear 6→5 and 5→6, GPT-2 Conv1D 6→4
const isLorakitError =
  (code: string, ...parts: string[]) =>
  (e: unknown) =>
    e instanceof LorakitError && e.code === code && parts.every((p) => e.message.includes(p));

async function sloraOn(config: Record<string, unknown>): Promise<PeftModel> {
  const peft = new PeftModel(toyBase());
  await peft.addAdapter('default', { init_lora_weights: 's_lora', target_modules: TARGETS, ...config }, { seed: 3 });
  return peft;
}

/** ΔW [out, in] = s·B·N·A in float64 from the stored tensors of one layer. */
function denseDelta(peft: PeftModel, path: string): Float64Array {
  const l = peft.get('default').layers.get(path)!;
  const [out, inn, r, s] = [l.info.outFeatures, l.info.inFeatures, l.settings.r, l.settings.scaling];
  const bn = mm64(l.values['lora_B.weight'], l.values['lora_N.weight'], out, r, r);
  return mm64(bn, l.values['lora_A.weight'], out, r, inn).map((v) => s * v);
}

for (const [what, config] of [
  ['r 3, alpha 6', { r: 3, lora_alpha: 6 }],
  ['rsLoRA with a rank_pattern', { r: 4, lora_alpha: 3, use_rslora: true, rank_pattern: { c_fc: 2 } }],
] as const) {
  test(`SLoRA (${what}): logits equal a float64 host model with W0 + s·B·N·A; merged weights equal W0 + ΔW`, async () => {
    const peft = await sloraOn(config);
    perturbAdapter(peft);
    const paths = [...peft.get('default').layers.keys()];
    assert.deepEqual(paths, ['model.layers.0.q_proj', 'model.layers.1.q_proj', 'model.layers.1.c_fc']);
    const deltas = new Map(paths.map((p) => [p, denseDelta(peft, p)]));
    const want = hostLogits(deltas);
    assert.ok(
      want.some((x, i) => Math.abs(x - hostLogits(new Map())[i]) > 0.05),
      'the adapter changes the logits',
    );
    assertAllclose(await toyLogits(peft), want, { atol: 1e-5, what: 'unmerged logits' });
    await peft.merge();
    const merged = peft.weightOverrides();
    for (const m of MODULES.filter((q) => deltas.has(q.path))) {
      if (m.kind === 'embedding') continue;
      const [W0, dW, out, inn] = [toyWeights().get(m.weightName)!, deltas.get(m.path)!, m.outFeatures, m.inFeatures];
      const expected = W0.map((w, i) => {
        const [j, k] = m.kind === 'conv1d' ? [i % out, Math.floor(i / out)] : [Math.floor(i / inn), i % inn];
        return w + dW[j * inn + k]; // Conv1D stores [in, out]: element i is (k, j)
      });
      assertAllclose(merged.get(m.weightName)!, expected, { atol: 1e-6, what: `merged ${m.weightName}` });
    }
    assertAllclose(await toyLogits(peft), want, { atol: 1e-5, what: 'merged logits' });
  });
}

test('SLoRA initialises as the official slora_init: A ~ U(±1/√in), N ~ U(±1/√r) (Kaiming a = √5), B = 0', async () => {
  const [inF, outF, r] = [96, 40, 24];
  const base: AdaptableBase = {
    modules: [{ kind: 'linear', path: 'proj', inFeatures: inF, outFeatures: outF, weightName: 'w', biasName: null }],
    outputHead: null,
    readWeight: async () => new Float32Array(inF * outF).fill(0.5),
  };
  const peft = new PeftModel(base);
  await peft.addAdapter('default', { r, init_lora_weights: 's_lora', target_modules: ['proj'] }, { seed: 9 });
  const v = peft.get('default').layers.get('proj')!.values;
  assert.ok(v['lora_B.weight'].every((x) => x === 0));
  for (const [name, fanIn, n] of [
    ['lora_A.weight', inF, r * inF],
    ['lora_N.weight', r, r * r],
  ] as const) {
    const x = v[name];
    assert.equal(x.length, n, name);
    const bound = 1 / Math.sqrt(fanIn);
    const variance = x.reduce((s, t) => s + t * t, 0) / x.length;
    assert.ok(
      x.every((t) => Math.abs(t) <= bound),
      `${name} within ±${bound}`,
    );
    assertAllclose([variance], [(bound * bound) / 3], { rtol: 0.12, atol: 0, what: `${name} variance` });
  }
  // another seed, other draws; the same seed, the same draws
  const again = new PeftModel(base);
  await again.addAdapter('default', { r, init_lora_weights: 's_lora', target_modules: ['proj'] }, { seed: 9 });
  assert.deepEqual(again.get('default').layers.get('proj')!.values['lora_N.weight'], v['lora_N.weight']);
});

test("a saved SLoRA folder has the official fork's layout: LORA, init_lora_weights s_lora, lora_N.weight [r, r]", async () => {
  const peft = await sloraOn({ r: 3 });
  perturbAdapter(peft);
  const dir = mkdtempSync(join(tmpdir(), 'lk-slora-'));
  await saveAdapter(peft, 'default', dir);
  const config = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
  assert.equal(config.peft_type, 'LORA');
  assert.equal(config.init_lora_weights, 's_lora');
  assert.ok(!('nlora_config' in config) && !('inttune' in config), 'no lorakit-only fields');
  const st = await SafetensorsFile.open(join(dir, 'adapter_model.safetensors'));
  const keys = Object.fromEntries(st.names().map((k) => [k, st.info(k).shape]));
  await st.close();
  const at = (p: string) => `base_model.model.${p}`;
  assert.deepEqual(keys, {
    [at('model.layers.0.q_proj.lora_A.weight')]: [3, 6],
    [at('model.layers.0.q_proj.lora_N.weight')]: [3, 3],
    [at('model.layers.0.q_proj.lora_B.weight')]: [5, 3],
    [at('model.layers.1.q_proj.lora_A.weight')]: [3, 5],
    [at('model.layers.1.q_proj.lora_N.weight')]: [3, 3],
    [at('model.layers.1.q_proj.lora_B.weight')]: [6, 3],
    [at('model.layers.1.c_fc.lora_A.weight')]: [3, 6],
    [at('model.layers.1.c_fc.lora_N.weight')]: [3, 3],
    [at('model.layers.1.c_fc.lora_B.weight')]: [4, 3],
  });
  const loaded = new PeftModel(toyBase());
  await loadAdapter(loaded, dir);
  assertAllclose(await toyLogits(loaded), await toyLogits(peft), { atol: 0, rtol: 0, what: 'reloaded' });
  const a = peft.get('default');
  const layers = [...a.layers.values()].map((l) => ({ layer: l.info, settings: l.settings }));
  assert.equal(a.method.trainableCount(a.config, layers), 3 * (6 + 5) + 3 * (5 + 6) + 3 * (6 + 4) + 3 * 9);
});

test('SLoRA refuses embeddings and Conv2d (the fork has no usable core there) and DoRA (both replace the forward)', async () => {
  await assert.rejects(
    sloraOn({ target_modules: ['embed_tokens'] }),
    isLorakitError('LK_UNSUPPORTED', 'embed_tokens', 'embedding'),
  );
  await assert.rejects(sloraOn({ use_dora: true }), isLorakitError('LK_CONFIG_INVALID', 'both replace the forward'));
  await assert.rejects(
    sloraOn({ init_lora_weights: 'z_lora' }),
    isLorakitError('LK_CONFIG_INVALID', '"s_lora"', '"n_lora"'),
  );
});
