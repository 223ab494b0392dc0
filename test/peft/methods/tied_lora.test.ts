// Tied-LoRA against independent references: the toy model's logits and merged weights against a float64 host model
// with ΔW_l = s·diag(v_l)·B[:out]·diag(u_l)·A[:, :in] formed from the stored tensors; selective training (which
// tensors become trainable graph inputs, the count formula per choice); ΔW = 0 at init for every choice with a
// non-zero gradient on some trained factor (so training moves off the init); one shared pair serving layers of
// different sizes; the saved layout; the refusals. (Finite differences, save/load, resume: contract.test.ts.)
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { LorakitError } from '../../../src/errors.ts';
import { Graph, grad } from '../../../src/graph/index.ts';
import { SafetensorsFile } from '../../../src/io/index.ts';
import { Rng } from '../../../src/linalg/index.ts';
import { PeftModel, saveAdapter } from '../../../src/peft/index.ts';
import { compile } from '../../../src/runtime/index.ts';
import { assertAllclose } from '../../helpers.ts';
import { checkAgainstHost, graphLogits } from '../toy-host.ts';
import { IDS, LABELS, toyBase, toyLoss } from '../toy.ts';

const TARGETS = ['q_proj', 'c_fc']; // Linear 6→5, 5→6 and GPT-2 Conv1D 6→4: A [r, 6], B [6, r], all sliced somewhere
const PATHS = ['model.layers.0.q_proj', 'model.layers.1.q_proj', 'model.layers.1.c_fc'];

async function tied(config: Record<string, unknown>, seed = 3): Promise<PeftModel> {
  const peft = new PeftModel(toyBase());
  await peft.addAdapter('default', { peft_type: 'TIED_LORA', target_modules: TARGETS, ...config }, { seed });
  return peft;
}

/** Adds N(0, 0.5²) to every tensor of the adapter, trained or frozen, so every factor matters. */
function perturbAll(peft: PeftModel, seed = 7) {
  const a = peft.get('default');
  const rng = new Rng(seed);
  const move = (v: Float32Array) => v.map((x) => x + 0.5 * rng.normal());
  for (const s of a.shared.specs) a.shared.values[s.name] = move(a.shared.values[s.name]);
  for (const l of a.layers.values()) for (const s of l.specs) l.values[s.name] = move(l.values[s.name]);
}

/** ΔW [out, in] in float64 from the paper's formula and the stored tensors (A [r, in_max], B [out_max, r] sliced). */
function denseDelta(peft: PeftModel, path: string): Float64Array {
  const a = peft.get('default');
  const l = a.layers.get(path)!;
  const r = a.config.r as number;
  const s = (a.config.lora_alpha as number) / r;
  const [out, inn] = [l.info.outFeatures, l.info.inFeatures];
  const { tied_lora_A: A, tied_lora_B: B } = a.shared.values;
  const inMax = A.length / r;
  const { tied_lora_u: u, tied_lora_v: v } = l.values;
  const d = new Float64Array(out * inn);
  for (let j = 0; j < out; j++)
    for (let k = 0; k < inn; k++) {
      let acc = 0;
      for (let m = 0; m < r; m++) acc += B[j * r + m] * u[m] * A[m * inMax + k];
      d[j * inn + k] = s * v[j] * acc;
    }
  return d;
}

test('Tied-LoRA logits and merged weights equal a float64 host model with W0 + s·diag(v)·B·diag(u)·A per layer', async () => {
  for (const trainable of [
    ['A', 'B', 'u', 'v'],
    ['u', 'v'],
  ]) {
    const peft = await tied({ r: 3, lora_alpha: 6, trainable });
    perturbAll(peft);
    await checkAgainstHost(peft, new Map(PATHS.map((p) => [p, denseDelta(peft, p)])));
  }
});

test('one tied pair serves layers of different sizes: A [r, largest in], B [largest out, r], sliced per layer', async () => {
  const peft = await tied({ r: 2 });
  const a = peft.get('default');
  assert.deepEqual(
    a.shared.specs.map((s) => [s.name, s.shape]),
    [
      ['tied_lora_A', [2, 6]],
      ['tied_lora_B', [6, 2]],
    ],
  );
  // A's 6th column is read only by the layers with 6 inputs, B's 6th row only by the layer with 6 outputs
  const touched = async (edit: (A: Float32Array, B: Float32Array) => void) => {
    const p = await tied({ r: 2 });
    perturbAll(p);
    const before = PATHS.map((path) => denseDelta(p, path));
    edit(p.get('default').shared.values.tied_lora_A, p.get('default').shared.values.tied_lora_B);
    return PATHS.map((path, i) => denseDelta(p, path).some((x, j) => x !== before[i][j]));
  };
  assert.deepEqual(
    await touched((A) => {
      A[5] += 1;
      A[6 + 5] += 1;
    }),
    [true, false, true],
  );
  assert.deepEqual(
    await touched((_, B) => {
      B[5 * 2] += 1;
    }),
    [false, true, false],
  );
});

