// The adapter contract: every registered method and variant, through the same checks on the toy model (PEFT's
// TEST_CASES matrix, once): identity at init where the method claims it; merged == unmerged (or a clear refusal);
// float64 finite differences of every element of every trainable tensor; save -> load identical; stop and resume
// bit-identical to an uninterrupted run; the trainable count equals the method's formula; a clear error for a
// layer kind the method does not support. Adding a method adds one row to CASES.
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { LorakitError } from '../../src/errors.ts';
import { Graph, grad } from '../../src/graph/index.ts';
import { Rng, seedFrom } from '../../src/linalg/index.ts';
import {
  type AddAdapterOptions,
  canMerge,
  type LayerInfo,
  type LayerKind,
  loadAdapter,
  PeftModel,
  REGISTRY,
  resolveConfig,
  saveAdapter,
} from '../../src/peft/index.ts';
import { compile } from '../../src/runtime/index.ts';
import { train } from '../../src/train/index.ts';
import { assertAllclose, centralDifferences } from '../helpers.ts';
import { CONV, IDS, LABELS, MODULES, toyBase, toyForward, toyLoss, toyTask, toyWeights } from './toy.ts';

interface Case {
  /** The registry entries this row proves (a method, or a method and its variants). */
  entries: string[];
  config: Record<string, unknown>;
  /** Whether the adapter is initialised to leave the model unchanged: bit for bit, to 1e-5, or not at all. */
  identity: 'exact' | 'close' | 'none';
  /** Run the toy model with its conv block (finite differences then pass through a float32 Conv). */
  conv?: boolean;
  /**
   * Roles whose gradient is by design not the derivative of the loss (DoRA detaches its norm, paper §4.3): their
   * finite-difference check is skipped here and replaced by the method's own test against the paper's formula.
   */
  surrogate?: string[];
  /** Options of addAdapter beyond the seed (a calibrate function for initialisers that read gradients). */
  add?: Omit<AddAdapterOptions, 'seed' | 'source'>;
}

/**
 * Calibration gradients for the toy, which has no data: a fixed N(0, 0.1²) matrix per layer (the contract checks the
 * platform's invariants, not the gradient; lora_ga.test.ts checks real ones against PEFT's).
 */
async function toyCalibrate(layers: readonly LayerInfo[]) {
  const size = (l: LayerInfo) => l.weightShape.reduce((a, b) => a * b, 1);
  return new Map(layers.map((l) => [l.path, new Rng(seedFrom(7, l.path)).normalArray(size(l), 0.1)]));
}

const LINEAR_ALL = ['q_proj', 'c_fc'];

