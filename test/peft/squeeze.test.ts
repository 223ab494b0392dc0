// LoRA-Squeeze against independent references: the factor path (QR of B and Aᵀ, SVD of the r×r core) against the
// dense float64 SVD of the formed ΔW (singular values, the rank-k product to 1e-5, the Eckart–Young residual);
// energy selection against a brute-force scan; the randomized dense path against the exact one; whole adapters on
// the toy model (LoRA on every layer kind, DoRA and VeRA through their merged ΔW) written as PEFT LoRA folders that
// load back and whose ΔW equals the truncated SVD of the source ΔW; the refusals. PEFT loading the squeezed folders
// (and torch's SVD agreeing): interop/check_squeeze.py, fixtures test/fixtures/squeeze.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { LorakitError } from '../../src/errors.ts';
import { Rng, svd } from '../../src/linalg/index.ts';
import {
  denseSpectrum,
  factorSpectrum,
  loadAdapter,
  matrixDims,
  PeftModel,
  retainedEnergy,
  selectRank,
  squeezeAdapter,
  toMatrix,
  truncatedDelta,
  truncatedFactors,
} from '../../src/peft/index.ts';
import { mergedWeight } from '../../src/peft/registry.ts';
import { assertAllclose } from '../helpers.ts';
import { toyBase, toyWeights } from './toy.ts';

/** ΔW = s·B·A [m, n] in float64. */
function dense(b: Float32Array, a: Float32Array, m: number, r: number, n: number, s: number): Float64Array {
  const d = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let t = 0; t < r; t++) for (let j = 0; j < n; j++) d[i * n + j] += s * b[i * r + t] * a[t * n + j];
  return d;
}

/** Rank-k truncation of a dense matrix by its own exact SVD (the reference). */
function denseTruncation(d: Float64Array, m: number, n: number, k: number): { dk: Float64Array; s: Float64Array } {
  const r = svd(d, m, n);
  const dk = new Float64Array(m * n);
  for (let j = 0; j < k; j++)
    for (let i = 0; i < m; i++)
      for (let c = 0; c < n; c++) dk[i * n + c] += r.u[i * r.k + j] * r.s[j] * r.v[c * r.k + j];
  return { dk, s: r.s };
}

const fro = (x: ArrayLike<number>) => Math.sqrt(Array.from(x).reduce((a, v) => a + v * v, 0));

for (const [m, r, n] of [
  [37, 8, 23],
  [5, 8, 19],
  [30, 6, 4],
]) {
  test(`factor squeeze of a [${m}, ${r}]·[${r}, ${n}] LoRA equals the dense truncated SVD of ΔW to 1e-5`, () => {
    const rng = new Rng(m * 100 + n);
    const b = rng.normalArray(m * r, 1);
    const a = rng.normalArray(r * n, 1);
    const s = 2 / r;
    const sp = factorSpectrum(b, a, m, r, n, s);
    const d = dense(b, a, m, r, n, s);
    const scale = fro(d);
    const k = Math.min(3, sp.q);
    const ref = denseTruncation(d, m, n, k);
    assertAllclose(sp.s, ref.s.subarray(0, sp.q), { atol: 1e-9 * scale, rtol: 1e-9, what: 'singular values' });
    assert.ok(Math.abs(sp.total - scale ** 2) < 1e-9 * scale ** 2, 'total energy is ‖ΔW‖²');
    // the new factors at another scale reproduce ΔW_k in float32
    const st = 16 / Math.sqrt(k);
    const f = truncatedFactors(sp, k, st);
    assertAllclose(dense(f.b, f.a, m, k, n, st), ref.dk, { atol: 1e-5 * scale, rtol: 0, what: "s'·B'·A'" });
    // Eckart–Young: the residual is the energy of the dropped components
    const res = Float64Array.from(d, (v, i) => v - ref.dk[i]);
    const dropped = Array.from(ref.s.subarray(k)).reduce((x, v) => x + v * v, 0);
    assert.ok(Math.abs(fro(res) ** 2 - dropped) < 1e-9 * scale ** 2, 'residual energy');
    assert.ok(Math.abs(retainedEnergy(sp, k) - (1 - dropped / scale ** 2)) < 1e-12);
    // the split is symmetric: B'ᵀB' = A'A'ᵀ = Σ_k / s'
    for (let j = 0; j < k; j++) {
      let bb = 0,
        aa = 0;
      for (let i = 0; i < m; i++) bb += f.b[i * k + j] ** 2;
      for (let c = 0; c < n; c++) aa += f.a[j * n + c] ** 2;
      assert.ok(Math.abs(bb - sp.s[j] / st) < 1e-4 * (sp.s[j] / st) && Math.abs(aa - bb) < 1e-4 * bb, `split ${j}`);
    }
  });
}

