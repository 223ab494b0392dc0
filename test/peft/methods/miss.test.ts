// MiSS and Bone against independent references: PEFT-made adapters of every mode (interop/make_miss_fixtures.py:
// MiSS balance with a partial last shard, bat, mini; Bone balance and bat) against PEFT's logits, unmerged and merged,
// and PEFT's merged bat weights; each mode's layer output against the float64 dense x·(W0 + ΔW)ᵀ + b with ΔW formed
// on the host from the spec (D[i mod r, o]; the tiled mini block; W_{p,q}·T_p + T_p); lorakit's merged bat weight
// through PEFT's unmerge (W' − T_p)·(I + T_p)⁻¹ gives W0 back; today's PEFT saves the same MiSS files; the random
// init, the counts and the refusals.
// (Gradients, save/load, resume: test/peft/contract.test.ts; lorakit → PEFT: test/peft/roundtrip.test.ts.)
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { LorakitError } from '../../../src/errors.ts';
import { SafetensorsFile } from '../../../src/io/index.ts';
import { Rng } from '../../../src/linalg/index.ts';
import { loadModel } from '../../../src/models/index.ts';
import { adaptable, loadAdapter, PeftModel } from '../../../src/peft/index.ts';
import { assertAllclose } from '../../helpers.ts';
import { logitsOf } from '../logits.ts';
import { type DenseModule, denseBase, graphOutput, referenceOutput, w0Matrix } from './dense-layer.ts';

const ROOT = new URL('../../../', import.meta.url).pathname;
const FIXTURES = join(ROOT, 'test/fixtures/miss');
const code =
  (c: string, ...parts: string[]) =>
  (e: unknown) =>
    e instanceof LorakitError && e.code === c && parts.every((p) => e.message.includes(p));

for (const c of ['llama_miss', 'llama_miss_bat', 'llama_miss_mini', 'llama_bone', 'llama_bone_bat']) {
  test(`PEFT's ${c}: lorakit gives PEFT's logits unmerged and merged (1e-4) and its merged weights (1e-6)`, async () => {
    const dir = join(FIXTURES, c);
    const expected = JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8'));
    const model = await loadModel(join(ROOT, expected.base_model));
    const st = await SafetensorsFile.open(join(dir, 'expected.safetensors'));
    try {
      const peft = new PeftModel(adaptable(model));
      const { unused } = await loadAdapter(peft, dir);
      assert.deepEqual(unused, []);
      const a = peft.get('default');
      assert.deepEqual([...a.layers.keys()].sort(), Object.keys(expected.shard_layers));
      const run = () => logitsOf(model, expected, { hooks: peft.hooks(), overrides: peft.weightOverrides() });
      assertAllclose(await run(), await st.readAs('logits', 'f32'), { atol: 1e-4, rtol: 0, what: `${c} logits` });
      await peft.merge();
      const merged = peft.weightOverrides();
      for (const key of st.names().filter((k) => k.startsWith('merged.'))) {
        assertAllclose(merged.get(key.slice('merged.'.length))!, await st.readAs(key, 'f32'), {
          atol: 1e-6,
          rtol: 0,
          what: key,
        });
      }
      const wantMerged = await st.readAs('merged_logits', 'f32');
      assertAllclose(await run(), wantMerged, { atol: 1e-4, rtol: 0, what: `${c} merged logits` });
    } finally {
      await st.close();
      await model.close();
    }
  });
}

test("today's PEFT (0.21.2) saves the MiSS fixtures bit for bit as the pinned 0.18.1 did, with the same logits", () => {
  for (const c of ['llama_miss', 'llama_miss_bat', 'llama_miss_mini']) {
    const report = JSON.parse(readFileSync(join(FIXTURES, c, 'current.json'), 'utf8'));
    assert.equal(report.versions.peft, '0.21.2');
    assert.ok(report.tensors_bit_identical, c);
    assert.deepEqual(report.config_keys_only_current, [], c);
    for (const [k, d] of Object.entries<number>(report.max_abs_diff_vs_pinned)) assert.ok(d < 1e-5, `${c} ${k}: ${d}`);
  }
});

const LAYERS = [
  { name: 'q_proj', kind: 'linear', inFeatures: 12, outFeatures: 8, bias: true },
  { name: 'v_proj', kind: 'linear', inFeatures: 10, outFeatures: 6 },
] as const;

