// NLoRA's Nyström initialisation against a float64 host reference: A, N, B are exactly W0's blocks of the [out, in]
// matrix (Linear, and GPT-2's Conv1D read transposed), and the model at init is the official code's W0 + s·B·W11·A —
// not the base — as a float64 host model shows; with nystrom_core "pinv" N is W11⁺ (N·W11 = I on an invertible
// block, in float64) and subtract_init leaves the model unchanged (W_res + s·B·N·A = W0); the trained folder reloads
// (re-running the init) and the converted folder is a plain rank-2r LoRA of the untouched base with the same logits;
// the refusals. (Gradients, save/load, resume, count: test/peft/contract.test.ts.)
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { LorakitError } from '../../../src/errors.ts';
import { SafetensorsFile } from '../../../src/io/index.ts';
import { loadAdapter, PeftModel, saveAdapter } from '../../../src/peft/index.ts';
import { assertAllclose } from '../../helpers.ts';
import { hostLogits, mm64, toyMatrix } from '../host.ts';
import { MODULES, perturbAdapter, toyBase, toyLogits } from '../toy.ts';

const TARGETS = ['q_proj', 'c_fc']; // Linear 6→5 and 5→6, GPT-2 Conv1D 6→4 (stored [6, 4])
const isLorakitError =
  (code: string, ...parts: string[]) =>
  (e: unknown) =>
    e instanceof LorakitError && e.code === code && parts.every((p) => e.message.includes(p));

async function nloraOn(config: Record<string, unknown>): Promise<PeftModel> {
  const peft = new PeftModel(toyBase());
  await peft.addAdapter('default', { init_lora_weights: 'n_lora', target_modules: TARGETS, ...config }, { seed: 3 });
  return peft;
}

/** The float64 blocks of a toy layer's [out, in] matrix: W[:r, :], W[:, :r], W[:r, :r]. */
function blocks(path: string, r: number) {
  const m = MODULES.find((q) => q.path === path)!;
  if (m.kind === 'embedding') throw new Error('not a linear layer');
  const [out, inn] = [m.outFeatures, m.inFeatures];
  const w = toyMatrix(path);
  const pick = (rows: number, cols: number) =>
    Float64Array.from({ length: rows * cols }, (_, i) => w[Math.floor(i / cols) * inn + (i % cols)]);
  return {
    w,
    out,
    inn,
    a: pick(r, inn),
    b: Float64Array.from({ length: out * r }, (_, i) => w[Math.floor(i / r) * inn + (i % r)]),
    w11: pick(r, r),
  };
}

test('n_lora takes A = W0[:r, :], B = W0[:, :r], N = W0[:r, :r] of the [out, in] matrix (Conv1D read transposed)', async () => {
  const peft = await nloraOn({ r: 3, lora_alpha: 3 });
  for (const [path, l] of peft.get('default').layers) {
    const ref = blocks(path, 3);
    assert.deepEqual([...l.values['lora_A.weight']], [...ref.a], `${path} A`);
    assert.deepEqual([...l.values['lora_B.weight']], [...ref.b], `${path} B`);
    assert.deepEqual([...l.values['lora_N.weight']], [...ref.w11], `${path} N`);
  }
  assert.equal(peft.get('default').bases.size, 0, 'the official init replaces no frozen weight');
});

test('the official NLoRA start is W0 + s·B·W11·A, not the base model (float64 host model)', async () => {
  const peft = await nloraOn({ r: 2, lora_alpha: 3 });
  const s = 3 / 2;
  const deltas = new Map(
    [...peft.get('default').layers.keys()].map((path) => {
      const { a, b, w11, out, inn } = blocks(path, 2);
      return [path, mm64(mm64(b, w11, out, 2, 2), a, out, 2, inn).map((v) => s * v)] as const;
    }),
  );
  const want = hostLogits(deltas);
  const base = hostLogits(new Map());
  assert.ok(
    want.some((v, i) => Math.abs(v - base[i]) > 0.05),
    'the start differs from the base model',
  );
  assertAllclose(await toyLogits(peft), want, { atol: 1e-5, what: 'logits at init' });
});