test('energy selection keeps the smallest rank reaching the fraction, capped by the rank', () => {
  const sp = { s: Float64Array.of(4, 2, 1, 1, 0.5), q: 5, total: 16 + 4 + 1 + 1 + 0.25 + 0.75 };
  for (const energy of [0.1, 0.6, 0.7, 0.87, 0.9, 0.95, 1]) {
    let k = 1;
    while (k < 5 && Array.from(sp.s.subarray(0, k)).reduce((a, v) => a + v * v, 0) < energy * sp.total) k++;
    assert.equal(selectRank(sp, { rank: 5, energy }), k, `energy ${energy}`);
    assert.equal(selectRank(sp, { rank: 2, energy }), Math.min(k, 2), `energy ${energy}, cap 2`);
  }
  assert.equal(selectRank(sp, { rank: 3 }), 3);
  assert.equal(selectRank({ s: Float64Array.of(0, 0), q: 2, total: 0 }, { rank: 2, energy: 0.9 }), 2);
});

test('the randomized dense path agrees with the exact one on a large low-rank ΔW', async () => {
  const rng = new Rng(5);
  const [m, r, n] = [90, 6, 70];
  const b = rng.normalArray(m * r, 1);
  const a = rng.normalArray(r * n, 1);
  const d = dense(b, a, m, r, n, 1);
  const exact = await denseSpectrum(d, m, n, 4);
  const rand = await denseSpectrum(d, m, n, 4, { exactLimit: 1, oversample: 4 });
  assert.equal(exact.via, 'svd');
  assert.equal(rand.via, 'rsvd');
  assertAllclose(rand.s.subarray(0, 4), exact.s.subarray(0, 4), { rtol: 1e-6, atol: 0, what: 'σ' });
  const ref = truncatedDelta(exact, 4);
  assertAllclose(truncatedDelta(rand, 4), ref, { atol: 1e-6 * fro(ref), rtol: 0, what: 'ΔW_4' });
  assert.equal(rand.total, exact.total);
});

/** The source adapter's ΔW per layer ([out, in] matrix view, float64): merged weight − W0. */
async function deltas(peft: PeftModel, name: string): Promise<Map<string, { d: Float64Array; m: number; n: number }>> {
  const a = peft.get(name);
  const out = new Map();
  for (const [path, l] of a.layers) {
    const [m, n] = matrixDims(l.info);
    const w0 = await l.info.readWeight();
    const v = { layer: l.info, settings: l.settings, config: a.config, p: l.values, shared: a.shared.values };
    const merged = toMatrix(l.info, mergedWeight(a.method, v, await peft.frozenWeight(l.module.weightName)));
    const w = toMatrix(l.info, w0);
    out.set(path, { d: Float64Array.from(merged, (x, i) => x - w[i]), m, n });
  }
  return out;
}

/** An adapter on the toy model with seeded noise on its trainable tensors. */
async function noisy(config: Record<string, unknown>, conv = false): Promise<PeftModel> {
  const peft = new PeftModel(toyBase(toyWeights(), { conv }));
  await peft.addAdapter('default', config, { seed: 3 });
  const r = new Rng(11);
  const values = [...peft.trainableValues('default')].map(([k, v]) => [k, v.map((x) => x + 0.4 * r.normal())] as const);
  peft.setValues('default', new Map(values));
  return peft;
}

