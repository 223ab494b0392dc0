// Uni-LoRA against independent references: PEFT's index assignment (values printed by PEFT 0.21.2's generate_index)
// and the maps and norm factors PEFT built for a fixture model, bit for bit; the projection's isometry (PᵀP = I) and
// balance; the toy model's logits and merged weights against a float64 host model with A = θ[idx_A]·s_A,
// B = θ[idx_B]·s_B, ΔW = B·A; the count (d) and init; save_indices (PEFT's int64 keys, round trip, a bad index
// refused); PEFT-made adapters (interop/make_shared_fixtures.py, current set) and lorakit-made ones in PEFT 0.21.2.
// How Uni-LoRA's projection expresses VeRA, Tied-LoRA and VB-LoRA: unilora-unification.test.ts.
// (Finite differences through the Gather, save/load, resume: contract.test.ts.)
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { LorakitError } from '../../../src/errors.ts';
import { SafetensorsFile, writeSafetensors } from '../../../src/io/index.ts';
import { Rng } from '../../../src/linalg/index.ts';
import { generateIndex, loadAdapter, PeftModel, saveAdapter } from '../../../src/peft/index.ts';
import { makeCase } from '../../../scripts/make-shared-adapters.ts';
import { assertAllclose } from '../../helpers.ts';
import { checkAgainstHost, graphLogits } from '../toy-host.ts';
import { toyBase } from '../toy.ts';
import { lorakitCase, PEFT_DIR, peftCase, readTensors, regeneratesIdentically } from './shared-fixtures.ts';

const TARGETS = ['q_proj', 'c_fc']; // D = r·(6+5) + r·(5+6) + r·(6+4) = 32·r entries
const PATHS = ['model.layers.0.q_proj', 'model.layers.1.q_proj', 'model.layers.1.c_fc'];

async function uni(config: Record<string, unknown>, seed = 3): Promise<PeftModel> {
  const peft = new PeftModel(toyBase());
  await peft.addAdapter('default', { peft_type: 'UNILORA', target_modules: TARGETS, ...config }, { seed });
  return peft;
}

/** Every position's θ index and norm factor, layer by layer, A then B (θ_D's order). */
function flatMaps(peft: PeftModel): { idx: number[]; scale: number[] } {
  const idx: number[] = [];
  const scale: number[] = [];
  for (const l of peft.get('default').layers.values()) {
    idx.push(...l.values.unilora_indices_A, ...l.values.unilora_indices_B);
    scale.push(...l.values.unilora_scales_A, ...l.values.unilora_scales_B);
  }
  return { idx, scale };
}

test("generate_index equals PEFT's: balanced counts, extras without replacement, shuffled by numpy's default_rng", () => {
  // PEFT 0.21.2: UniLoraModel.generate_index(D, d, seed)[:10] and Σ position·index
  const cases: [number, number, number, number[], number][] = [
    [100, 7, 42, [0, 2, 5, 3, 4, 1, 3, 1, 5, 2], 14831],
    [10, 16, 1, [3, 6, 0, 9, 15, 14, 13, 1, 4, 10], 370],
    [3000, 256, 42, [72, 178, 22, 149, 225, 90, 115, 119, 161, 6], 571989915],
    [64, 8, 5, [4, 7, 1, 3, 3, 5, 1, 6, 3, 4], 6939],
  ];
  for (const [D, d, seed, head, weighted] of cases) {
    const idx = generateIndex(D, d, seed);
    assert.deepEqual([...idx.subarray(0, 10)], head, `generate_index(${D}, ${d}, ${seed})`);
    assert.equal(
      idx.reduce((s, v, i) => s + v * i, 0),
      weighted,
    );
  }
});