/** ΔW [out, in] of a mode, float64, straight from the spec's statements about the block. */
function specDelta(m: DenseModule, w0: Float64Array, block: Float32Array, mode: string, r: number, miniR: number) {
  const [o, i] = [m.outFeatures, m.inFeatures];
  const d = new Float64Array(o * i);
  for (let row = 0; row < o; row++)
    for (let col = 0; col < i; col++) {
      if (mode === 'balance')
        d[row * i + col] = block[(col % r) * o + row]; // D[i mod r, o]
      else if (mode === 'mini') d[row * i + col] = block[(col % r) * miniR + (row % miniR)];
      else {
        // W'_{p,q} = W_{p,q} + W_{p,q}·T_p + T_p with W_{p,q}[a, b] = W[p·r + a, q·r + b]
        const [p, a, q, b] = [Math.floor(row / r), row % r, Math.floor(col / r), col % r];
        let s = block[(p * r + a) * r + b];
        for (let c = 0; c < r; c++) s += w0[(p * r + a) * i + q * r + c] * block[(p * r + c) * r + b];
        d[row * i + col] = s;
      }
    }
  return d;
}

for (const [mode, config] of [
  ['balance', { peft_type: 'MISS', r: 5 }], // 12 = 2·5 + 2, 10 = 2·5: a partial last shard on q_proj
  ['mini', { peft_type: 'MISS', r: 4, mini_r: 2, init_weights: 'mini' }],
  ['bat', { peft_type: 'MISS', r: 2, init_weights: 'bat' }],
  ['bat', { peft_type: 'BONE', r: 2, init_weights: 'bat' }],
] as const) {
  test(`${config.peft_type} ${mode}: layer outputs equal the float64 dense x·(W0 + ΔW)ᵀ + b, unmerged and merged`, async () => {
    const { base, weights, modules } = denseBase(LAYERS);
    const peft = new PeftModel(base);
    await peft.addAdapter('default', { ...config, target_modules: ['q_proj', 'v_proj'] });
    const rng = new Rng(3);
    const moved = [...peft.trainableValues('default')].map(([k, v]) => [k, v.map(() => 0.3 * rng.normal())] as const);
    peft.setValues('default', new Map(moved));
    const n = 3;
    const x = new Rng(8).normalArray(n * 12);
    const block = config.peft_type === 'MISS' ? 'miss_block' : 'bone_block';
    const miniR = 'mini_r' in config ? config.mini_r : 1;
    const deltas = modules.map((m) =>
      specDelta(m, w0Matrix(weights, m), peft.get('default').layers.get(m.path)!.values[block], mode, config.r, miniR),
    );
    for (const merged of [false, true]) {
      if (merged) await peft.merge();
      for (const [k, m] of modules.entries()) {
        const xs = x.subarray(0, n * m.inFeatures);
        const want = referenceOutput(weights, m, xs, n, deltas[k]);
        const got = await graphOutput(peft, weights, modules, m.path, xs, n);
        assertAllclose(got, want, { atol: 2e-5, what: `${merged ? 'merged ' : ''}${m.path}` });
      }
    }
  });
}

/** x·M⁻¹ rows for an r×r M, by Gauss–Jordan in float64 (the test's own inverse, as PEFT's torch.inverse). */
function inverse(m: ArrayLike<number>, r: number): Float64Array {
  const a = Float64Array.from(m);
  const inv = new Float64Array(r * r);
  for (let j = 0; j < r; j++) inv[j * r + j] = 1;
  for (let c = 0; c < r; c++) {
    let p = c;
    for (let i = c + 1; i < r; i++) if (Math.abs(a[i * r + c]) > Math.abs(a[p * r + c])) p = i;
    for (const z of [a, inv]) for (let t = 0; t < r; t++) [z[c * r + t], z[p * r + t]] = [z[p * r + t], z[c * r + t]];
    const d = a[c * r + c];
    for (const z of [a, inv]) for (let t = 0; t < r; t++) z[c * r + t] /= d;
    for (let i = 0; i < r; i++) {
      if (i === c) continue;
      const f = a[i * r + c];
      for (const z of [a, inv]) for (let t = 0; t < r; t++) z[i * r + t] -= f * z[c * r + t];
    }
  }
  return inv;
}

