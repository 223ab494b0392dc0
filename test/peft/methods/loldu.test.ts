// LoLDU against independent references: the frozen factors of a weight equal torch.linalg.lu's (test/fixtures/linalg:
// lora_B = (P·L)[:, :r], lora_A = U[:r] / diag(U), z₀ = diag(U)[:r]) for a Linear and a GPT-2 Conv1D (stored
// transposed); the residual is exact (W_res + σ·P·L_r·diag(D_r)·U_r = W0) and the output unchanged at init; a
// layer's output with trained z equals the float64 dense x·(W_res + σ·P·L_r·diag(z)·U_r)ᵀ + b, unmerged and merged;
// a zero pivot gives z = 0 and an exact residual; the official init_method values; a saved folder reloads the same.
// (Gradients, save/load, resume and the count: test/peft/contract.test.ts.)
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { LorakitError } from '../../../src/errors.ts';
import { Rng } from '../../../src/linalg/index.ts';
import { loadAdapter, PeftModel, saveAdapter } from '../../../src/peft/index.ts';
import { assertAllclose } from '../../helpers.ts';
import { type DenseModule, denseBase, graphOutput, referenceOutput, w0Matrix } from './dense-layer.ts';

const torch = JSON.parse(readFileSync(new URL('../../fixtures/linalg/torch.json', import.meta.url), 'utf8'));
const fixture = (name: string) => torch.lu.find((c: { name: string }) => c.name === name);

/** A base whose q_proj [9, 5] and c_fc (Conv1D, [out 5, in 9] stored [9, 5]) hold torch's LU fixture matrices. */
function fixtureBase() {
  const env = denseBase([
    { name: 'q_proj', kind: 'linear', inFeatures: 5, outFeatures: 9, bias: true },
    { name: 'c_fc', kind: 'conv1d', inFeatures: 9, outFeatures: 5 },
  ]);
  const [tall, wide] = [fixture('tall 9x5'), fixture('wide 5x9')];
  env.weights.set(env.modules[0].weightName, Float32Array.from(tall.a.flat()));
  // Conv1D stores [in, out]: its [out, in] matrix is the wide fixture
  const t = new Float32Array(45);
  for (let o = 0; o < 5; o++) for (let i = 0; i < 9; i++) t[i * 5 + o] = wide.a[o][i];
  env.weights.set(env.modules[1].weightName, t);
  return { ...env, cases: [tall, wide] };
}

/** The [out, in] matrix of what the adapter's init left as the frozen weight. */
async function residual(peft: PeftModel, m: DenseModule): Promise<Float64Array> {
  const w = await peft.frozenWeight(m.weightName);
  const out = new Float64Array(w.length);
  const [o, i] = [m.outFeatures, m.inFeatures];
  for (let r = 0; r < o; r++)
    for (let c = 0; c < i; c++) out[r * i + c] = m.kind === 'conv1d' ? w[c * o + r] : w[r * i + c];
  return out;
}

/** σ·(P·L_r)·diag(z)·U_r [out, in], float64, plain loops over the stored tensors. */
function ldu(
  values: Record<string, Float32Array>,
  o: number,
  i: number,
  r: number,
  sigma: number,
  z = values.vector_z,
) {
  const d = new Float64Array(o * i);
  for (let p = 0; p < o; p++)
    for (let c = 0; c < i; c++) {
      let s = 0;
      for (let j = 0; j < r; j++) s += values.lora_B[p * r + j] * z[j] * values.lora_A[j * i + c];
      d[p * i + c] = sigma * s;
    }
  return d;
}