export const CASES: Case[] = [
  {
    entries: ['lora'],
    config: { r: 2, lora_alpha: 3, target_modules: ['embed_tokens', ...LINEAR_ALL] },
    identity: 'exact',
  },
  {
    entries: ['lora', 'pissa'],
    config: { r: 2, lora_alpha: 3, init_lora_weights: 'pissa', target_modules: LINEAR_ALL },
    identity: 'close',
  },
  {
    entries: ['lora', 'olora'],
    config: { r: 2, lora_alpha: 4, init_lora_weights: 'olora', target_modules: LINEAR_ALL },
    identity: 'close',
  },
  {
    entries: ['lora', 'dora'],
    config: { r: 2, lora_alpha: 4, use_dora: true, target_modules: LINEAR_ALL },
    identity: 'close',
    surrogate: ['a', 'b'],
  },
  {
    entries: ['lora', 'dylora'],
    config: { r: 3, lora_alpha: 6, target_modules: ['embed_tokens', ...LINEAR_ALL], dylora: { min_rank: 1 } },
    identity: 'exact',
  },
  {
    entries: ['lora', 'slora'],
    config: { r: 2, lora_alpha: 3, init_lora_weights: 's_lora', target_modules: LINEAR_ALL },
    identity: 'exact',
  },
  // the official NLoRA start: W0's Nyström blocks with nothing subtracted, so the model moves at init
  {
    entries: ['lora', 'slora', 'nlora'],
    config: { r: 2, lora_alpha: 3, init_lora_weights: 'n_lora', target_modules: LINEAR_ALL },
    identity: 'none',
  },
  {
    entries: ['lora', 'slora', 'nlora', 'inttune'],
    config: {
      r: 2,
      lora_alpha: 4,
      init_lora_weights: 'n_lora',
      nlora_config: { nystrom_core: 'pinv' },
      inttune: true,
      target_modules: LINEAR_ALL,
    },
    identity: 'close',
  },
  // A block-diagonal on the 6 → 5 layer, B on the 5 → 6 one (2 blocks each)
  {
    entries: ['lora', 'bdlora'],
    config: {
      r: 2,
      lora_alpha: 3,
      target_modules: ['q_proj'],
      use_bdlora: { target_modules_bd_a: ['layers.0.q_proj'], target_modules_bd_b: ['layers.1.q_proj'], nblocks: 2 },
    },
    identity: 'exact',
  },
  {
    entries: ['lora', 'ffa_lora'],
    config: { r: 2, lora_alpha: 3, target_modules: LINEAR_ALL, ffa_lora: { seed: 7 } },
    identity: 'exact',
  },
  {
    entries: ['lora', 'matryoshka'],
    config: { r: 3, lora_alpha: 6, target_modules: LINEAR_ALL, matryoshka: { train_ranks: [1, 3] } },
    identity: 'exact',
  },
  {
    entries: ['lora', 'mask_target'],
    config: { r: 2, lora_alpha: 3, target_modules: LINEAR_ALL, mask_target: { lambda: 0.7 } },
    identity: 'exact',
  },
  {
    entries: ['lora'],
    config: { r: 2, lora_alpha: 3, target_modules: ['conv', 'c_fc'] },
    identity: 'exact',
    conv: true,
  },
  {
    entries: ['lora', 'dora'],
    config: { r: 2, lora_alpha: 4, use_dora: true, target_modules: ['conv'] },
    identity: 'close',
    conv: true,
    surrogate: ['a', 'b'],
  },
  { entries: ['vera'], config: { peft_type: 'VERA', r: 3, target_modules: LINEAR_ALL }, identity: 'exact' },
  // one A, B pair for layers 6→5, 5→6 and 6→4 (sliced), trained with every layer's u and v
  {
    entries: ['tied_lora'],
    config: { peft_type: 'TIED_LORA', r: 3, lora_alpha: 6, target_modules: LINEAR_ALL },
    identity: 'exact',
  },
  // vector_length 1 divides every toy layer; the bank and the logits train (ΔW ≠ 0 at init, as in the paper)
  {
    entries: ['vblora'],
    config: { peft_type: 'VBLORA', r: 2, num_vectors: 5, vector_length: 1, topk: 2, target_modules: LINEAR_ALL },
    identity: 'none',
  },
  {
    entries: ['unilora'],
    config: { peft_type: 'UNILORA', r: 2, theta_d_length: 7, target_modules: LINEAR_ALL },
    identity: 'none',
  },
  // min(in, out) = out on layer 0 and c_fc, = in on layer 1: both of PEFT's orientations
  {
    entries: ['randlora'],
    config: { peft_type: 'RANDLORA', r: 2, randlora_alpha: 4, target_modules: LINEAR_ALL },
    identity: 'exact',
  },
  {
    // the update rule replaces the optimizer for every adapted layer (B = 0 at init: its first step takes the guard)
    entries: ['lora', 'lora_pro'],
    config: { r: 2, lora_alpha: 3, lora_pro: {}, target_modules: ['embed_tokens', ...LINEAR_ALL] },
    identity: 'exact',
  },
  {
    entries: ['lora', 'lora_pro'],
    config: { r: 2, lora_alpha: 4, lora_pro: { mode: 'lowrank' }, target_modules: LINEAR_ALL },
    identity: 'exact',
  },
  // AltLoRA+ alternating every step from the first (B-only at step 1 while B = 0): the phase input, the in-graph
  // inverses and all eight state slots per layer go through the resume check
  {
    entries: ['lora', 'altlora'],
    config: {
      r: 2,
      lora_alpha: 3,
      altlora: { plus: true, alternate: { phase_length: 1, first: 'B', joint_steps: 0 } },
      target_modules: ['embed_tokens', ...LINEAR_ALL],
    },
    identity: 'exact',
  },
  // scale 1 (α = r), no dropout; per-row rates on embedding, Linear and Conv1D factors
  {
    entries: ['lora', 'allora'],
    config: { r: 2, lora_alpha: 2, allora: {}, target_modules: ['embed_tokens', ...LINEAR_ALL] },
    identity: 'exact',
  },
  // λ = 0.3: every step of the resume check shrinks A visibly (B = 0 at init); a Conv2d layer too
  {
    entries: ['lora', 'stable_lora'],
    config: { r: 2, lora_alpha: 3, stable_lora: { shrink_ratio: 0.3 }, target_modules: ['conv', ...LINEAR_ALL] },
    identity: 'exact',
    conv: true,
  },
  {
    // layer 1's q_proj (6 rows) in 3 groups: the cubic schedule prunes one group at step 4 (decided from the rule's
    // importance state after step 3), so the resumed run must restore the rule state to draw the same mask
    entries: ['lora', 'loraprune'],
    config: {
      r: 2,
      lora_alpha: 3,
      target_modules: ['layers.1.q_proj'],
      loraprune: { total_steps: 4, kv_heads: 3, prune_freq: 1, warmup: 0, cooldown: 0, skip_last: 0 },
    },
    identity: 'exact',
  },
  // one adapted layer: the official forward sends no gradient through a = A·x (no_grad), so a lower adapted layer's
  // gradient is by design not the loss's derivative; B never moves the routing (a and d do), so the loss is smooth
  // in B and the finite differences see no routing flip
  {
    entries: ['flylora'],
    config: { peft_type: 'FLYLORA', r: 4, top_k: 2, lora_alpha: 8, bias_u: 0.01, target_modules: ['c_fc'] },
    identity: 'exact',
  },
  // s = 4/2 = 2 (a power of two): s·(W0/s) is W0 bit for bit, so the model is unchanged at init
  {
    entries: ['paca'],
    config: { peft_type: 'PACA', r: 2, paca_alpha: 4, target_modules: LINEAR_ALL },
    identity: 'exact',
  },
  {
    entries: ['lora', 'lora_ga'],
    config: { r: 2, lora_alpha: 3, init_lora_weights: 'lora_ga', lora_ga_config: {}, target_modules: LINEAR_ALL },
    identity: 'close',
    add: { calibrate: toyCalibrate },
  },
  // R ~ N(0, 1e-5²) at init: ΔW is small, not zero
  { entries: ['lora_xs'], config: { peft_type: 'LORA_XS', r: 2, target_modules: LINEAR_ALL }, identity: 'none' },
  {
    entries: ['lora_xs', 'lora_sb'],
    config: {
      peft_type: 'LORA_XS',
      r: 2,
      lora_alpha: 4,
      init_lora_weights: 'lora_sb',
      lora_sb_config: { step_size: 0.05 },
      target_modules: LINEAR_ALL,
    },
    identity: 'none',
    add: { calibrate: toyCalibrate },
  },
  // in 6 = 3 shards of 2; in 5 = 2 shards and a partial one
  { entries: ['miss'], config: { peft_type: 'MISS', r: 2, target_modules: ['q_proj'] }, identity: 'exact' },
  // the toy's sizes (6→5, 5→6) tile only into 1×1 blocks: W' = W·(1 + t_p) + t_p per output row, still nonlinear in W
  {
    entries: ['bone'],
    config: { peft_type: 'BONE', r: 1, init_weights: 'bat', target_modules: ['q_proj'] },
    identity: 'exact',
  },
  // the residual W0 − σ·P·L_r·diag(D_r)·U_r replaces W0: identity up to rounding
  { entries: ['loldu'], config: { peft_type: 'LOLDU', r: 2, target_modules: LINEAR_ALL }, identity: 'close' },
  // k = 5, 5, 4: r 2 scaled values and a rank-2 X·Y on the other 3 or 2; Y = 0 at init gives ΔW = 0 bit for bit
  { entries: ['salt'], config: { peft_type: 'SALT', r: 2, r_lora: 2, target_modules: LINEAR_ALL }, identity: 'exact' },
  // the conv family of the SAH U-Net paper on the toy's 3×1 conv: ΔW = 0 at init; DoRA's norm is detached (§4.3), so
  // its factors' gradients are checked against the detached-norm formula in conv-family.test.ts
  {
    entries: ['lora_c'],
    config: { peft_type: 'LORA_C', r: 2, lora_alpha: 4, target_modules: ['conv'] },
    identity: 'exact',
    conv: true,
  },
  {
    entries: ['conv_lora'],
    config: { peft_type: 'CONV_LORA', r: 2, lora_alpha: 4, target_modules: ['conv'] },
    identity: 'exact',
    conv: true,
  },
  {
    entries: ['cp_lora'],
    config: { peft_type: 'CP_LORA', r: 2, lora_alpha: 4, target_modules: ['conv'] },
    identity: 'exact',
    conv: true,
  },
  {
    entries: ['dora_c'],
    config: { peft_type: 'DORA_C', r: 2, lora_alpha: 4, target_modules: ['conv'] },
    identity: 'close',
    conv: true,
    surrogate: ['a', 'b', 'other'],
  },
  {
    entries: ['conv_dora'],
    config: { peft_type: 'CONV_DORA', r: 2, lora_alpha: 4, target_modules: ['conv'] },
    identity: 'close',
    conv: true,
    surrogate: ['a', 'b', 'other'],
  },
  {
    entries: ['cp_dora'],
    config: { peft_type: 'CP_DORA', r: 2, lora_alpha: 4, target_modules: ['conv'] },
    identity: 'close',
    conv: true,
    surrogate: ['a', 'b', 'other'],
  },
];

