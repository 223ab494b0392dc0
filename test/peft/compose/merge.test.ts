// lorakit's adapter merging against PEFT's add_weighted_adapter (test/fixtures/compose, made by
// interop/make_merge_fixtures.py with peft 0.21.2, and PEFT 0.18.1 for the SVD scaling bug): every combination type
// on three rank-4 adapters (different alphas, an alpha_pattern, different module sets, a negative weight), cat and
// svd across ranks, DARE with PEFT's seed (the same Bernoulli masks, element for element), and the two places where
// lorakit deliberately differs from PEFT, each shown against PEFT's own output.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { mm } from '../../../src/linalg/index.ts';
import {
  clampFactors,
  combineModule,
  isSvdType,
  type LoraAdapter,
  mergeAdapterFolders,
  mergeLoras,
  type MergeType,
  readLora,
} from '../../../src/peft/compose/index.ts';

const ROOT = new URL('../../../test/fixtures/compose/', import.meta.url).pathname;
const INFO = JSON.parse(readFileSync(join(ROOT, 'merges.json'), 'utf8'));
const adapters = new Map<string, LoraAdapter>();
async function source(name: string): Promise<LoraAdapter> {
  if (!adapters.has(name)) adapters.set(name, await readLora(join(ROOT, 'adapters', name)));
  return adapters.get(name)!;
}

/** lorakit's merge of a fixture case, with PEFT's arguments. */
async function lorakitMerge(c: any) {
  return mergeLoras(await Promise.all(c.adapters.map(source)), {
    combination: c.combination_type as MergeType,
    weights: c.weights,
    density: c.density,
    rank: c.svd_rank,
    svdClamp: c.svd_clamp,
    majoritySignMethod: c.majority_sign_method,
    seed: c.seed,
    moduleOrder: c.module_order,
  });
}

const maxAbs = (x: ArrayLike<number>) => Array.from(x).reduce((m, v) => Math.max(m, Math.abs(v)), 0);
function close(got: ArrayLike<number>, want: ArrayLike<number>, what: string, rtol = 2e-6) {
  assert.equal(got.length, want.length, `${what}: length`);
  const tol = rtol * Math.max(maxAbs(want), 1e-30);
  for (let i = 0; i < got.length; i++)
    assert.ok(Math.abs(got[i] - want[i]) <= tol, `${what}[${i}]: lorakit ${got[i]}, PEFT ${want[i]} (tol ${tol})`);
}
const product = (m: { a: Float64Array; b: Float64Array; r: number; out: number; in: number }) =>
  mm(m.b, m.a, m.out, m.r, m.in);

/**
 * SVD factors agree up to the sign of each component (LAPACK's signs are not reproduced). A component with a zero
 * singular value has B's column 0 in both, and any unit vector of the null space in A: those rows are not compared.
 */
function closeUpToSign(got: any, want: any, what: string) {
  const a = Float64Array.from(got.a);
  const b = Float64Array.from(got.b);
  const bmax = maxAbs(want.b);
  for (let j = 0; j < got.r; j++) {
    let col = 0;
    for (let o = 0; o < got.out; o++) col = Math.max(col, Math.abs(want.b[o * got.r + j]));
    if (col < 1e-5 * bmax) a.set(want.a.subarray(j * got.in, (j + 1) * got.in), j * got.in);
    let dot = 0;
    for (let e = 0; e < got.in; e++) dot += a[j * got.in + e] * want.a[j * got.in + e];
    if (dot < 0) {
      for (let e = 0; e < got.in; e++) a[j * got.in + e] *= -1;
      for (let o = 0; o < got.out; o++) b[o * got.r + j] *= -1;
    }
  }
  // float32 SVD (PEFT) against float64 (lorakit): singular vectors move by ~ε·‖M‖/gap
  close(a, want.a, `${what} A`, 1e-4);
  close(b, want.b, `${what} B`, 1e-4);
}