test("LoLDU's factors are torch.linalg.lu's first r pivots (P folded into lora_B), Linear and Conv1D", async () => {
  const { base, modules, cases } = fixtureBase();
  const peft = new PeftModel(base);
  const r = 3;
  await peft.addAdapter('default', { peft_type: 'LOLDU', r, target_modules: ['q_proj', 'c_fc'] });
  for (const [k, m] of modules.entries()) {
    const c = cases[k];
    const v = peft.get('default').layers.get(m.path)!.values;
    const k0 = Math.min(c.m, c.n);
    const pl = new Float64Array(c.m * r); // (P·L)[:, :r]: row rows[j] of P·L is row j of L
    c.rows.forEach((to: number, j: number) => {
      for (let t = 0; t < r; t++) pl[to * r + t] = c.l[j][t];
    });
    assertAllclose(v.lora_B, pl, { atol: 1e-6, rtol: 0, what: `${m.path} lora_B = P·L_r` });
    const diag = Array.from({ length: r }, (_, j) => c.u[j][j]);
    assertAllclose(v.vector_z, diag, { atol: 1e-6, rtol: 1e-6, what: `${m.path} z₀ = D_r` });
    const u = c.u.slice(0, r).flatMap((row: number[], j: number) => row.map((x) => x / diag[j]));
    assertAllclose(v.lora_A, u, { atol: 1e-5, rtol: 1e-5, what: `${m.path} lora_A = U_r / D_r` });
    assert.equal(k0, 5);
  }
});

test('LoLDU init: W_res + σ·P·L_r·diag(D_r)·U_r = W0 and the outputs are unchanged; trained z: the dense reference', async () => {
  const { base, weights, modules } = fixtureBase();
  const peft = new PeftModel(base);
  const [r, alpha] = [4, 2];
  await peft.addAdapter('default', { peft_type: 'LOLDU', r, lora_alpha: alpha, target_modules: ['q_proj', 'c_fc'] });
  const n = 3;
  const x = new Rng(2).normalArray(n * 9);
  for (const m of modules) {
    const v = peft.get('default').layers.get(m.path)!.values;
    const [o, i] = [m.outFeatures, m.inFeatures];
    const res = await residual(peft, m);
    const back = ldu(v, o, i, r, alpha / r).map((d, k) => d + res[k]);
    assertAllclose(back, w0Matrix(weights, m), { atol: 1e-6, rtol: 0, what: `${m.path}: exact residual` });
    const xs = x.subarray(0, n * i);
    assertAllclose(await graphOutput(peft, weights, modules, m.path, xs, n), referenceOutput(weights, m, xs, n, null), {
      atol: 1e-5,
      what: `${m.path} at init`,
    });
  }
  const rng = new Rng(6);
  peft.setValues(
    'default',
    new Map([...peft.trainableValues('default')].map(([k, v]) => [k, v.map((z) => z + rng.normal())])),
  );
  const deltas = new Map<string, Float64Array>(); // relative to W0: W_res − W0 + σ·P·L_r·diag(z)·U_r
  for (const m of modules) {
    const v = peft.get('default').layers.get(m.path)!.values;
    const [w0, res] = [w0Matrix(weights, m), await residual(peft, m)];
    deltas.set(
      m.path,
      ldu(v, m.outFeatures, m.inFeatures, r, alpha / r).map((d, k) => d + res[k] - w0[k]),
    );
  }
  for (const merged of [false, true]) {
    if (merged) await peft.merge();
    for (const m of modules) {
      const xs = x.subarray(0, n * m.inFeatures);
      const want = referenceOutput(weights, m, xs, n, deltas.get(m.path)!);
      assert.ok(want.some((y, k) => Math.abs(y - referenceOutput(weights, m, xs, n, null)[k]) > 0.05));
      assertAllclose(await graphOutput(peft, weights, modules, m.path, xs, n), want, {
        atol: 2e-5,
        what: `${merged ? 'merged ' : ''}${m.path}`,
      });
    }
  }
});