test('selective training: the chosen factors are the trainable graph inputs, counted by the paper formula', async () => {
  const cases: [string[], string[], number][] = [
    [['A', 'B', 'u', 'v'], ['a', 'b', 'vector'], 3 * 6 + 6 * 3 + (3 + 5) + (3 + 6) + (3 + 4)],
    [['u', 'v'], ['vector'], 3 + 5 + (3 + 6) + (3 + 4)],
    [['A', 'B'], ['a', 'b'], 3 * 6 + 6 * 3],
    [['v'], ['vector'], 5 + 6 + 4],
  ];
  for (const [trainable, roles, count] of cases) {
    const peft = await tied({ r: 3, trainable });
    const a = peft.get('default');
    const layers = [...a.layers.values()].map((l) => ({ layer: l.info, settings: l.settings }));
    assert.equal(a.method.trainableCount(a.config, layers), count, `count for ${trainable}`);
    const made = [...peft.trainableValues('default').values()].reduce((n, v) => n + v.length, 0);
    assert.equal(made, count, `tensors made for ${trainable}`);
    const g = new Graph('tied-handles');
    const { binding } = toyLoss(g, peft, 'default', { training: false });
    assert.deepEqual([...new Set(binding.trainables().map((h) => h.role))].sort(), roles, `roles for ${trainable}`);
  }
});

test('ΔW = 0 at init for every choice of trained factors, and some trained factor has a non-zero gradient', async () => {
  for (const trainable of [['A', 'B', 'u', 'v'], ['u', 'v'], ['A', 'u'], ['u'], ['A'], ['B']]) {
    const peft = await tied({ r: 3, trainable });
    for (const p of PATHS)
      assert.ok(
        denseDelta(peft, p).every((x) => x === 0),
        `ΔW = 0 on ${p} for ${trainable}`,
      );
    const g = new Graph('tied-grad');
    const { loss, binding } = toyLoss(g, peft, 'default', { training: false });
    const handles = binding.trainables();
    grad(
      loss,
      handles.map((h) => h.tensor),
    ).forEach((d, i) => g.output(`d${i}`, d));
    const feeds = Object.fromEntries([...peft.trainableValues('default')].map(([k, v]) => [k, v]));
    const out = await (await compile(g, { worker: false })).run({ ids: IDS, labels: LABELS, ...feeds });
    const norms = handles.map((_, i) => Math.hypot(...(out[`d${i}`].data as Float32Array)));
    assert.ok(
      norms.some((n) => n > 1e-4),
      `a gradient moves ${trainable} off the init (${norms})`,
    );
  }
});

test("a saved Tied-LoRA folder holds the tied pair once and each layer's u and v", async () => {
  const peft = await tied({ r: 2, trainable: ['A', 'u'] });
  const dir = mkdtempSync(join(tmpdir(), 'lk-tied-'));
  await saveAdapter(peft, 'default', dir);
  const st = await SafetensorsFile.open(join(dir, 'adapter_model.safetensors'));
  const keys = Object.fromEntries(st.names().map((k) => [k, st.info(k).shape]));
  await st.close();
  assert.deepEqual(keys, {
    'base_model.tied_lora_A': [2, 6],
    'base_model.tied_lora_B': [6, 2],
    'base_model.model.model.layers.0.q_proj.tied_lora_u': [2],
    'base_model.model.model.layers.0.q_proj.tied_lora_v': [5],
    'base_model.model.model.layers.1.q_proj.tied_lora_u': [2],
    'base_model.model.model.layers.1.q_proj.tied_lora_v': [6],
    'base_model.model.model.layers.1.c_fc.tied_lora_u': [2],
    'base_model.model.model.layers.1.c_fc.tied_lora_v': [4],
  });
  const base = await graphLogits(new PeftModel(toyBase()));
  assertAllclose(await graphLogits(peft), base, { atol: 0, rtol: 0, what: 'identity at init (u = 0)' });
});

test('Tied-LoRA refuses a factor named twice, an empty choice, and layer kinds it does not wrap', async () => {
  const code = (c: string, part: string) => (e: unknown) =>
    e instanceof LorakitError && e.code === c && e.message.includes(part);
  await assert.rejects(tied({ trainable: ['u', 'u'] }), code('LK_CONFIG_INVALID', 'trainable'));
  await assert.rejects(tied({ trainable: [] }), code('LK_CONFIG_INVALID', 'trainable'));
  await assert.rejects(tied({ trainable: ['w'] }), code('LK_CONFIG_INVALID', 'trainable'));
  await assert.rejects(tied({ target_modules: ['embed_tokens'] }), code('LK_UNSUPPORTED', 'embedding'));
});
