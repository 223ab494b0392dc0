// PaCA against independent references: the toy model's logits against a float64 host model whose weights have the
// columns idx replaced by s·P (Linear and Conv1D, where the [out, in] matrix's columns are the stored rows); merging
// writes exactly those columns and leaves every other weight bit for bit; the init (distinct random input columns,
// P = W0[:, idx] / s, an unchanged model to float32 rounding); the official fork's folder (peft_type PACA, its config
// keys only, paca_w [out, r] F32, paca_indices [r] I64; files with bad indices refused); the count r·out; the refusals.
// (Gradients of P against finite differences, resume: test/peft/contract.test.ts.)
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { LorakitError } from '../../../src/errors.ts';
import { SafetensorsFile, type TensorToWrite, writeSafetensors } from '../../../src/io/index.ts';
import { loadAdapter, PeftModel, saveAdapter } from '../../../src/peft/index.ts';
import { assertAllclose } from '../../helpers.ts';
import { hostLogits, toyMatrix } from '../host.ts';
import { MODULES, perturbAdapter, toyBase, toyLogits, toyWeights } from '../toy.ts';

const TARGETS = ['q_proj', 'c_fc']; // Linear 6→5, 5→6, Conv1D 6→4
const isLorakitError =
  (code: string, ...parts: string[]) =>
  (e: unknown) =>
    e instanceof LorakitError && e.code === code && parts.every((p) => e.message.includes(p));

async function pacaOn(config: Record<string, unknown>, seed = 3): Promise<PeftModel> {
  const peft = new PeftModel(toyBase());
  await peft.addAdapter('default', { peft_type: 'PACA', target_modules: TARGETS, ...config }, { seed });
  return peft;
}

/** ΔW [out, in] in float64: s·P − W0 on the columns idx, zero elsewhere. */
function columnDelta(peft: PeftModel, path: string): Float64Array {
  const l = peft.get('default').layers.get(path)!;
  const [out, inn, r, s] = [l.info.outFeatures, l.info.inFeatures, l.settings.r, l.settings.scaling];
  const w0 = toyMatrix(path);
  const d = new Float64Array(out * inn);
  for (let k = 0; k < r; k++) {
    const col = l.values.paca_indices[k];
    for (let row = 0; row < out; row++) d[row * inn + col] = s * l.values.paca_w[row * r + k] - w0[row * inn + col];
  }
  return d;
}

test('PaCA logits equal a float64 host model with W0’s columns idx replaced by s·P; merging writes exactly them', async () => {
  const peft = await pacaOn({ r: 3, paca_alpha: 5, alpha_pattern: { c_fc: 2 } });
  perturbAdapter(peft);
  const paths = [...peft.get('default').layers.keys()];
  const deltas = new Map(paths.map((p) => [p, columnDelta(peft, p)]));
  const want = hostLogits(deltas);
  assert.ok(
    want.some((v, i) => Math.abs(v - hostLogits(new Map())[i]) > 0.05),
    'the adapter changes the logits',
  );
  assertAllclose(await toyLogits(peft), want, { atol: 1e-5, what: 'unmerged' });
  await peft.merge();
  const merged = peft.weightOverrides();
  for (const m of MODULES.filter((q) => deltas.has(q.path))) {
    if (m.kind === 'embedding') continue;
    const l = peft.get('default').layers.get(m.path)!;
    const [W0, W] = [toyWeights().get(m.weightName)!, merged.get(m.weightName)!];
    const [out, inn]: [number, number] = [m.outFeatures, m.inFeatures];
    const cols = new Map([...l.values.paca_indices].map((c, k) => [c, k]));
    for (let i = 0; i < W.length; i++) {
      const [row, col]: [number, number] =
        m.kind === 'conv1d' ? [i % out, Math.floor(i / out)] : [Math.floor(i / inn), i % inn];
      const k = cols.get(col);
      const expected: number =
        k === undefined ? W0[i] : Math.fround(l.settings.scaling * l.values.paca_w[row * l.settings.r + k]);
      assert.equal(W[i], expected, `${m.path} [${row}, ${col}]`);
    }
  }
  assertAllclose(await toyLogits(peft), want, { atol: 1e-5, what: 'merged' });
});

test('init: r distinct random input columns per layer, P = W0[:, idx]/s, the model unchanged to rounding', async () => {
  const peft = await pacaOn({ r: 4, paca_alpha: 3 }); // s = 0.75: (W0/s)·s is W0 only to float32 rounding
  const a = peft.get('default');
  for (const [path, l] of a.layers) {
    const idx = [...l.values.paca_indices];
    assert.equal(new Set(idx).size, 4, `${path}: distinct`);
    assert.ok(
      idx.every((c) => Number.isInteger(c) && c >= 0 && c < l.info.inFeatures),
      path,
    );
    const w0 = toyMatrix(path);
    const expected = Float32Array.from({ length: l.info.outFeatures * 4 }, (_, i) =>
      Math.fround(w0[Math.floor(i / 4) * l.info.inFeatures + idx[i % 4]] / 0.75),
    );
    assert.deepEqual(l.values.paca_w, expected, `${path}: P = W0[:, idx] / s`);
  }
  assertAllclose(await toyLogits(peft), await toyLogits(null), { atol: 1e-6, rtol: 1e-6, what: 'at init' });
  // every column gets picked: over seeds, the 6 inputs of layer 0 are chosen about equally often
  const counts = new Array(6).fill(0);
  for (let seed = 0; seed < 150; seed++)
    for (const c of (await pacaOn({ r: 2, target_modules: ['layers.0.q_proj'] }, seed)).get('default').layers.values())
      for (const i of c.values.paca_indices) counts[i]++;
  assert.ok(
    counts.every((n) => n > 25 && n < 75),
    `column counts ${counts}`,
  );
  const layers = [...a.layers.values()].map((l) => ({ layer: l.info, settings: l.settings }));
  assert.equal(a.method.trainableCount(a.config, layers), 4 * (5 + 6 + 4));
});