const KIND_PATHS: Record<LayerKind, string> = {
  linear: 'model.layers.0.q_proj',
  conv1d: 'model.layers.1.c_fc',
  embedding: 'model.embed_tokens',
  conv2d: CONV.path,
};

const addOptions = (c: Case) => ({ seed: 3, ...c.add });

async function adapterOf(c: Case, base = toyBase(toyWeights(), { conv: c.conv })) {
  const peft = new PeftModel(base);
  await peft.addAdapter('default', c.config, addOptions(c));
  return peft;
}

/** Adds seeded noise to every trainable tensor, so the adapter changes the model (B = 0 at init otherwise). */
function perturb(peft: PeftModel, seed = 11) {
  const r = new Rng(seed);
  const values = new Map(
    [...peft.trainableValues('default')].map(([k, v]) => [k, Float32Array.from(v, (x) => x + 0.3 * r.normal())]),
  );
  peft.setValues('default', values);
}

async function logits(peft: PeftModel | null, conv = false): Promise<Float32Array> {
  const g = new Graph('contract-logits');
  const ids = g.input('ids', 'i64', [2, 4]);
  const w = toyWeights();
  if (peft) for (const [k, v] of peft.weightOverrides()) w.set(k, v);
  g.output('logits', toyForward(g, ids, w, peft ? peft.hooks() : {}, { conv }).logits);
  return (await (await compile(g, { worker: false })).run({ ids: IDS })).logits.data as Float32Array;
}