async function checkSqueezed(
  config: Record<string, unknown>,
  opts: { rank: number; energy?: number; alpha?: number },
  conv = false,
) {
  const peft = await noisy(config, conv);
  const source = await deltas(peft, 'default');
  const dir = mkdtempSync(join(tmpdir(), 'lk-squeeze-'));
  const report = await squeezeAdapter(peft, 'default', dir, opts);
  const saved = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
  assert.equal(saved.peft_type, 'LORA');
  assert.equal(saved.use_dora, false);
  const loaded = new PeftModel(toyBase(toyWeights(), { conv }));
  const { unused } = await loadAdapter(loaded, dir);
  assert.deepEqual(unused, []);
  assert.equal(loaded.get('default').method.name, 'lora');
  const got = await deltas(loaded, 'default');
  for (const l of report.layers) {
    const { d, m, n } = source.get(l.path)!;
    const ref = denseTruncation(d, m, n, l.rank);
    assert.equal(loaded.get('default').layers.get(l.path)!.settings.r, l.rank, `${l.path} rank`);
    assertAllclose(got.get(l.path)!.d, ref.dk, { atol: 1e-5 * fro(d), rtol: 0, what: `${l.path} ΔW_${l.rank}` });
  }
  return { report, saved };
}

test('a LoRA on every layer kind squeezes through its factors into a PEFT LoRA folder with ΔW_k', async () => {
  const config = { r: 4, lora_alpha: 6, target_modules: ['embed_tokens', 'q_proj', 'c_fc', 'conv'] };
  const { report, saved } = await checkSqueezed(config, { rank: 2 }, true);
  assert.ok(report.layers.every((l) => l.via === 'factors' && l.rank === 2 && l.sourceRank === 4));
  assert.equal(saved.r, 2);
  assert.equal(saved.lora_alpha, 6); // the source's alpha: s' = 6/2
  assert.deepEqual(saved.rank_pattern, {});
  assert.ok(report.params < report.sourceParams);
});

test('energy selection writes per-layer ranks as rank_pattern (rsLoRA scales kept)', async () => {
  const config = { r: 5, lora_alpha: 8, use_rslora: true, target_modules: ['q_proj', 'c_fc'] };
  const { report, saved } = await checkSqueezed(config, { rank: 4, energy: 0.8 });
  const ranks = report.layers.map((l) => l.rank);
  assert.equal(saved.r, Math.max(...ranks));
  for (const l of report.layers) {
    assert.ok(l.energy >= 0.8 - 1e-12 || l.rank === 4, `${l.path} keeps ${l.energy}`);
    const key = Object.keys(saved.rank_pattern).find((k) => new RegExp(`^(.*\\.)?(${k})$`).test(l.path));
    assert.equal(key ? saved.rank_pattern[key] : saved.r, l.rank, l.path);
  }
  assert.equal(saved.use_rslora, true);
});

test('DoRA and VeRA adapters squeeze through a dense SVD of their merged ΔW', async () => {
  const dora = await checkSqueezed(
    { r: 3, lora_alpha: 4, use_dora: true, target_modules: ['q_proj', 'c_fc'] },
    {
      rank: 2,
    },
  );
  assert.ok(dora.report.layers.every((l) => l.via === 'svd'));
  assert.equal(dora.saved.lora_alpha, 2); // s' = 1 unless --alpha
  const vera = await checkSqueezed({ peft_type: 'VERA', r: 3, target_modules: ['q_proj'] }, { rank: 2, alpha: 5 });
  assert.equal(vera.saved.lora_alpha, 5);
  assert.deepEqual(vera.saved.target_modules, ['q_proj']);
});

test('squeeze refuses an unmergeable adapter and bad ranks', async () => {
  const fly = await noisy({ peft_type: 'FLYLORA', r: 4, top_k: 2, target_modules: ['c_fc'] });
  await assert.rejects(
    squeezeAdapter(fly, 'default', mkdtempSync(join(tmpdir(), 'lk-squeeze-')), { rank: 2 }),
    (e: unknown) => e instanceof LorakitError && e.code === 'LK_UNSUPPORTED' && e.message.includes('flylora'),
  );
  const lora = await noisy({ r: 4, target_modules: ['q_proj'] });
  for (const bad of [{ rank: 0 }, { rank: 2, energy: 1.5 }]) {
    await assert.rejects(
      squeezeAdapter(lora, 'default', mkdtempSync(join(tmpdir(), 'lk-squeeze-')), bad),
      (e: unknown) => e instanceof LorakitError && e.code === 'LK_INVALID_ARGUMENT',
    );
  }
  assert.deepEqual(lora.activeAdapters, ['default']);
  assert.deepEqual([...lora.adapters.keys()], ['default']);
});