test("a saved folder is the official fork's: PACA, its PacaConfig keys only, paca_w F32, paca_indices I64", async () => {
  const peft = await pacaOn({ r: 2, paca_alpha: 4 });
  perturbAdapter(peft);
  const dir = mkdtempSync(join(tmpdir(), 'lk-paca-'));
  await saveAdapter(peft, 'default', dir);
  const config = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
  // the fork's PacaConfig fields (an older PEFT's dataclass, which fails on unknown keys)
  const fork = new Set(
    'alpha_pattern auto_mapping base_model_name_or_path bias fan_in_fan_out gradient_accumulation_steps inference_mode layer_replication layers_pattern layers_to_transform megatron_config megatron_core modules_to_save paca_alpha peft_type r rank_pattern revision target_modules task_type'.split(
      ' ',
    ),
  );
  assert.deepEqual(
    Object.keys(config).filter((k) => !fork.has(k)),
    [],
  );
  assert.equal(config.peft_type, 'PACA');
  const st = await SafetensorsFile.open(join(dir, 'adapter_model.safetensors'));
  const info = Object.fromEntries(st.names().map((k) => [k.replace('base_model.model.model.', ''), st.info(k)]));
  assert.deepEqual(Object.fromEntries(Object.entries(info).map(([k, v]) => [k, [v.dtype, v.shape]])), {
    'layers.0.q_proj.paca_w': ['F32', [5, 2]],
    'layers.0.q_proj.paca_indices': ['I64', [2]],
    'layers.1.q_proj.paca_w': ['F32', [6, 2]],
    'layers.1.q_proj.paca_indices': ['I64', [2]],
    'layers.1.c_fc.paca_w': ['F32', [4, 2]],
    'layers.1.c_fc.paca_indices': ['I64', [2]],
  });
  const saved = await st.readAs('base_model.model.model.layers.1.c_fc.paca_indices', 'i64');
  await st.close();
  assert.deepEqual([...saved].map(Number), [
    ...peft.get('default').layers.get('model.layers.1.c_fc')!.values.paca_indices,
  ]);
  const loaded = new PeftModel(toyBase());
  await loadAdapter(loaded, dir, 'default', { seed: 77 }); // another seed: the file's indices win
  assertAllclose(await toyLogits(loaded), await toyLogits(peft), { atol: 0, rtol: 0, what: 'reloaded' });
});

test('a folder whose paca_indices repeat a column, leave the layer or are stored as floats is refused', async () => {
  const peft = await pacaOn({ r: 2, paca_alpha: 4 });
  const dir = mkdtempSync(join(tmpdir(), 'lk-paca-bad-'));
  await saveAdapter(peft, 'default', dir);
  const file = join(dir, 'adapter_model.safetensors');
  const st = await SafetensorsFile.open(file);
  const tensors: Record<string, TensorToWrite> = {};
  for (const k of st.names()) {
    const { dtype, shape } = st.info(k);
    tensors[k] =
      dtype === 'I64'
        ? { dtype, shape, data: await st.readAs(k, 'i64') }
        : { dtype: 'F32', shape, data: await st.readAs(k, 'f32') };
  }
  await st.close();
  const key = 'base_model.model.model.layers.1.c_fc.paca_indices'; // Conv1D 6→4: columns 0..5
  const cases: [TensorToWrite, string][] = [
    [{ dtype: 'I64', shape: [2], data: BigInt64Array.from([1n, 1n]) }, 'not a distinct input column in [0, 6)'],
    [{ dtype: 'I64', shape: [2], data: BigInt64Array.from([0n, 6n]) }, 'not a distinct input column in [0, 6)'],
    [{ dtype: 'F32', shape: [2], data: Float32Array.from([0, 1]) }, 'expected an integer tensor'],
  ];
  for (const [bad, message] of cases) {
    await writeSafetensors(file, { ...tensors, [key]: bad }, { format: 'pt' });
    await assert.rejects(
      loadAdapter(new PeftModel(toyBase()), dir, 'default'),
      isLorakitError('LK_FILE_INVALID', 'paca_indices', message),
    );
  }
});

test('PaCA refuses bias "paca_only", more columns than inputs, embeddings and exclude_modules', async () => {
  await assert.rejects(pacaOn({ bias: 'paca_only' }), isLorakitError('LK_UNSUPPORTED', 'paca_only'));
  await assert.rejects(pacaOn({ r: 6 }), isLorakitError('LK_CONFIG_INVALID', 'model.layers.1.q_proj', 'r = 6'));
  await assert.rejects(pacaOn({ target_modules: ['embed_tokens'] }), isLorakitError('LK_UNSUPPORTED', 'embedding'));
  await assert.rejects(pacaOn({ exclude_modules: ['c_fc'] }), isLorakitError('LK_UNSUPPORTED', 'exclude_modules'));
});
