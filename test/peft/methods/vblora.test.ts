// VB-LoRA against independent references: the toy model's logits and merged weights against a float64 host model whose
// A and B are mixed from the bank by a host top-k (sort, softmax) and laid out as PEFT lays them; the count formula
// and the init distributions; PEFT's save_only_topk_weights form (dtypes, round trip, the decoded logits); PEFT-made
// adapters (interop/make_shared_fixtures.py) against PEFT's logits, unmerged and merged, and lorakit-made ones
// loaded by PEFT 0.18.1 and 0.21.2 (interop/check_shared_adapters.py); the refusals.
// (Finite differences, save/load, resume: contract.test.ts.)
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { LorakitError } from '../../../src/errors.ts';
import { SafetensorsFile } from '../../../src/io/index.ts';
import { Rng } from '../../../src/linalg/index.ts';
import { loadAdapter, PeftModel, saveAdapter } from '../../../src/peft/index.ts';
import { makeCase } from '../../../scripts/make-shared-adapters.ts';
import { assertAllclose } from '../../helpers.ts';
import { checkAgainstHost, graphLogits } from '../toy-host.ts';
import { toyBase } from '../toy.ts';
import { lorakitCase, peftCase, regeneratesIdentically } from './shared-fixtures.ts';

const LOWEST = -3.4028234663852886e38; // float32's lowest finite value

async function vb(config: Record<string, unknown>, seed = 3): Promise<PeftModel> {
  const peft = new PeftModel(toyBase());
  await peft.addAdapter('default', { peft_type: 'VBLORA', ...config }, { seed });
  return peft;
}

/** Moves the bank and the logits off their init (the bank starts at ±0.02: ΔW would be tiny). */
function perturb(peft: PeftModel, seed = 9) {
  const a = peft.get('default');
  const rng = new Rng(seed);
  a.shared.values.vblora_vector_bank = a.shared.values.vblora_vector_bank.map(() => rng.normal());
  for (const l of a.layers.values())
    for (const s of l.specs) l.values[s.name] = l.values[s.name].map(() => rng.normal());
}

/** Per row of logits [n, h]: Σ over the k largest of softmax(those k)·bank row, in float64 → [n, b]. */
function mix(logits: Float32Array, bank: Float32Array, h: number, b: number, k: number): Float64Array {
  const n = logits.length / h;
  const out = new Float64Array(n * b);
  for (let i = 0; i < n; i++) {
    const row = Array.from(logits.subarray(i * h, (i + 1) * h));
    const top = row
      .map((v, j) => [v, j])
      .sort((p, q) => q[0] - p[0])
      .slice(0, k);
    const z = top.reduce((s, [v]) => s + Math.exp(v - top[0][0]), 0);
    for (const [v, j] of top)
      for (let t = 0; t < b; t++) out[i * b + t] += (Math.exp(v - top[0][0]) / z) * bank[j * b + t];
  }
  return out;
}

/** ΔW = B·A [out, in] in float64: A = mix(ℓ_A) as [r, in], B = mix(ℓ_B) [out/b, r, b] read as [out, r]. */
function denseDelta(peft: PeftModel, path: string): Float64Array {
  const a = peft.get('default');
  const l = a.layers.get(path)!;
  const { r, num_vectors: h, vector_length: b, topk: k } = a.config as Record<string, number>;
  const [out, inn] = [l.info.outFeatures, l.info.inFeatures];
  const bank = a.shared.values.vblora_vector_bank;
  const A = mix(l.values.vblora_logits_A, bank, h, b, k); // [r, in/b, b]
  const mb = mix(l.values.vblora_logits_B, bank, h, b, k); // [out/b, r, b]
  const B = (j: number, m: number) => mb[(Math.floor(j / b) * r + m) * b + (j % b)]; // B[j, m]
  const d = new Float64Array(out * inn);
  for (let j = 0; j < out; j++)
    for (let q = 0; q < inn; q++) for (let m = 0; m < r; m++) d[j * inn + q] += B(j, m) * A[m * inn + q];
  return d;
}

test('VB-LoRA logits and merged weights equal a float64 host model with ΔW = B·A mixed from the bank by top-k', async () => {
  const all = await vb({ r: 2, num_vectors: 6, vector_length: 1, topk: 2, target_modules: ['q_proj', 'c_fc'] });
  perturb(all);
  const paths = [...all.get('default').layers.keys()];
  await checkAgainstHost(all, new Map(paths.map((p) => [p, denseDelta(all, p)])));
  // vector_length 2 on the 6→4 Conv1D: sub-vectors span two entries, B's [out/b, r, b] → [out, r] layout matters
  const fc = await vb({ r: 3, num_vectors: 7, vector_length: 2, topk: 3, target_modules: ['c_fc'] });
  perturb(fc, 4);
  await checkAgainstHost(fc, new Map([['model.layers.1.c_fc', denseDelta(fc, 'model.layers.1.c_fc')]]));
});

