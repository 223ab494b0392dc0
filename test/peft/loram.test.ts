// LoRAM's host steps against independent references: the Taylor group scores against explicit loops over each
// projection's rows and columns, the plan keeping the best groups; and the recovery on the tiny Llama fixture: the
// recovered ΔW is the pruned adapter's ΔW at the kept rows/columns and zero elsewhere, and the full model running the
// recovered adapter under the plan's masks computes exactly what the pruned model computes with the adapter trained
// on it (the identity LoRAM relies on: pruned positions contribute nothing); on a plan whose layers keep different
// numbers of groups (the slicer pads them), ΔW of every projection against a float64 scatter of the pruned ΔW; and the
// refusal of adapters recovery cannot widen; and the committed PEFT fixtures (interop/check_loram.py): the recovery
// is the one torch recomputed from the plan, and lorakit computes with the recovered folder what PEFT computes.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Graph } from '../../src/graph/index.ts';
import { Rng } from '../../src/linalg/index.ts';
import { buildCausalLM, loadModel } from '../../src/models/index.ts';
import {
  MASK_INPUTS,
  PeftModel,
  adaptable,
  loadAdapter,
  planMasks,
  pruneSizes,
  recoverAdapter,
  saveAdapter,
  stepKey,
  taylorPlan,
  taylorScores,
  writeSliced,
} from '../../src/peft/index.ts';
import { compile } from '../../src/runtime/index.ts';
import { CASES as PRUNED_CASES, OUT_REL, makeCase } from '../../scripts/make-pruned-fixtures.ts';
import { LORAM_REL } from '../../scripts/make-loram-fixtures.ts';
import { recoverAdapterFolder } from '../../src/train/index.ts';
import { SafetensorsFile } from '../../src/io/index.ts';
import { assertAllclose } from '../helpers.ts';
import { logitsOf } from './logits.ts';

const tmp = await mkdtemp(join(tmpdir(), 'lorakit-loram-'));
after(() => rm(tmp, { recursive: true, force: true }));
const ROOT = new URL('../../', import.meta.url).pathname;
const LLAMA = join(ROOT, 'test/fixtures/models/llama');
const PROJ = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

test('Taylor scores sum |W ⊙ G| over each group’s rows and columns; the plan keeps the best groups', () => {
  const sizes = {
    num_hidden_layers: 1,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 3,
    intermediate_size: 6,
  };
  const D = 5;
  const r = new Rng(2);
  const shape: Record<string, [number, number]> = {
    q_proj: [12, D],
    k_proj: [6, D],
    v_proj: [6, D],
    o_proj: [D, 12],
    gate_proj: [6, D],
    up_proj: [6, D],
    down_proj: [D, 6],
  };
  const layer = Object.fromEntries(
    PROJ.map((p) => [
      p,
      { weight: r.normalArray(shape[p][0] * shape[p][1], 1), grad: r.normalArray(shape[p][0] * shape[p][1], 1) },
    ]),
  );
  const heads = [0, 0];
  const channels = new Array(6).fill(0);
  const at = (p: string, i: number, j: number) =>
    Math.abs(layer[p].weight[i * shape[p][1] + j] * layer[p].grad[i * shape[p][1] + j]);
  for (let g = 0; g < 2; g++) {
    for (let row = 6 * g; row < 6 * g + 6; row++) for (let j = 0; j < D; j++) heads[g] += at('q_proj', row, j); // 2 query heads of 3
    for (const p of ['k_proj', 'v_proj'])
      for (let row = 3 * g; row < 3 * g + 3; row++) for (let j = 0; j < D; j++) heads[g] += at(p, row, j);
    for (let i = 0; i < D; i++) for (let col = 6 * g; col < 6 * g + 6; col++) heads[g] += at('o_proj', i, col);
  }
  for (let c = 0; c < 6; c++) {
    for (const p of ['gate_proj', 'up_proj']) for (let j = 0; j < D; j++) channels[c] += at(p, c, j);
    for (let i = 0; i < D; i++) channels[c] += at('down_proj', i, c);
  }
  const s = taylorScores(sizes, layer);
  assertAllclose(s.heads, heads, { rtol: 1e-12, atol: 0, what: 'head groups' });
  assertAllclose(s.channels, channels, { rtol: 1e-12, atol: 0, what: 'channels' });
  const plan = taylorPlan(sizes, [layer], 0.5);
  const top = (v: number[], k: number) =>
    v
      .map((x, i) => [x, i])
      .sort((a, b) => b[0] - a[0])
      .slice(0, k)
      .map(([, i]) => i)
      .sort((a, b) => a - b);
  assert.deepEqual(plan.layers[0], { heads: top(heads, 1), channels: top(channels, 3) });
  assert.deepEqual(taylorPlan(sizes, [layer], 0.5, { skipLast: 1 }).layers[0], {
    heads: [0, 1],
    channels: [0, 1, 2, 3, 4, 5],
  });
});