test("PEFT's maps rebuilt from proj_seed: lorakit's index maps and norm factors equal PEFT's bit for bit", async () => {
  await peftCase('llama_unilora', async (peft) => {
    const file = join(PEFT_DIR, 'llama_unilora', 'expected.safetensors');
    const st = await SafetensorsFile.open(file);
    const indices = Array.from(await st.readAs('indices', 'i64'), Number); // int64, as PEFT holds them
    await st.close();
    const { idx, scale } = flatMaps(peft);
    assert.deepEqual(idx, indices);
    assert.deepEqual(scale, [...(await readTensors(file, ['scales'])).scales]);
  });
  // a folder saved with its maps is read as saved, and the same config rebuilds those very maps
  await peftCase('gpt2_unilora_indices', async (peft) => {
    const saved = flatMaps(peft);
    const fresh = new PeftModel(peft.base);
    await fresh.addAdapter('fresh', peft.get('default').config, { seed: 99 });
    const rebuilt = { idx: [] as number[], scale: [] as number[] };
    for (const l of fresh.get('fresh').layers.values()) {
      rebuilt.idx.push(...l.values.unilora_indices_A, ...l.values.unilora_indices_B);
      rebuilt.scale.push(...l.values.unilora_scales_A, ...l.values.unilora_scales_B);
    }
    assert.deepEqual(rebuilt, saved);
  });
});

test('the projection is an isometry (PᵀP = I) and balanced: every θ entry serves ⌊D/d⌋ or ⌈D/d⌉ positions', async () => {
  for (const d of [7, 45, 200]) {
    const peft = await uni({ r: 2, theta_d_length: d }); // D = 64
    const { idx, scale } = flatMaps(peft);
    assert.equal(idx.length, 64);
    const col = new Float64Array(d); // (PᵀP)_jj = Σ over P's column j of s², off-diagonal 0 (one nonzero per row)
    const count = new Float64Array(d);
    idx.forEach((j, i) => {
      col[j] += scale[i] * scale[i];
      count[j]++;
    });
    for (let j = 0; j < d; j++) {
      if (count[j] === 0) continue; // D < d: unused entries of θ (PEFT's factor 0)
      assertAllclose([col[j]], [1], { atol: 1e-6, what: `column ${j} of P` });
      assert.ok(count[j] === Math.floor(64 / d) || count[j] === Math.ceil(64 / d), `count ${count[j]}`);
    }
    assert.equal(count.filter((c) => c > 0).length, Math.min(d, 64));
  }
});

test('Uni-LoRA logits and merged weights equal a float64 host model with A = θ[idx_A]·s_A, B = θ[idx_B]·s_B, ΔW = B·A', async () => {
  const peft = await uni({ r: 3, theta_d_length: 40 });
  const a = peft.get('default');
  const rng = new Rng(4);
  a.shared.values.unilora_theta_d = a.shared.values.unilora_theta_d.map(() => rng.normal());
  const theta = a.shared.values.unilora_theta_d;
  const deltas = new Map<string, Float64Array>();
  for (const p of PATHS) {
    const l = a.layers.get(p)!;
    const [out, inn] = [l.info.outFeatures, l.info.inFeatures];
    const A = (m: number, k: number) =>
      theta[l.values.unilora_indices_A[m * inn + k]] * l.values.unilora_scales_A[m * inn + k];
    const B = (j: number, m: number) =>
      theta[l.values.unilora_indices_B[j * 3 + m]] * l.values.unilora_scales_B[j * 3 + m];
    const d = new Float64Array(out * inn);
    for (let j = 0; j < out; j++)
      for (let k = 0; k < inn; k++) for (let m = 0; m < 3; m++) d[j * inn + k] += B(j, m) * A(m, k);
    deltas.set(p, d);
  }
  await checkAgainstHost(peft, deltas);
});

test('Uni-LoRA trains d values for the whole model, θ starting U(±init_theta_d_bound)', async () => {
  const peft = await uni({ r: 4, theta_d_length: 500, init_theta_d_bound: 0.05 });
  const a = peft.get('default');
  const layers = [...a.layers.values()].map((l) => ({ layer: l.info, settings: l.settings }));
  assert.equal(a.method.trainableCount(a.config, layers), 500);
  assert.deepEqual([...peft.trainableValues('default').keys()], ['unilora_theta_d#default']);
  const theta = a.shared.values.unilora_theta_d;
  assert.ok(theta.every((v) => Math.abs(v) <= 0.05) && theta.some((v) => Math.abs(v) > 0.045));
});