const PEFT_EQUAL = Object.keys(INFO.cases).filter((c) => !c.includes('rslora') && c !== 'svd_clamp');

for (const name of PEFT_EQUAL) {
  test(`${name}: the same adapter as PEFT ${INFO.peft_version}'s add_weighted_adapter`, async () => {
    const c = INFO.cases[name];
    const got = await lorakitMerge(c);
    const peft = await readLora(join(ROOT, 'merges', name));
    assert.equal(got.config.r, peft.config.r);
    assert.equal(got.config.lora_alpha, peft.config.lora_alpha);
    assert.deepEqual(
      [...(got.config.target_modules as string[])].sort(),
      [...(peft.config.target_modules as string[])].sort(),
    );
    assert.deepEqual([...got.modules.keys()].sort(), [...peft.modules.keys()].sort());
    for (const [path, want] of peft.modules) {
      const m = got.modules.get(path)!;
      assert.equal(want.scaling, 1, 'PEFT writes r = lora_alpha');
      if (isSvdType(c.combination_type)) {
        closeUpToSign({ ...m }, want, `${name} ${path}`);
        close(product(m), product(want), `${name} ${path} BA`, 1e-5);
      } else {
        // factor types and cat: element for element, DARE's random masks included
        close(m.a, want.a, `${name} ${path} A`);
        close(m.b, want.b, `${name} ${path} B`);
      }
    }
  });
}

test('svd_clamp: PEFT clamps its own SVD factors to the quantile; clampFactors on them gives PEFT clamped ones', async () => {
  const plain = await readLora(join(ROOT, 'merges', 'svd'));
  const clamped = await readLora(join(ROOT, 'merges', 'svd_clamp'));
  let changed = 0;
  for (const [path, m] of plain.modules) {
    const a = Float64Array.from(m.a);
    const b = Float64Array.from(m.b);
    clampFactors(a, b, INFO.cases.svd_clamp.svd_clamp);
    changed += a.filter((v, i) => v !== m.a[i]).length;
    close(a, clamped.modules.get(path)!.a, `${path} A`, 1e-6);
    close(b, clamped.modules.get(path)!.b, `${path} B`, 1e-6);
  }
  assert.ok(changed > 0, 'the clamp changed some entries');
});

test('PEFT 0.18.1 svd applies each source scaling twice (SVD of Σ wᵢsᵢΔWᵢ); lorakit and PEFT ≥ 0.19 use Σ wᵢΔWᵢ', async () => {
  let checked = 0;
  for (const name of ['svd', 'svd_ranks']) {
    const c = INFO.cases[name];
    const old = await readLora(join(ROOT, 'pinned', name));
    const fixed = await lorakitMerge(c);
    const srcs = await Promise.all(c.adapters.map(source));
    for (const [path, want] of old.modules) {
      const m = fixed.modules.get(path)!;
      // the same sources with weight wᵢ·sᵢ reproduce 0.18.1: sᵢ is applied once in ΔWᵢ and once more in the weight
      const twice = combineModule(
        'svd',
        srcs.flatMap((s, i) => {
          const sm = s.modules.get(path);
          return sm ? [{ ...sm, weight: c.weights[i] * sm.scaling }] : [];
        }),
        { out: m.out, in: m.in, transposed: false },
        { rank: fixed.rank },
      );
      close(mm(twice.b, twice.a, m.out, fixed.rank, m.in), product(want), `${name} ${path} 0.18.1`, 1e-5);
      // where every source has sᵢ = 1 (t3 alone at up_proj: α = r = 4) the bug is invisible; elsewhere it is large
      const ratio = maxAbs(product(want)) / maxAbs(product(m));
      const unscaled = srcs.every((s) => (s.modules.get(path)?.scaling ?? 1) === 1);
      if (unscaled) assert.ok(Math.abs(ratio - 1) < 1e-4, `${name} ${path}: ratio ${ratio}`);
      else
        assert.ok(Math.abs(ratio - 1) > 0.5, `${name} ${path}: 0.18.1 differs from the right merge (ratio ${ratio})`);
      checked += unscaled ? 0 : 1;
    }
  }
  assert.ok(checked >= 8, `${checked} modules show the bug`);
});