test('VB-LoRA counts the bank once and h logits per sub-vector; it starts as PEFT: bank U(±bound), logits N(0, std²)', async () => {
  const peft = await vb({ r: 4, num_vectors: 300, vector_length: 2, target_modules: ['c_fc'] }); // 6→4
  const a = peft.get('default');
  const layers = [...a.layers.values()].map((l) => ({ layer: l.info, settings: l.settings }));
  assert.equal(a.method.trainableCount(a.config, layers), 300 * 2 + 300 * 4 * (6 / 2 + 4 / 2));
  const bank = a.shared.values.vblora_vector_bank;
  assert.ok(bank.every((v) => Math.abs(v) <= 0.02) && bank.some((v) => Math.abs(v) > 0.015));
  const logits = a.layers.get('model.layers.1.c_fc')!.values.vblora_logits_A;
  const std = Math.sqrt(logits.reduce((s, v) => s + v * v, 0) / logits.length);
  assert.ok(std > 0.09 && std < 0.11, `logits std ${std}`);
});

test('save_only_topk_weights writes top-k indices (uint8 / int16 by h) and k − 1 weights; reading them back keeps the outputs', async () => {
  for (const [h, dtype] of [
    [5, 'U8'],
    [300, 'I16'],
  ] as const) {
    const config = { r: 2, num_vectors: h, vector_length: 2, topk: 3, target_modules: ['c_fc'] };
    const peft = await vb({ ...config, save_only_topk_weights: true });
    perturb(peft);
    const dir = mkdtempSync(join(tmpdir(), 'lk-vblora-'));
    await saveAdapter(peft, 'default', dir);
    const st = await SafetensorsFile.open(join(dir, 'adapter_model.safetensors'));
    const keys = Object.fromEntries(st.names().map((k) => [k, [st.info(k).dtype, ...st.info(k).shape]]));
    await st.close();
    const at = 'base_model.model.model.layers.1.c_fc.';
    assert.deepEqual(keys, {
      'base_model.vblora_vector_bank': ['F32', h, 2],
      [`${at}vblora_logits_A_topk_indices`]: [dtype, 2, 3, 3],
      [`${at}vblora_logits_A_topk_weights`]: ['F32', 2, 3, 2],
      [`${at}vblora_logits_B_topk_indices`]: [dtype, 2, 2, 3],
      [`${at}vblora_logits_B_topk_weights`]: ['F32', 2, 2, 2],
    });
    const loaded = new PeftModel(toyBase());
    await loadAdapter(loaded, dir);
    assertAllclose(await graphLogits(loaded), await graphLogits(peft), { atol: 1e-6, what: `h ${h}: outputs` });
    // each row keeps its k logits as log(softmax weights) and the float32 minimum elsewhere
    const [before, after] = [peft, loaded].map((p) => p.get('default').layers.get('model.layers.1.c_fc')!.values);
    const row = (v: Float32Array) => Array.from(v.subarray(0, h));
    const kept = row(after.vblora_logits_A).filter((v) => v !== LOWEST);
    assert.equal(kept.length, 3);
    const top = row(before.vblora_logits_A)
      .sort((p, q) => q - p)
      .slice(0, 3);
    const lse = Math.log(top.reduce((s, v) => s + Math.exp(v - top[0]), 0)) + top[0];
    assertAllclose(
      kept.sort((p, q) => q - p),
      top.map((v) => v - lse),
      { atol: 1e-6, what: 'kept logits = log softmax' },
    );
  }
});

test("PEFT's VB-LoRA adapters: PEFT's logits unmerged and merged (llama), also from a top-k-only folder (GPT-2, int16)", async () => {
  await peftCase('llama_vblora');
  await peftCase('gpt2_vblora_topk', async (peft) => {
    const l = peft.get('default').layers.get('transformer.h.0.attn.c_attn')!.values.vblora_logits_B;
    const perRow = Array.from({ length: l.length / 300 }, (_, i) =>
      Array.from(l.subarray(i * 300, (i + 1) * 300)).filter((v) => v !== LOWEST),
    );
    assert.ok(perRow.every((r) => r.length === 3));
  });
});

for (const c of ['llama_vblora', 'llama_vblora_topk']) {
  for (const set of ['pinned', 'current'] as const) {
    test(`lorakit's VB-LoRA folder ${c} in PEFT (${set} set): loaded as written, PEFT's logits unmerged and merged`, () =>
      lorakitCase(c, set));
  }
}

test('lorakit writes its VB-LoRA fixture byte for byte as committed', () =>
  regeneratesIdentically('llama_vblora_topk', makeCase));

test('VB-LoRA refuses a vector_length that does not divide a layer, topk above num_vectors, trained biases', async () => {
  const code =
    (c: string, ...parts: string[]) =>
    (e: unknown) =>
      e instanceof LorakitError && e.code === c && parts.every((p) => e.message.includes(p));
  await assert.rejects(
    vb({ vector_length: 2, target_modules: ['q_proj'] }),
    code('LK_CONFIG_INVALID', 'model.layers.0.q_proj', 'vector_length = 2'),
  );
  await assert.rejects(
    vb({ num_vectors: 2, topk: 3, vector_length: 1, target_modules: ['c_fc'] }),
    code('LK_CONFIG_INVALID', 'topk'),
  );
  await assert.rejects(vb({ bias: 'all', vector_length: 1, target_modules: ['c_fc'] }), code('LK_UNSUPPORTED', 'bias'));
  await assert.rejects(vb({ vector_length: 1, target_modules: ['embed_tokens'] }), code('LK_UNSUPPORTED', 'embedding'));
});