/** Logits of `dir` on fixed ids, with an adapter folder (and LoRAPrune's masks of `masks`, if given). */
async function logits(dir: string, adapter: string, masks?: { heads: Float32Array; channels: Float32Array }) {
  const model = await loadModel(dir);
  try {
    const peft = new PeftModel(adaptable(model));
    const overrides = masks
      ? { loraprune: { total_steps: 1, kv_heads: pruneSizes(model).num_key_value_heads, skip_last: 0 } }
      : {};
    await loadAdapter(peft, adapter, 'default', { configOverrides: overrides });
    const g = new Graph('loram');
    const inputIds = g.input('input_ids', 'i64', [2, 6]);
    const binding = peft.bind(masks ? { train: 'default', feedStepInputs: true } : {});
    g.output('logits', buildCausalLM(model.context(g, { hooks: binding.hooks }), { inputIds }).logits);
    const feeds: Record<string, BigInt64Array | Float32Array> = {
      input_ids: BigInt64Array.from([1, 5, 9, 200, 31, 7, 1, 300, 2, 60, 61, 62].map(BigInt)),
    };
    if (masks) {
      Object.assign(feeds, Object.fromEntries(peft.trainableValues('default')));
      feeds[stepKey('default', { name: MASK_INPUTS.heads, layer: null })] = masks.heads;
      feeds[stepKey('default', { name: MASK_INPUTS.channels, layer: null })] = masks.channels;
    }
    return (await (await compile(g, { worker: false })).run(feeds)).logits.data as Float32Array;
  } finally {
    await model.close();
  }
}

test('the recovered adapter zero-fills the pruned positions and, masked, reproduces the pruned model', async () => {
  const full = await loadModel(LLAMA);
  const sizes = pruneSizes(full);
  const rng = new Rng(7);
  const pick = (n: number, k: number) =>
    Array.from({ length: n }, (_, i) => [rng.next(), i])
      .sort((a, b) => a[0] - b[0])
      .slice(0, k)
      .map(([, i]) => i)
      .sort((a, b) => a - b);
  const plan = { original: sizes, layers: [0, 1].map(() => ({ heads: pick(2, 1), channels: pick(128, 50) })) };
  const prunedDir = join(tmp, 'pruned');
  await writeSliced(full, plan, prunedDir);
  const pruned = await loadModel(prunedDir);
  const prunedPeft = new PeftModel(adaptable(pruned));
  await prunedPeft.addAdapter('default', { r: 3, lora_alpha: 6, target_modules: PROJ, init_lora_weights: false });
  const adapterDir = join(tmp, 'pruned-adapter');
  await saveAdapter(prunedPeft, 'default', adapterDir);
  const recovered = join(tmp, 'recovered');
  const fullPeft = new PeftModel(adaptable(full));
  await recoverAdapter(prunedPeft, 'default', plan, fullPeft, recovered);
  await pruned.close();
  const check = new PeftModel(adaptable(full));
  await loadAdapter(check, recovered);
  const q = check.get('default').layers.get('model.layers.0.self_attn.q_proj')!.values['lora_B.weight']; // [64, 3]
  const kept = plan.layers[0].heads[0];
  for (let row = 0; row < 64; row++) {
    const inKept = Math.floor(row / 32) === kept;
    const src = prunedPeft.get('default').layers.get('model.layers.0.self_attn.q_proj')!.values['lora_B.weight'];
    for (let j = 0; j < 3; j++)
      assert.equal(q[row * 3 + j], inKept ? src[(row % 32) * 3 + j] : 0, `q_proj B[${row}, ${j}]`);
  }
  const down = check.get('default').layers.get('model.layers.1.mlp.down_proj')!.values['lora_A.weight']; // [3, 128]
  const zeroCols = Array.from({ length: 128 }, (_, c) => c).filter((c) => !plan.layers[1].channels.includes(c));
  assert.ok(zeroCols.every((c) => [0, 1, 2].every((i) => down[i * 128 + c] === 0)));
  await full.close();
  const want = await logits(prunedDir, adapterDir);
  const got = await logits(LLAMA, recovered, planMasks(plan));
  assertAllclose(got, want, { atol: 2e-5, rtol: 0, what: 'masked full model + recovered vs pruned model + adapter' });
});