test("lorakit's merged bat weight goes back to W0 through PEFT's unmerge (W' − T_p)·(I + T_p)⁻¹; unmerge is exact", async () => {
  const { base, weights, modules } = denseBase(LAYERS);
  const peft = new PeftModel(base);
  await peft.addAdapter('default', { peft_type: 'MISS', r: 2, init_weights: 'bat', target_modules: ['q_proj'] });
  const rng = new Rng(4);
  peft.setValues(
    'default',
    new Map([...peft.trainableValues('default')].map(([k, v]) => [k, v.map(() => 0.3 * rng.normal())])),
  );
  const m = modules[0];
  const T = peft.get('default').layers.get(m.path)!.values.miss_block; // [out/r, r, r]
  await peft.merge();
  const merged = peft.weightOverrides().get(m.weightName)!;
  const [o, i, r] = [m.outFeatures, m.inFeatures, 2];
  const back = new Float64Array(o * i);
  for (let p = 0; p < o / r; p++) {
    const ip = Float64Array.from({ length: r * r }, (_, k) => T[p * r * r + k] + (k % (r + 1) === 0 ? 1 : 0));
    const inv = inverse(ip, r);
    for (let a = 0; a < r; a++)
      for (let col = 0; col < i; col++) {
        const [q, b] = [Math.floor(col / r), col % r];
        let s = 0;
        for (let c = 0; c < r; c++)
          s += (merged[(p * r + a) * i + q * r + c] - T[(p * r + a) * r + c]) * inv[c * r + b];
        back[(p * r + a) * i + col] = s;
      }
  }
  assertAllclose(back, weights.get(m.weightName)!, { atol: 1e-6, rtol: 0, what: 'W0 from the merged weight' });
  peft.unmerge();
  assert.equal(peft.weightOverrides().size, 0, 'unmerge drops the merged copy: W0 bit for bit');
});

test('MiSS init: zero block (ΔW = 0), or with init_weights false PEFT’s Kaiming-uniform bound 1/√out; the counts', async () => {
  const { base } = denseBase(LAYERS);
  const peft = new PeftModel(base);
  const zero = await peft.addAdapter('a', { peft_type: 'MISS', r: 5, target_modules: ['q_proj', 'v_proj'] });
  for (const l of zero.layers.values()) assert.ok(l.values.miss_block.every((v) => v === 0));
  const random = await peft.addAdapter('b', {
    peft_type: 'MISS',
    r: 4,
    init_weights: false,
    target_modules: ['q_proj'],
  });
  const d = [...random.layers.values()][0].values.miss_block; // [4, 8]
  assert.ok(d.every((v) => Math.abs(v) <= 1 / Math.sqrt(8)) && d.some((v) => Math.abs(v) > 0.1));
  const count = (c: Record<string, unknown>) =>
    peft.addAdapter(`c${JSON.stringify(c)}`, { ...c, target_modules: ['q_proj', 'v_proj'] }).then((a) => {
      const layers = [...a.layers.values()].map((l) => ({ layer: l.info, settings: l.settings }));
      return a.method.trainableCount(a.config, layers);
    });
  assert.equal(await count({ peft_type: 'MISS', r: 2 }), 2 * (8 + 6)); // r·out
  assert.equal(await count({ peft_type: 'MISS', r: 2, init_weights: 'bat' }), 2 * (8 + 6)); // (out/r)·r·r
  assert.equal(await count({ peft_type: 'MISS', r: 2, mini_r: 2, init_weights: 'mini' }), 2 * 2 * 2); // r·mini_r
  assert.equal(await count({ peft_type: 'BONE', r: 2 }), 2 * (8 + 6));
});

test('MiSS and Bone refuse what PEFT refuses: bat blocks that do not tile, mini_r not dividing out, r > in, biases', async () => {
  const peft = new PeftModel(denseBase(LAYERS).base);
  const add = (c: Record<string, unknown>) => peft.addAdapter('x', { target_modules: ['q_proj', 'v_proj'], ...c });
  await assert.rejects(
    add({ peft_type: 'MISS', r: 4, init_weights: 'bat' }),
    code('LK_CONFIG_INVALID', 'v_proj', 'bat'),
  );
  await assert.rejects(add({ peft_type: 'BONE', r: 3, init_weights: 'bat' }), code('LK_CONFIG_INVALID', 'q_proj'));
  await assert.rejects(
    add({ peft_type: 'MISS', r: 2, mini_r: 4, init_weights: 'mini' }),
    code('LK_CONFIG_INVALID', 'v_proj', 'mini_r'),
  );
  await assert.rejects(add({ peft_type: 'MISS', r: 11 }), code('LK_CONFIG_INVALID', 'v_proj', 'r = 11'));
  await assert.rejects(add({ peft_type: 'MISS', bias: 'all' }), code('LK_UNSUPPORTED', 'bias'));
  await assert.rejects(add({ peft_type: 'BONE', miss_dropout: 0.1 }), code('LK_CONFIG_INVALID', 'miss_dropout'));
});