const name = (c: Case) => `${c.entries.join('+')} ${JSON.stringify(c.config)}`;

test('every registered method and variant has a row in the contract matrix', () => {
  const covered = new Set(CASES.flatMap((c) => c.entries));
  for (const e of REGISTRY) assert.ok(covered.has(e.name), `${e.name} has no row in CASES`);
  for (const e of REGISTRY)
    if ('of' in e)
      assert.ok(
        e.applies(resolveConfig({ ...e.selectedBy, target_modules: ['q_proj'] }, e.name).config),
        `${e.name}: selectedBy selects it`,
      );
  for (const c of CASES) {
    const r = resolveConfig(c.config, 'case');
    assert.deepEqual([r.base.name, ...r.variants.map((v) => v.name)], c.entries, `${name(c)} resolves to its entries`);
  }
});

for (const c of CASES) {
  test(`${name(c)}: identity at init where claimed; merged equals unmerged; unmerge and disable restore the base`, async () => {
    const peft = await adapterOf(c);
    const base = await logits(null, c.conv);
    const init = await logits(peft, c.conv);
    if (c.identity === 'exact') assertAllclose(init, base, { atol: 0, rtol: 0, what: 'at init' });
    if (c.identity === 'close') assertAllclose(init, base, { atol: 1e-5, rtol: 1e-5, what: 'at init' });
    perturb(peft);
    const unmerged = await logits(peft, c.conv);
    assert.ok(
      unmerged.some((v, i) => Math.abs(v - base[i]) > 1e-3),
      'a perturbed adapter changes the output',
    );
    const method = peft.get('default').method;
    if (!canMerge(method)) {
      await assert.rejects(peft.merge(), (e: unknown) => e instanceof LorakitError && e.code === 'LK_UNSUPPORTED');
      return;
    }
    await peft.merge();
    assertAllclose(await logits(peft, c.conv), unmerged, { atol: 2e-5, rtol: 2e-5, what: 'merged vs unmerged' });
    peft.unmerge();
    assertAllclose(await logits(peft, c.conv), unmerged, { atol: 0, rtol: 0, what: 'after unmerge' });
    peft.disable();
    const disabled = await logits(peft, c.conv);
    const replaced = peft.get('default').bases.size > 0; // a base-replacing init keeps its residual (as PEFT)
    if (!replaced) assertAllclose(disabled, base, { atol: 0, rtol: 0, what: 'disabled' });
  });

  test(`${name(c)}: float64 finite differences of every element of every trainable tensor`, async () => {
    const peft = await adapterOf(c);
    perturb(peft);
    const g = new Graph('contract-grad');
    const { loss, binding } = toyLoss(g, peft, 'default', {
      training: false,
      conv: c.conv,
      dtype: 'f64',
      paramDtype: 'f64',
    });
    const handles = binding.trainables();
    assert.ok(handles.length > 0);
    grad(
      loss,
      handles.map((h) => h.tensor),
    ).forEach((d, i) => g.output(`d${i}`, d));
    g.output('loss', loss);
    const s = await compile(g, { worker: false, optimization: 'disabled' });
    const values = new Map(
      handles.map((h) => [h.tensor.name, Float64Array.from(peft.trainableValues('default').get(h.tensor.name)!)]),
    );
    // buffers (frozen 'state' tensors, FlyLoRA's bias) are inputs of any graph that binds the trained adapter
    const buffers = Object.fromEntries(peft.stateValues('default'));
    const feeds = () => ({ ids: IDS, labels: LABELS, ...buffers, ...Object.fromEntries(values) });
    const out = await s.run(feeds());
    const [h, tol] = c.conv ? [1e-3, 2e-3] : [1e-6, 1e-6];
    for (const [i, handle] of handles.entries()) {
      if (c.surrogate?.includes(handle.role)) continue;
      const v = values.get(handle.tensor.name)!;
      const numeric = await centralDifferences(
        v,
        h,
        async () => (await s.run(feeds(), ['loss'])).loss.data[0] as number,
      );
      assertAllclose(out[`d${i}`].data as Float64Array, numeric, {
        rtol: tol,
        atol: tol * 1e-2,
        what: `d/d ${handle.tensor.name}`,
      });
    }
  });

  test(`${name(c)}: save -> load gives identical tensors and logits; the trainable count is the formula's`, async () => {
    const peft = await adapterOf(c);
    perturb(peft);
    const dir = mkdtempSync(join(tmpdir(), 'lk-contract-'));
    await saveAdapter(peft, 'default', dir);
    const loaded = new PeftModel(toyBase(toyWeights(), { conv: c.conv }));
    const { unused } = await loadAdapter(loaded, dir, 'default', addOptions(c));
    assert.deepEqual(unused, []);
    const [a, b] = [peft.get('default'), loaded.get('default')];
    for (const [path, l] of a.layers) {
      for (const s of l.specs)
        assert.deepEqual(b.layers.get(path)!.values[s.name], l.values[s.name], `${path}.${s.name}`);
    }
    for (const s of a.shared.specs) assert.deepEqual(b.shared.values[s.name], a.shared.values[s.name], s.name);
    assertAllclose(await logits(loaded, c.conv), await logits(peft, c.conv), { atol: 0, rtol: 0 });
    const adapterCount = [...a.layers.values()].reduce(
      (n, l) => n + l.specs.filter((s) => s.trainable).reduce((m, s) => m + s.shape.reduce((x, y) => x * y, 1), 0),
      a.shared.specs.filter((s) => s.trainable).reduce((m, s) => m + s.shape.reduce((x, y) => x * y, 1), 0),
    );
    const layers = [...a.layers.values()].map((l) => ({ layer: l.info, settings: l.settings }));
    assert.equal(adapterCount, a.method.trainableCount(a.config, layers));
  });

  test(`${name(c)}: stopping and resuming gives bit-identical parameters to an uninterrupted run`, async () => {
    const run = async (dir: string, resume: string | false) =>
      train(toyTask(await adapterOf(c), 'default', { conv: c.conv }), {
        outputDir: dir,
        steps: 4,
        lr: 0.05,
        seed: 5,
        checkpointEvery: 1,
        resume,
        progress: 'none',
        // loss.svg is rendered at every checkpoint (Vega, ~half of this test's CPU); plot.test.ts checks it
        plot: false,
      });
    const first = mkdtempSync(join(tmpdir(), 'lk-contract-'));
    const whole = await run(first, false);
    // a second run picks up the first one's step-2 checkpoint (params, optimizer and rule state, rng, data position)
    const resumed = await run(mkdtempSync(join(tmpdir(), 'lk-contract-')), join(first, 'checkpoint-2'));
    assert.equal(resumed.history.length, 4);
    assert.deepEqual([...resumed.params.keys()], [...whole.params.keys()]);
    for (const [k, v] of whole.params) assert.deepEqual(resumed.params.get(k), v, k);
    const init = (await adapterOf(c)).trainableValues('default');
    assert.ok(
      [...whole.params].some(([k, v]) => v.some((x, i) => x !== init.get(k)![i])),
      'training changed the adapter',
    );
  });

  test(`${name(c)}: a layer kind the method does not support is refused, naming the layer`, async () => {
    const method = resolveConfig(c.config, 'case').method;
    for (const kind of ['linear', 'conv1d', 'embedding', 'conv2d'] as LayerKind[]) {
      if (method.layers.includes(kind)) continue;
      const path = KIND_PATHS[kind];
      const peft = new PeftModel(toyBase(toyWeights(), { conv: kind === 'conv2d' }));
      await assert.rejects(
        peft.addAdapter('x', { ...c.config, target_modules: [path.split('.').pop()!] }),
        (e: unknown) =>
          e instanceof LorakitError &&
          e.code === 'LK_UNSUPPORTED' &&
          e.message.includes(path) &&
          e.message.includes(kind),
      );
    }
  });
}

test('the toy model lists one module of every kind the contract refuses or accepts', () => {
  assert.deepEqual([...new Set([...MODULES, CONV].map((m) => m.kind))].sort(), [
    'conv1d',
    'conv2d',
    'embedding',
    'linear',
  ]);
});
