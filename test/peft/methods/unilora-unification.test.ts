// Uni-LoRA's claim that VeRA, Tied-LoRA and VB-LoRA are each "a choice of P" (θ_D = P·θ_d, θ_D every layer's A and
// B flattened), shown on the toy model with Uni-LoRA's own forward: a unilora adapter whose θ, index maps and factors
// are set to another method's projection computes that method's logits, and where P is fixed (linear in the trained
// values) its gradient with respect to θ is that method's gradient, so both train alike. How far it goes:
//  - VeRA: exact. θ = every layer's (λ_d, λ_b); P has one nonzero per row, the frozen random A or B entry — linear,
//    layer-local, not isometric (its columns are not unit vectors);
//  - Tied-LoRA: exact with u, v frozen (θ = the tied A and B; P's entries are u_l and s·v_l); with u, v trained too
//    the update is bilinear in (A, B) and (u, v): the same P reproduces the forward at any point, but P itself moves;
//  - VB-LoRA: with top-1, P picks one bank entry per position (θ = the bank, factors 1) — exact forward and bank
//    gradient, while its logits get no gradient at all (softmax of one value); with top-k, P has k nonzeros per row,
//    the softmax weights, which are trained: a float64 host construction of that P reproduces ΔW, Uni-LoRA's
//    one-index Gather cannot, and no fixed P describes training.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Graph, grad } from '../../../src/graph/index.ts';
import { matmul, Rng } from '../../../src/linalg/index.ts';
import { type LayerInfo, PeftModel, vbloraFactors, type VbloraConfig } from '../../../src/peft/index.ts';
import { compile } from '../../../src/runtime/index.ts';
import { assertAllclose } from '../../helpers.ts';
import { graphLogits } from '../toy-host.ts';
import { IDS, LABELS, toyBase, toyLoss } from '../toy.ts';

const TARGETS = ['q_proj', 'c_fc'];

async function adapter(config: Record<string, unknown>): Promise<PeftModel> {
  const peft = new PeftModel(toyBase());
  await peft.addAdapter('default', { target_modules: TARGETS, ...config }, { seed: 3 });
  return peft;
}

/** Sets every trainable value (and, with `all`, every frozen per-layer value) to N(0, 1) draws. */
function randomise(peft: PeftModel, seed: number, all = false) {
  const a = peft.get('default');
  const rng = new Rng(seed);
  for (const s of a.shared.specs)
    if (s.trainable) a.shared.values[s.name] = a.shared.values[s.name].map(() => rng.normal());
  for (const l of a.layers.values())
    for (const s of l.specs) if (s.trainable || all) l.values[s.name] = l.values[s.name].map(() => rng.normal());
}

/** A projection: θ, and per layer each A / B position's θ index and factor ([r, in] and [out, r], row-major). */
interface Projection {
  theta: Float32Array;
  layers: Map<string, { ia: number[]; sa: number[]; ib: number[]; sb: number[] }>;
}

/** A Uni-LoRA adapter of rank r on the same layers whose θ, maps and factors are `p`. */
async function asUnilora(r: number, p: Projection): Promise<PeftModel> {
  const peft = await adapter({ peft_type: 'UNILORA', r, theta_d_length: p.theta.length });
  const a = peft.get('default');
  a.shared.values.unilora_theta_d = p.theta;
  for (const [path, m] of p.layers) {
    const v = a.layers.get(path)!.values;
    Object.assign(v, {
      unilora_indices_A: Float32Array.from(m.ia),
      unilora_scales_A: Float32Array.from(m.sa),
      unilora_indices_B: Float32Array.from(m.ib),
      unilora_scales_B: Float32Array.from(m.sb),
    });
  }
  return peft;
}

/** d loss / d each trainable tensor (float64 graph), by tensor, in the adapter's trainableValues order. */
async function gradients(peft: PeftModel): Promise<Float64Array[]> {
  const g = new Graph('unification-grad');
  const { loss, binding } = toyLoss(g, peft, 'default', { training: false, dtype: 'f64', paramDtype: 'f64' });
  const handles = binding.trainables();
  grad(
    loss,
    handles.map((h) => h.tensor),
  ).forEach((d, i) => g.output(`d${i}`, d));
  const values = peft.trainableValues('default');
  const feeds = Object.fromEntries(handles.map((h) => [h.tensor.name, Float64Array.from(values.get(h.tensor.name)!)]));
  const out = await (await compile(g, { worker: false, optimization: 'disabled' })).run({
    ids: IDS,
    labels: LABELS,
    ...feeds,
  });
  const byName = new Map(handles.map((h, i) => [h.tensor.name, out[`d${i}`].data as Float64Array]));
  return [...values.keys()].map((k) => byName.get(k)!);
}

const layersOf = (peft: PeftModel): LayerInfo[] => [...peft.get('default').layers.values()].map((l) => l.info);