test('nystrom_core "pinv": N = W11⁺ and subtract_init leaves the model unchanged (W_res + s·B·N·A = W0)', async () => {
  const peft = await nloraOn({ r: 2, lora_alpha: 4, nlora_config: { nystrom_core: 'pinv' } });
  const a = peft.get('default');
  for (const [path, l] of a.layers) {
    const { w11, out, inn, w } = blocks(path, 2);
    const n = l.values['lora_N.weight'];
    assertAllclose(mm64(n, w11, 2, 2, 2), [1, 0, 0, 1], { atol: 1e-5, what: `${path} N·W11 = I` });
    // the residual: W_res (stored layout) back to [out, in], plus s·B·N·A in float64, is W0
    const m = MODULES.find((q) => q.path === path)!;
    const stored = a.bases.get(m.weightName)!;
    const res = Float64Array.from({ length: out * inn }, (_, i) => {
      const [j, k] = [Math.floor(i / inn), i % inn];
      return m.kind === 'conv1d' ? stored[k * out + j] : stored[j * inn + k];
    });
    const bna = mm64(mm64(l.values['lora_B.weight'], n, out, 2, 2), l.values['lora_A.weight'], out, 2, inn);
    assertAllclose(
      res.map((v, i) => v + 2 * bna[i]),
      w,
      { atol: 1e-5, what: `${path} W_res + s·B·N·A` },
    );
  }
  assertAllclose(await toyLogits(peft), await toyLogits(null), { atol: 1e-5, what: 'the model at init' });
});

test('subtract_init with the raw core starts at the base too; a trained folder reloads, the converted one is plain LoRA', async () => {
  const peft = await nloraOn({ r: 2, lora_alpha: 3, nlora_config: { subtract_init: true } });
  assertAllclose(await toyLogits(peft), await toyLogits(null), { atol: 1e-5, what: 'the model at init' });
  perturbAdapter(peft, 'default', 5, 0.2);
  const trained = await toyLogits(peft);
  // as trained: init_lora_weights "n_lora" and nlora_config kept; loading re-runs the init, which rebuilds W_res
  const dir = mkdtempSync(join(tmpdir(), 'lk-nlora-'));
  await saveAdapter(peft, 'default', dir);
  const config = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
  assert.deepEqual(
    [config.init_lora_weights, config.nlora_config],
    ['n_lora', { nystrom_core: 'raw', subtract_init: true }],
  );
  const reloaded = new PeftModel(toyBase());
  await loadAdapter(reloaded, dir);
  assertAllclose(await toyLogits(reloaded), trained, { atol: 0, rtol: 0, what: 'reloaded as trained' });
  // converted: s·[B·N | −B0·N0]·[A; A0], a rank-4 LoRA (alpha doubled) of the untouched base, without lora_N
  const conv = mkdtempSync(join(tmpdir(), 'lk-nlora-'));
  await saveAdapter(peft, 'default', conv, { convertToBase: true });
  const cc = JSON.parse(readFileSync(join(conv, 'adapter_config.json'), 'utf8'));
  assert.deepEqual([cc.r, cc.lora_alpha, cc.init_lora_weights, 'nlora_config' in cc], [4, 6, true, false]);
  const st = await SafetensorsFile.open(join(conv, 'adapter_model.safetensors'));
  assert.ok(!st.names().some((k) => k.includes('lora_N')), 'no core in the plain LoRA');
  await st.close();
  const plain = new PeftModel(toyBase());
  await loadAdapter(plain, conv);
  assert.equal(plain.get('default').method.name, 'lora');
  assertAllclose(await toyLogits(plain), trained, { atol: 2e-5, rtol: 2e-5, what: 'converted on the untouched base' });
});

test('n_lora refuses r above min(out, in), pinv without subtraction, and names the field', async () => {
  await assert.rejects(nloraOn({ r: 5 }), isLorakitError('LK_CONFIG_INVALID', 'model.layers.1.c_fc', 'min(out, in)'));
  await assert.rejects(
    nloraOn({ nlora_config: { nystrom_core: 'pinv', subtract_init: false } }),
    isLorakitError('LK_CONFIG_INVALID', 'nlora_config.nystrom_core', 'subtract_init'),
  );
  await assert.rejects(
    nloraOn({ nlora_config: { core: 'pinv' } }),
    isLorakitError('LK_CONFIG_INVALID', 'nlora_config'),
  );
  // rank_pattern gives the small layer a rank its blocks have
  const ok = await nloraOn({ r: 5, rank_pattern: { c_fc: 4 } });
  assert.equal(ok.get('default').layers.get('model.layers.1.c_fc')!.values['lora_N.weight'].length, 16);
});