/** s·B·A of a layer's factors in float64, [out, in] row-major. */
function delta(
  b: Float32Array,
  a: Float32Array,
  r: number,
  s: number,
): { rows: number; cols: number; v: Float64Array } {
  const rows = b.length / r;
  const cols = a.length / r;
  const v = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++)
    for (let j = 0; j < cols; j++) {
      let acc = 0;
      for (let k = 0; k < r; k++) acc += b[i * r + k] * a[k * cols + j];
      v[i * cols + j] = s * acc;
    }
  return { rows, cols, v };
}

test('recovered ΔW is the pruned ΔW scattered into the full shape; padded groups are zero-filled too', async () => {
  const full = await loadModel(LLAMA);
  const sizes = pruneSizes(full);
  const rng = new Rng(11);
  const pick = (n: number, k: number) =>
    Array.from({ length: n }, (_, i) => [rng.next(), i])
      .sort((a, b) => a[0] - b[0])
      .slice(0, k)
      .map(([, i]) => i)
      .sort((a, b) => a - b);
  // Layer 0 keeps fewer groups than layer 1, so the sliced folder pads it with zeroed groups that the adapter trains
  // but the plan pruned: recovery must drop them.
  const plan = {
    original: sizes,
    layers: [
      { heads: [1], channels: pick(128, 40) },
      { heads: [0, 1], channels: pick(128, 60) },
    ],
  };
  const sliced = await writeSliced(full, plan, join(tmp, 'pruned-padded'));
  assert.deepEqual(
    sliced.padded.map((p) => [p.heads.length, p.channels.length]),
    [
      [1, 20],
      [0, 0],
    ],
  );
  const pruned = await loadModel(sliced.dir);
  const prunedPeft = new PeftModel(adaptable(pruned));
  const cfg = { r: 3, lora_alpha: 5, target_modules: PROJ, init_lora_weights: false };
  await prunedPeft.addAdapter('default', cfg);
  const recovered = join(tmp, 'recovered-padded');
  await recoverAdapter(prunedPeft, 'default', plan, new PeftModel(adaptable(full)), recovered);
  const back = new PeftModel(adaptable(full));
  await loadAdapter(back, recovered);
  // The test's own map from the pruned model's rows/columns to the full model's: each layer holds its kept groups and
  // its pads in ascending order, a group covering 32 q rows / o columns (2 query heads of 16), 16 k/v rows, 1 channel.
  const width: Record<string, number> = { q_proj: 32, o_proj: 32, k_proj: 16, v_proj: 16 };
  for (let i = 0; i < 2; i++) {
    for (const p of PROJ) {
      const path = `model.layers.${i}.${p.endsWith('_proj') && ['gate', 'up', 'down'].some((m) => p.startsWith(m)) ? 'mlp' : 'self_attn'}.${p}`;
      const heads = ['q_proj', 'k_proj', 'v_proj', 'o_proj'].includes(p);
      const kept = heads ? plan.layers[i].heads : plan.layers[i].channels;
      const pads = heads ? sliced.padded[i].heads : sliced.padded[i].channels;
      const w = width[p] ?? 1;
      const held = [...kept, ...pads]
        .sort((a, b) => a - b)
        .flatMap((g) => Array.from({ length: w }, (_, k) => g * w + k));
      const keptLines = new Set(kept.flatMap((g) => Array.from({ length: w }, (_, k) => g * w + k)));
      const src = prunedPeft.get('default').layers.get(path)!.values;
      const dst = back.get('default').layers.get(path)!.values;
      const small = delta(src['lora_B.weight'], src['lora_A.weight'], 3, 5 / 3);
      const big = delta(dst['lora_B.weight'], dst['lora_A.weight'], 3, 5 / 3);
      const want = new Float64Array(big.rows * big.cols);
      const outAxis = !['o_proj', 'down_proj'].includes(p);
      for (let x = 0; x < small.rows; x++)
        for (let y = 0; y < small.cols; y++) {
          const [row, col] = outAxis ? [held[x], y] : [x, held[y]];
          if (keptLines.has(outAxis ? row : col)) want[row * big.cols + col] = small.v[x * small.cols + y];
        }
      assert.equal(outAxis ? small.cols : small.rows, outAxis ? big.cols : big.rows, `${path}: unpruned side`);
      assertAllclose(big.v, want, { rtol: 1e-6, atol: 1e-9, what: `${path} ΔW` });
    }
  }
  await pruned.close();
  await full.close();
});