test('VeRA is Uni-LoRA with θ = (λ_d, λ_b) per layer and P = the frozen random entries: same logits, same gradients', async () => {
  const r = 3;
  const vera = await adapter({ peft_type: 'VERA', r, init_weights: false });
  randomise(vera, 5);
  const a = vera.get('default');
  const { vera_A: A, vera_B: B } = a.shared.values;
  const inMax = A.length / r;
  const theta: number[] = [];
  const layers: Projection['layers'] = new Map();
  for (const info of layersOf(vera)) {
    const { vera_lambda_d: ld, vera_lambda_b: lb } = a.layers.get(info.path)!.values;
    const at = theta.length;
    theta.push(...ld, ...lb);
    const [inn, out] = [info.inFeatures, info.outFeatures];
    const m = { ia: [] as number[], sa: [] as number[], ib: [] as number[], sb: [] as number[] };
    for (let q = 0; q < r; q++)
      for (let k = 0; k < inn; k++) {
        m.ia.push(at + q);
        m.sa.push(A[q * inMax + k]);
      }
    for (let j = 0; j < out; j++)
      for (let q = 0; q < r; q++) {
        m.ib.push(at + r + j);
        m.sb.push(B[j * r + q]);
      }
    layers.set(info.path, m);
  }
  const uni = await asUnilora(r, { theta: Float32Array.from(theta), layers });
  assertAllclose(await graphLogits(uni), await graphLogits(vera), { atol: 1e-5, what: 'logits' });
  // θ's gradient is VeRA's, coordinate for coordinate: (dλ_d, dλ_b) of each layer in order
  const [dTheta] = await gradients(uni);
  const dVera = await gradients(vera); // λ_b, λ_d of each layer (ParamSpec order)
  const want = layersOf(vera).flatMap((_, i) => [...dVera[2 * i + 1], ...dVera[2 * i]]);
  assertAllclose(dTheta, want, { atol: 1e-10, what: 'dθ = (dλ_d, dλ_b)' });
  // P is not isometric: the squared norm of λ_d[q]'s column is Σ_k A[q, k]², not 1
  const l0 = layers.get('model.layers.0.q_proj')!;
  const norm0 = l0.sa.filter((_, i) => l0.ia[i] === 0).reduce((s, v) => s + v * v, 0);
  assert.ok(Math.abs(norm0 - 1) > 0.01, `‖P e_0‖² = ${norm0}`);
});

/** Tied-LoRA's P at its current u, v: θ = [vec(A) | vec(B)], factors u_l[q] (A) and s·v_l[j] (B). */
function tiedProjection(tied: PeftModel, r: number): Projection {
  const a = tied.get('default');
  const { tied_lora_A: A, tied_lora_B: B } = a.shared.values;
  const inMax = A.length / r;
  const s = (a.config.lora_alpha as number) / r;
  const layers: Projection['layers'] = new Map();
  for (const info of layersOf(tied)) {
    const { tied_lora_u: u, tied_lora_v: v } = a.layers.get(info.path)!.values;
    const m = { ia: [] as number[], sa: [] as number[], ib: [] as number[], sb: [] as number[] };
    for (let q = 0; q < r; q++)
      for (let k = 0; k < info.inFeatures; k++) {
        m.ia.push(q * inMax + k);
        m.sa.push(u[q]);
      }
    for (let j = 0; j < info.outFeatures; j++)
      for (let q = 0; q < r; q++) {
        m.ib.push(A.length + j * r + q);
        m.sb.push(s * v[j]);
      }
    layers.set(info.path, m);
  }
  const theta = new Float32Array(A.length + B.length);
  theta.set(A);
  theta.set(B, A.length);
  return { theta, layers };
}

test('Tied-LoRA with u, v frozen is Uni-LoRA with θ = the tied A, B and P = u, s·v: same logits, same gradients', async () => {
  const r = 2;
  const tied = await adapter({ peft_type: 'TIED_LORA', r, lora_alpha: 3, trainable: ['A', 'B'] });
  randomise(tied, 6, true);
  const uni = await asUnilora(r, tiedProjection(tied, r));
  assertAllclose(await graphLogits(uni), await graphLogits(tied), { atol: 1e-5, what: 'logits' });
  const [dTheta] = await gradients(uni);
  const [dA, dB] = await gradients(tied);
  assertAllclose(dTheta, [...dA, ...dB], { atol: 1e-10, what: 'dθ = (dA, dB)' });
});

