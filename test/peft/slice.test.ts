// Structured pruning made physical, against transformers and the masked model: the folders
// scripts/make-pruned-fixtures.ts writes are stable (the checksums interop/check_pruned.py recorded after
// transformers loaded them without missing or unexpected keys and found them equal to the torch model with the pruned
// rows zeroed); lorakit computes transformers' logits from them, and the same logits as the full model running
// LoRAPrune's masks (the loraprune variant fed the plan's masks); a layer keeping fewer groups is padded with zeroed
// ones; bad plans and other families are refused.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LorakitError } from '../../src/errors.ts';
import { Graph } from '../../src/graph/index.ts';
import { SafetensorsFile } from '../../src/io/index.ts';
import { buildCausalLM, loadModel } from '../../src/models/index.ts';
import {
  MASK_INPUTS,
  PeftModel,
  adaptable,
  planMasks,
  pruneSizes,
  readPlan,
  stepKey,
  writeSliced,
} from '../../src/peft/index.ts';
import { compile } from '../../src/runtime/index.ts';
import { CASES, OUT_REL, ROOT, makeCase } from '../../scripts/make-pruned-fixtures.ts';
import { assertAllclose } from '../helpers.ts';
import { logitsOf } from './logits.ts';

const tmp = await mkdtemp(join(tmpdir(), 'lorakit-slice-'));
after(() => rm(tmp, { recursive: true, force: true }));
const PROJ = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

/** Logits of the full model with LoRAPrune's masks fed (B = 0: the LoRA itself is the identity). */
async function maskedLogits(baseDir: string, plan: Awaited<ReturnType<typeof readPlan>>, ids: number[][]) {
  const model = await loadModel(baseDir);
  try {
    const sizes = pruneSizes(model);
    const peft = new PeftModel(adaptable(model));
    const loraprune = { total_steps: 10, kv_heads: sizes.num_key_value_heads, skip_last: 0 };
    await peft.addAdapter('default', { r: 2, target_modules: PROJ, loraprune });
    const g = new Graph('masked');
    const shape = [ids.length, ids[0].length];
    const inputIds = g.input('input_ids', 'i64', shape);
    const binding = peft.bind({ train: 'default', feedStepInputs: true });
    g.output('logits', buildCausalLM(model.context(g, { hooks: binding.hooks }), { inputIds }).logits);
    const masks = planMasks(plan);
    const feeds = {
      input_ids: BigInt64Array.from(ids.flat(), BigInt),
      ...Object.fromEntries(peft.trainableValues('default')),
      [stepKey('default', { name: MASK_INPUTS.heads, layer: null })]: masks.heads,
      [stepKey('default', { name: MASK_INPUTS.channels, layer: null })]: masks.channels,
    };
    return (await (await compile(g, { worker: false })).run(feeds)).logits.data as Float32Array;
  } finally {
    await model.close();
  }
}

for (const name of Object.keys(CASES)) {
  test(`${name}: the sliced folder is the one transformers checked, and computes the masked model`, async () => {
    const fixture = join(ROOT, OUT_REL, name);
    const report = JSON.parse(await readFile(join(fixture, 'transformers.json'), 'utf8'));
    const dir = await makeCase(name, tmp);
    for (const [f, sha] of Object.entries(report.sha256)) {
      const got = createHash('sha256')
        .update(await readFile(join(dir, f)))
        .digest('hex');
      assert.equal(got, sha, `${name}/model/${f} is the folder transformers loaded`);
    }
    const inputs = JSON.parse(await readFile(join(fixture, 'inputs.json'), 'utf8'));
    const model = await loadModel(dir);
    let got: Float32Array;
    try {
      assert.equal(model.paramCount, report.parameters.pruned);
      got = await logitsOf(model, inputs);
    } finally {
      await model.close();
    }
    const st = await SafetensorsFile.open(join(fixture, 'transformers_logits.safetensors'));
    assertAllclose(got, await st.readAs('logits', 'f32'), { atol: 1e-4, rtol: 0, what: 'vs transformers' });
    await st.close();
    const plan = await readPlan(dir);
    const masked = await maskedLogits(join(ROOT, inputs.base_model), plan, inputs.input_ids);
    assertAllclose(got, masked, { atol: 2e-5, rtol: 0, what: 'vs the masked full model' });
  });
}

test('a layer keeping fewer groups than the widest is padded with zeroed groups; bad plans are refused', async () => {
  const model = await loadModel(join(ROOT, 'test/fixtures/models/llama'));
  try {
    const sizes = pruneSizes(model);
    const all = Array.from({ length: 128 }, (_, k) => k);
    const plan = {
      original: sizes,
      layers: [
        { heads: [1], channels: all.slice(0, 10) },
        { heads: [0, 1], channels: all },
      ],
    };
    const r = await writeSliced(model, plan, join(tmp, 'padded'));
    assert.deepEqual(r.padded, [
      { heads: [0], channels: all.slice(10) },
      { heads: [], channels: [] },
    ]);
    assert.equal(r.sizes.intermediate_size, 128);
    const sliced = await loadModel(r.dir);
    const q = await sliced.read('model.layers.0.self_attn.q_proj.weight'); // [4·16, 64]: group 0 (rows 0..31) zero
    assert.ok(q.subarray(0, 32 * 64).every((v) => v === 0) && q.subarray(32 * 64).some((v) => v !== 0));
    await sliced.close();
    const bad = (layers: { heads: number[]; channels: number[] }[], what: string) =>
      assert.rejects(
        writeSliced(model, { original: sizes, layers }, join(tmp, 'bad')),
        (e: unknown) => e instanceof LorakitError && e.code === 'LK_INVALID_ARGUMENT' && e.message.includes(what),
      );
    await bad([{ heads: [], channels: all }, plan.layers[1]], 'layer 0 keeps heads []');
    await bad([{ heads: [1, 0], channels: all }, plan.layers[1]], 'layer 0 keeps heads [1, 0]');
    await bad([plan.layers[1]], '1 layers');
  } finally {
    await model.close();
  }
  const gpt2 = await loadModel(join(ROOT, 'test/fixtures/models/gpt2'));
  try {
    assert.throws(
      () => pruneSizes(gpt2),
      (e: unknown) => e instanceof LorakitError && e.code === 'LK_UNSUPPORTED' && e.message.includes('gpt2'),
    );
  } finally {
    await gpt2.close();
  }
});