test('a zero pivot (a column already eliminated) gives z = 0, finite factors and an exact residual', async () => {
  const env = denseBase([{ name: 'q_proj', kind: 'linear', inFeatures: 4, outFeatures: 5 }]);
  const singular = fixture('singular 5x4 (a zero column)');
  env.weights.set(env.modules[0].weightName, Float32Array.from(singular.a.flat()));
  const peft = new PeftModel(env.base);
  await peft.addAdapter('default', { peft_type: 'LOLDU', r: 3, target_modules: ['q_proj'] });
  const v = peft.get('default').layers.get(env.modules[0].path)!.values;
  assert.equal(v.vector_z[1], 0);
  assert.ok(Object.values(v).every((t) => t.every(Number.isFinite)));
  const res = await residual(peft, env.modules[0]);
  assertAllclose(
    ldu(v, 5, 4, 3, 1 / 3).map((d, k) => d + res[k]),
    w0Matrix(env.weights, env.modules[0]),
    { atol: 1e-6, rtol: 0, what: 'W0' },
  );
});

test('LoLDU init_method: ones, zeros and constant set z (the residual keeps D_r); the others draw (uniform within ±|mean D_r|/2)', async () => {
  const { base } = fixtureBase();
  const adapters = new Map<string, Awaited<ReturnType<PeftModel['addAdapter']>>>();
  const z = async (init_method: string) => {
    const a = await new PeftModel(base).addAdapter('x', {
      peft_type: 'LOLDU',
      r: 4,
      init_method,
      target_modules: ['q_proj'],
    });
    adapters.set(init_method, a);
    return [...a.layers.values()][0].values.vector_z;
  };
  const d = await z('lu');
  const mean = d.reduce((s, v) => s + v, 0) / 4;
  assert.deepEqual([...(await z('ones'))], [1, 1, 1, 1]);
  assert.deepEqual([...(await z('zeros'))], [0, 0, 0, 0]);
  assertAllclose(await z('constant'), [mean, mean, mean, mean], { rtol: 1e-6, what: 'constant' });
  assert.ok((await z('uniform')).every((v) => Math.abs(v) <= Math.abs(mean) / 2));
  assert.ok((await z('s_uniform')).every((v) => Math.abs(v) <= 1));
  for (const m of ['normal', 's_normal']) {
    const drawn = await z(m);
    assert.ok(drawn.every(Number.isFinite) && drawn.some((v, k) => v !== d[k]), m);
  }
  const a = adapters.get('ones')!;
  assert.ok(a.bases.size === 1, 'the residual still replaces W0');
  const layers = [...a.layers.values()].map((l) => ({ layer: l.info, settings: l.settings }));
  assert.equal(a.method.trainableCount(a.config, layers), 4);
});

test('a saved LoLDU folder reloads its factors and z, and rebuilds the same residual from W0', async () => {
  const { base, weights, modules } = fixtureBase();
  const peft = new PeftModel(base);
  await peft.addAdapter('default', { peft_type: 'LOLDU', r: 2, target_modules: ['q_proj', 'c_fc'] });
  peft.setValues('default', new Map([...peft.trainableValues('default')].map(([k, v]) => [k, v.map((z) => 2 * z)])));
  const dir = mkdtempSync(join(tmpdir(), 'lk-loldu-'));
  await saveAdapter(peft, 'default', dir, { convertToBase: true }); // no conversion for LoLDU: saved as trained
  const loaded = new PeftModel(base);
  await loadAdapter(loaded, dir);
  for (const m of modules) {
    assert.deepEqual(await loaded.frozenWeight(m.weightName), await peft.frozenWeight(m.weightName));
    const x = new Rng(1).normalArray(2 * m.inFeatures);
    assertAllclose(
      await graphOutput(loaded, weights, modules, m.path, x, 2),
      await graphOutput(peft, weights, modules, m.path, x, 2),
      { atol: 0, rtol: 0 },
    );
  }
  await assert.rejects(
    new PeftModel(base).addAdapter('x', { peft_type: 'LOLDU', r: 6, target_modules: ['q_proj'] }),
    (e: unknown) => e instanceof LorakitError && e.code === 'LK_CONFIG_INVALID' && e.message.includes('q_proj'),
  );
});