test('recovery refuses an adapter with tensors other than the two LoRA factors (DoRA)', async () => {
  const full = await loadModel(LLAMA);
  const plan = { original: pruneSizes(full), layers: [0, 1].map(() => ({ heads: [0], channels: [0, 1, 2, 3] })) };
  const dir = join(tmp, 'pruned-dora');
  await writeSliced(full, plan, dir);
  const pruned = await loadModel(dir);
  const peft = new PeftModel(adaptable(pruned));
  await peft.addAdapter('default', { r: 2, target_modules: ['q_proj'], use_dora: true });
  await assert.rejects(recoverAdapter(peft, 'default', plan, new PeftModel(adaptable(full)), join(tmp, 'no')), {
    code: 'LK_UNSUPPORTED',
    message: /lora_magnitude_vector|magnitude|expected one lora_A and one lora_B/,
  });
  await pruned.close();
  await full.close();
});

for (const name of Object.keys(PRUNED_CASES)) {
  test(`${name}: recovery is the one torch recomputed, and the recovered folder computes what PEFT computes`, async () => {
    const fixture = join(ROOT, LORAM_REL, name);
    const report = JSON.parse(await readFile(join(fixture, 'peft.json'), 'utf8'));
    const prunedDir = await makeCase(name, join(tmp, 'cases'));
    const base = join(ROOT, 'test/fixtures/models', PRUNED_CASES[name].base);
    const out = join(tmp, `recovered-${name}`);
    await recoverAdapterFolder({ prunedModel: prunedDir, adapter: join(fixture, 'pruned-adapter'), model: base, out });
    const [mine, theirs] = [
      await SafetensorsFile.open(join(out, 'adapter_model.safetensors')),
      await SafetensorsFile.open(join(fixture, 'recovered', 'adapter_model.safetensors')),
    ];
    assert.equal(mine.names().length, report.recovered_tensors);
    assert.deepEqual(mine.names().sort(), theirs.names().sort());
    for (const k of mine.names())
      assert.deepEqual(await mine.readAs(k, 'f32'), await theirs.readAs(k, 'f32'), `${name}: ${k}`);
    await mine.close();
    await theirs.close();
    const inputs = JSON.parse(await readFile(join(ROOT, OUT_REL, name, 'inputs.json'), 'utf8'));
    const model = await loadModel(base);
    let got: Float32Array;
    try {
      const peft = new PeftModel(adaptable(model));
      await loadAdapter(peft, join(fixture, 'recovered'));
      got = await logitsOf(model, inputs, { hooks: peft.bind({}).hooks });
    } finally {
      await model.close();
    }
    const st = await SafetensorsFile.open(join(fixture, 'peft_logits.safetensors'));
    assertAllclose(got, await st.readAs('logits', 'f32'), { atol: 1e-4, rtol: 0, what: `${name} vs PEFT` });
    await st.close();
  });
}