test("save_indices writes PEFT's int64 maps and float32 factors per layer; they load back; a bad index is refused", async () => {
  const peft = await uni({ r: 2, theta_d_length: 9, save_indices: true });
  const dir = mkdtempSync(join(tmpdir(), 'lk-unilora-'));
  await saveAdapter(peft, 'default', dir);
  const file = join(dir, 'adapter_model.safetensors');
  const st = await SafetensorsFile.open(file);
  const at = 'base_model.model.model.layers.1.c_fc.';
  assert.deepEqual(
    [st.info('base_model.unilora_theta_d').dtype, ...st.info('base_model.unilora_theta_d').shape],
    ['F32', 9],
  );
  assert.deepEqual(
    [st.info(`${at}unilora_indices_A`).dtype, ...st.info(`${at}unilora_indices_A`).shape],
    ['I64', 2, 6],
  );
  assert.deepEqual([st.info(`${at}unilora_scales_B`).dtype, ...st.info(`${at}unilora_scales_B`).shape], ['F32', 4, 2]);
  assert.equal(st.names().length, 1 + 3 * 4);
  const tensors = Object.fromEntries(
    await Promise.all(
      st.names().map(async (k) => {
        const i = st.info(k);
        const data = i.dtype === 'I64' ? await st.readAs(k, 'i64') : await st.readAs(k, 'f32');
        return [k, { dtype: i.dtype, shape: i.shape, data }] as const;
      }),
    ),
  );
  await st.close();
  const loaded = new PeftModel(toyBase());
  await loadAdapter(loaded, dir);
  assertAllclose(await graphLogits(loaded), await graphLogits(peft), { atol: 0, rtol: 0, what: 'reloaded' });
  (tensors[`${at}unilora_indices_A`].data as BigInt64Array)[3] = 9n; // θ has 9 entries: 0..8
  const bad = mkdtempSync(join(tmpdir(), 'lk-unilora-'));
  await saveAdapter(peft, 'default', bad);
  await writeSafetensors(join(bad, 'adapter_model.safetensors'), tensors, { format: 'pt' });
  await assert.rejects(
    loadAdapter(new PeftModel(toyBase()), bad),
    (e: unknown) =>
      e instanceof LorakitError && e.code === 'LK_FILE_INVALID' && e.message.includes('unilora_indices_A'),
  );
});

test("PEFT's Uni-LoRA adapters: PEFT's logits unmerged and merged, with and without saved maps", async () => {
  await peftCase('gpt2_unilora_indices');
});

for (const c of ['llama_unilora', 'gpt2_unilora_indices']) {
  test(`lorakit's Uni-LoRA folder ${c} in PEFT 0.21.2: loaded as written, PEFT's logits unmerged and merged`, () =>
    lorakitCase(c, 'current'));
}

test('lorakit writes its Uni-LoRA fixture byte for byte as committed', () =>
  regeneratesIdentically('llama_unilora', makeCase));

test('Uni-LoRA refuses exclude_modules (PEFT lacks it), trained biases and layer kinds it does not wrap', async () => {
  const code = (c: string, part: string) => (e: unknown) =>
    e instanceof LorakitError && e.code === c && e.message.includes(part);
  await assert.rejects(uni({ exclude_modules: ['c_fc'] }), code('LK_UNSUPPORTED', 'exclude_modules'));
  await assert.rejects(uni({ bias: 'unilora_only' }), code('LK_UNSUPPORTED', 'bias'));
  await assert.rejects(uni({ target_modules: ['embed_tokens'] }), code('LK_UNSUPPORTED', 'embedding'));
  await assert.rejects(uni({ theta_d_length: 2 ** 24 + 1 }), code('LK_CONFIG_INVALID', 'theta_d_length'));
});