test('Tied-LoRA training u and v too: the same construction reproduces the forward at any point, but P moves with u, v', async () => {
  const r = 2;
  const tied = await adapter({ peft_type: 'TIED_LORA', r, lora_alpha: 3 });
  randomise(tied, 7, true);
  const p = tiedProjection(tied, r);
  assertAllclose(await graphLogits(await asUnilora(r, p)), await graphLogits(tied), { atol: 1e-5, what: 'logits' });
  // a step in u alone changes the logits through P (not through θ): no fixed P describes this adapter's training
  const l = tied.get('default').layers.get('model.layers.1.c_fc')!;
  l.values.tied_lora_u = l.values.tied_lora_u.map((x) => x + 0.5);
  const stale = await graphLogits(await asUnilora(r, p));
  const moved = await graphLogits(tied);
  assert.ok(
    stale.some((x, i) => Math.abs(x - moved[i]) > 1e-3),
    'the old P no longer matches',
  );
  assertAllclose(await graphLogits(await asUnilora(r, tiedProjection(tied, r))), moved, { atol: 1e-5 });
});

test('VB-LoRA with top-1 is Uni-LoRA with θ = the bank and P = the picked entries: same logits and bank gradient', async () => {
  const [r, h] = [2, 6];
  const vb = await adapter({ peft_type: 'VBLORA', r, num_vectors: h, vector_length: 1, topk: 1 });
  randomise(vb, 8);
  const a = vb.get('default');
  const pick = (logits: Float32Array, i: number) => {
    const row = logits.subarray(i * h, (i + 1) * h);
    return row.indexOf(Math.max(...row)); // b = 1: one bank entry per position
  };
  const layers: Projection['layers'] = new Map();
  for (const info of layersOf(vb)) {
    const { vblora_logits_A: la, vblora_logits_B: lb } = a.layers.get(info.path)!.values;
    const ia = Array.from({ length: r * info.inFeatures }, (_, i) => pick(la, i)); // ℓ_A [r, in, h]
    // ℓ_B [out, r, h] (out/b = out): B[j, q] is sub-vector (j, q)
    const ib = Array.from({ length: info.outFeatures * r }, (_, i) => pick(lb, i));
    layers.set(info.path, { ia, sa: ia.map(() => 1), ib, sb: ib.map(() => 1) });
  }
  const uni = await asUnilora(r, { theta: a.shared.values.vblora_vector_bank, layers });
  assertAllclose(await graphLogits(uni), await graphLogits(vb), { atol: 1e-5, what: 'logits' });
  const [dTheta] = await gradients(uni);
  const [dBank, ...dLogits] = await gradients(vb);
  assertAllclose(dTheta, dBank, { atol: 1e-10, what: 'dθ = dV' });
  assert.ok(
    dLogits.every((d) => d.every((x) => x === 0)),
    'top-1 logits get no gradient',
  );
});

test('VB-LoRA with top-k is θ_D = P·vec(V) with k nonzeros per row (the trained softmax weights): a host P reproduces ΔW', async () => {
  const [r, h, b, k] = [3, 7, 2, 3];
  const vb = new PeftModel(toyBase());
  await vb.addAdapter('default', {
    peft_type: 'VBLORA',
    target_modules: ['c_fc'],
    r,
    num_vectors: h,
    vector_length: b,
    topk: k,
  });
  randomise(vb, 9);
  const a = vb.get('default');
  const l = a.layers.get('model.layers.1.c_fc')!; // 6 → 4
  const bank = a.shared.values.vblora_vector_bank;
  // P row of sub-vector entry (row i of a logits tensor, offset t): softmax weights w_j at columns idx_j·b + t
  const rowsOf = (logits: Float32Array) =>
    Array.from({ length: logits.length / h }, (_, i) => {
      const row = Array.from(logits.subarray(i * h, (i + 1) * h));
      const top = row
        .map((v, j) => [v, j])
        .sort((p, q) => q[0] - p[0])
        .slice(0, k);
      const z = top.reduce((s, [v]) => s + Math.exp(v - top[0][0]), 0);
      return top.map(([v, j]) => [j, Math.exp(v - top[0][0]) / z]);
    });
  const apply = (rows: number[][][]) =>
    rows.flatMap((terms) =>
      Array.from({ length: b }, (_, t) => terms.reduce((s, [j, w]) => s + w * bank[j * b + t], 0)),
    );
  const pA = rowsOf(l.values.vblora_logits_A);
  const pB = rowsOf(l.values.vblora_logits_B);
  assert.ok(
    [...pA, ...pB].every((terms) => terms.length === k && terms.every(([, w]) => w > 0)),
    'k nonzeros per row',
  );
  const A = Float64Array.from(apply(pA)); // [r, in/b, b] = [r, 6]
  const mb = apply(pB); // [out/b, r, b]
  const B = new Float64Array(4 * r);
  for (let q = 0; q < 2; q++)
    for (let m = 0; m < r; m++) for (let t = 0; t < b; t++) B[(q * b + t) * r + m] = mb[(q * r + m) * b + t];
  const dW = matmul(Float32Array.from(B), Float32Array.from(A), 4, r, 6);
  const f = vbloraFactors(l.info, a.config as unknown as VbloraConfig, l.values, bank);
  assertAllclose(dW, matmul(f.B, f.A, 4, r, 6), { atol: 1e-6, what: 'ΔW from P·vec(V)' });
});