test('rsLoRA sources: PEFT keeps use_rslora on the merged adapter and so scales it by √r; lorakit writes scaling 1', async () => {
  const { SafetensorsFile } = await import('../../../src/io/index.ts');
  for (const name of ['svd_rslora', 'cat_rslora']) {
    const c = INFO.cases[name];
    const got = await lorakitMerge(c);
    const peft = await readLora(join(ROOT, 'merges', name));
    assert.equal(peft.config.use_rslora, true);
    assert.equal(got.config.use_rslora, false);
    const f = await SafetensorsFile.open(join(ROOT, 'merges', name, 'expected.safetensors'));
    const srcs = await Promise.all(c.adapters.map(source));
    for (const [path, m] of got.modules) {
      // PEFT's own ΔW of its merged adapter is √r times what it merged
      const peftDelta = await f.readAs(`delta.${path}`, 'f32');
      const ours = product(m);
      close(
        Float64Array.from(peftDelta, (v) => v / Math.sqrt(got.rank)),
        ours,
        `${name} ${path}`,
        1e-5,
      );
      if (name === 'cat_rslora') {
        // cat is exact: lorakit's ΔW is Σ wᵢ·sᵢ·BᵢAᵢ with sᵢ = α/√r
        const want = new Float64Array(m.out * m.in);
        srcs.forEach((s, i) => {
          const sm = s.modules.get(path)!;
          product(sm).forEach((v, e) => (want[e] += c.weights[i] * sm.scaling * v));
        });
        close(ours, want, `${name} ${path} exact`, 1e-12);
      }
    }
    await f.close();
  }
});

test('mergeAdapterFolders writes a folder that reads back as the merge, and refuses to write into an input', async () => {
  const out = join(mkdtempSync(join(tmpdir(), 'lorakit-merge-')), 'merged');
  const c = INFO.cases.ties;
  const ins = c.adapters.map((n: string, i: number) => ({ dir: join(ROOT, 'adapters', n), weight: c.weights[i] }));
  const r = await mergeAdapterFolders({ adapters: ins, out, combination: 'ties', density: c.density });
  const back = await readLora(out);
  assert.equal(back.config.use_rslora, false);
  for (const [path, m] of r.modules) {
    close(back.modules.get(path)!.a, m.a, `${path} A`, 1e-6);
    close(back.modules.get(path)!.b, m.b, `${path} B`, 1e-6);
  }
  await assert.rejects(mergeAdapterFolders({ adapters: ins, out, combination: 'ties', density: 0.5 }), /not empty/);
  await assert.rejects(
    mergeAdapterFolders({ adapters: ins, out: ins[0].dir, combination: 'linear' }),
    /is or holds the input adapter/,
  );
  await assert.rejects(mergeAdapterFolders({ adapters: ins, out: `${out}2`, combination: 'ties' }), /needs a density/);
  await assert.rejects(
    mergeAdapterFolders({
      adapters: ins.slice(0, 1).concat({ dir: join(ROOT, 'adapters', 't4'), weight: 1 }),
      out: `${out}3`,
      combination: 'linear',
    }),
    /one rank/,
  );
  const dora = join(mkdtempSync(join(tmpdir(), 'lorakit-dora-')), 'a');
  const { mkdirSync, copyFileSync } = await import('node:fs');
  mkdirSync(dora);
  copyFileSync(join(ins[0].dir, 'adapter_model.safetensors'), join(dora, 'adapter_model.safetensors'));
  const cfg = JSON.parse(readFileSync(join(ins[0].dir, 'adapter_config.json'), 'utf8'));
  writeFileSync(join(dora, 'adapter_config.json'), JSON.stringify({ ...cfg, use_dora: true }));
  await assert.rejects(readLora(dora), /use_dora is true/);
});
