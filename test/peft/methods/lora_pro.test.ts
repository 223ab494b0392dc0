// LoRA-Pro (src/peft/methods/lora_pro.ts) against a float64 host reference of the official algorithm, written
// independently of the graph: explicit inverses (spdInverse), the [m, m] projector formed, X from solveSylvester.
// The probe is one Linear (out 6, in 5, r 2) with the loss L = mean over rows of r·y, whose gradient with respect to
// s·B·A is exactly G = rᵀx/N, so the reference gets g_A = s·BᵀG and g_B = s·G·Aᵀ without the graph. The train step
// is the platform's own (StepEngine: one fused graph, or gradient graph + apply graph when accumulating).
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { LorakitError } from '../../../src/errors.ts';
import { Rng, solveSylvester, spdInverse, symEig } from '../../../src/linalg/index.ts';
import { sgd } from '../../../src/optim/index.ts';
import { paramKey } from '../../../src/peft/index.ts';
import { savedConfig } from '../../../src/peft/registry.ts';
import { shutdownRuntime } from '../../../src/runtime/index.ts';
import { StepEngine } from '../../../src/train/index.ts';
import { assertAllclose } from '../../helpers.ts';
import { type F64, f64, frob2, fullGrad, IN, lin, micro, mm, OUT, probeAdapter, probeTask, tr } from './probe-layer.ts';

after(() => shutdownRuntime());

const R = 2;

interface Options {
  mode: 'full' | 'lowrank';
  x_mode: 'sylvester' | 'symmetry' | 'zero';
  betas: [number, number];
  eps: number;
  delta: number;
}
const DEFAULTS: Options = { mode: 'full', x_mode: 'sylvester', betas: [0.9, 0.999], eps: 1e-8, delta: 1e-8 };

async function adapter(o: Partial<Options>, extra: Record<string, unknown> = {}) {
  return probeAdapter({ r: R, lora_alpha: 3, lora_pro: o, ...extra });
}

// ---- float64 reference ----------------------------------------------------------------------------------------

/**
 * The adjusted pair (ĝ_A, ĝ_B) of gradients (a, b) as the official code writes it: K = pinv(M + δI) (here inverses),
 * (I − B·K_B·Bᵀ) formed, X from the Sylvester equation (or the symmetric form, or zero); at B = 0 its explicit branch.
 */
function adjust(A: F64, B: F64, a: F64, b: F64, s: number, o: Options, xMode = o.x_mode) {
  const c = 1 / (s * s);
  const KA = spdInverse(mm(A, tr(A, R, IN), R, IN, R), R, { ridge: o.delta });
  if (B.every((v) => v === 0)) return { a: a.slice(), b: lin(c, mm(b, KA, OUT, R, R)) };
  const BtB = mm(tr(B, OUT, R), B, R, OUT, R);
  const KB = spdInverse(BtB, R, { ridge: o.delta });
  const proj = lin(-1, mm(mm(B, KB, OUT, R, R), tr(B, OUT, R), OUT, R, OUT)); // I − B·K_B·Bᵀ [m, m]
  for (let i = 0; i < OUT; i++) proj[i * OUT + i] += 1;
  const ha = lin(c, mm(KB, a, R, R, IN));
  const hb = lin(c, mm(mm(proj, b, OUT, OUT, R), KA, OUT, R, R));
  let X: F64 | null = null;
  if (xMode === 'sylvester') {
    const C = lin(-c, mm(mm(KB, a, R, R, IN), tr(A, R, IN), R, IN, R));
    X = solveSylvester(BtB, mm(A, tr(A, R, IN), R, IN, R), C, R, R, { ridge: o.delta });
  } else if (xMode === 'symmetry') {
    const AAt = mm(A, tr(A, R, IN), R, IN, R);
    X = lin(-0.5 * c, mm(mm(mm(KB, tr(B, OUT, R), R, R, OUT), b, R, OUT, R), AAt, R, R, R));
  }
  if (!X) return { a: ha, b: hb };
  return { a: lin(1, ha, 1, mm(X, A, R, R, IN)), b: lin(1, hb, -1, mm(B, X, OUT, R, R)) };
}

/** Adam's moments and bias-corrected direction. */
function adam(g: F64, m: F64, v: F64, t: number, o: Options) {
  const [b1, b2] = o.betas;
  const m1 = lin(b1, m, 1 - b1, g);
  const v1 = v.map((x, i) => b2 * x + (1 - b2) * g[i] * g[i]);
  const dir = m1.map((x, i) => x / (1 - b1 ** t) / (Math.sqrt(v1[i] / (1 - b2 ** t)) + o.eps));
  return { dir, m: m1, v: v1 };
}

interface RefState {
  A: F64;
  B: F64;
  /** full: [M, V]; lowrank: [mA, vA, mB, vB]. */
  state: F64[];
}

/** One LoRA-Pro step of the reference from raw gradients (gA, gB) at step t. */
function refStep(x: RefState, gA: F64, gB: F64, t: number, s: number, lr: number, wd: number, o: Options): RefState {
  const { A, B } = x;
  const decayed = (p: F64, u: F64) => lin(1 - lr * wd, p, -lr, u);
  if (o.mode === 'full') {
    const h = adjust(A, B, gA, gB, s, o, 'zero'); // X cancels in g̃, so the official code leaves it out here
    const equiv = lin(s, mm(B, h.a, OUT, R, IN), s, mm(h.b, A, OUT, R, IN)); // g̃ [m, n]
    const { dir: U, m, v } = adam(equiv, x.state[0], x.state[1], t, o);
    const u = adjust(A, B, lin(s, mm(tr(B, OUT, R), U, R, OUT, IN)), lin(s, mm(U, tr(A, R, IN), OUT, IN, R)), s, o);
    return { A: decayed(A, u.a), B: decayed(B, u.b), state: [m, v] };
  }
  const u = adjust(A, B, gA, gB, s, o);
  const ua = adam(u.a, x.state[0], x.state[1], t, o);
  const ub = adam(u.b, x.state[2], x.state[3], t, o);
  return { A: decayed(A, ua.dir), B: decayed(B, ub.dir), state: [ua.m, ua.v, ub.m, ub.v] };
}

// ---- the graph against the reference --------------------------------------------------------------------------

const keyA = paramKey('default', 'proj', 'lora_A.weight'),
  keyB = paramKey('default', 'proj', 'lora_B.weight');
const slots = (o: Options) =>
  (o.mode === 'full' ? ['exp_avg', 'exp_avg_sq'] : ['exp_avg_A', 'exp_avg_sq_A', 'exp_avg_B', 'exp_avg_sq_B']).map(
    (k) => `${paramKey('default', 'proj', `lora_pro.${k}`)}::rule`,
  );

/** The engine's current values as a reference state. */
function stateOf(engine: StepEngine, o: Options): RefState {
  const p = engine.params(),
    st = engine.optimizerState();
  return { A: f64(p.get(keyA)!), B: f64(p.get(keyB)!), state: slots(o).map((k) => f64(st.get(k)!)) };
}

interface Case {
  what: string;
  o: Partial<Options>;
  extra?: Record<string, unknown>;
  clipNorm?: number;
  weightDecay: number;
}
const CASES: Case[] = [
  { what: 'full, Sylvester X, weight decay', o: {}, weightDecay: 0.1 },
  { what: 'full, symmetric X', o: { x_mode: 'symmetry' }, weightDecay: 0 },
  { what: 'full, X = 0', o: { x_mode: 'zero' }, weightDecay: 0 },
  // rsLoRA's s = α/√r (the official code hard-codes 2) and an active clip: raw gradients are clipped first
  { what: 'full, rsLoRA scaling, clipped', o: {}, extra: { use_rslora: true }, clipNorm: 0.05, weightDecay: 0 },
  { what: 'lowrank, Sylvester X, weight decay', o: { mode: 'lowrank' }, weightDecay: 0.1 },
  { what: 'lowrank, symmetric X', o: { mode: 'lowrank', x_mode: 'symmetry' }, weightDecay: 0 },
];

for (const c of CASES) {
  test(`${c.what}: three steps of the train-step graph equal the float64 reference of the algorithm`, async () => {
    const o = { ...DEFAULTS, ...c.o };
    const peft = await adapter(c.o, c.extra);
    const s = peft.get('default').layers.get('proj')!.settings.scaling;
    assert.equal(s, c.extra?.use_rslora ? 3 / Math.SQRT2 : 3 / R);
    const task = probeTask(peft);
    const engine = await StepEngine.create(
      task,
      { optimizer: sgd(), accumulation: 1, weightDecay: c.weightDecay, clipNorm: c.clipNorm },
      task.initialParams(new Rng(0)) as Record<string, Float32Array>,
    );
    assert.deepEqual([...engine.optimizerState().keys()], slots(o), 'the rule state replaces the optimizer slots');
    const lr = 0.02;
    let traj: RefState = stateOf(engine, o); // the reference's own trajectory from the same start
    for (let t = 1; t <= 3; t++) {
      const from = stateOf(engine, o);
      const G = fullGrad(t);
      const grads = (x: RefState) => {
        let gA = lin(s, mm(tr(x.B, OUT, R), G, R, OUT, IN)),
          gB = lin(s, mm(G, tr(x.A, R, IN), OUT, IN, R));
        const norm = Math.sqrt(frob2(gA) + frob2(gB));
        if (c.clipNorm !== undefined) {
          const k = Math.min(1, c.clipNorm / (norm + 1e-6));
          if (t === 1) assert.ok(k < 1, `the clip is active (norm ${norm})`);
          [gA, gB] = [lin(k, gA), lin(k, gB)];
        }
        return { gA, gB, norm };
      };
      const g = grads(from);
      const want = refStep(from, g.gA, g.gB, t, s, lr, c.weightDecay, o);
      const out = await engine.run(micro(task, engine, t), lr);
      assertAllclose([out.grad_norm], [g.norm], { rtol: 1e-5, what: `grad norm at step ${t}` });
      const got = stateOf(engine, o);
      const tol = { rtol: 2e-4, atol: 1e-6 };
      assertAllclose(got.A, want.A, { ...tol, what: `A after step ${t}` });
      assertAllclose(got.B, want.B, { ...tol, what: `B after step ${t}` });
      got.state.forEach((v, i) => assertAllclose(v, want.state[i], { ...tol, what: `${slots(o)[i]} at step ${t}` }));
      const gt = grads(traj);
      traj = refStep(traj, gt.gA, gt.gB, t, s, lr, c.weightDecay, o);
    }
    if (o.mode === 'full')
      assert.ok(
        stateOf(engine, o).B.some((v) => v !== 0),
        'B moved off zero',
      );
    const end = stateOf(engine, o);
    assertAllclose(end.A, traj.A, { rtol: 5e-4, atol: 1e-6, what: 'A after three reference steps' });
    assertAllclose(end.B, traj.B, { rtol: 5e-4, atol: 1e-6, what: 'B after three reference steps' });
    await engine.dispose();
  });
}

test('gradient accumulation (k = 2, rows 3 + 5) gives the same LoRA-Pro steps as the batch of 8', async () => {
  for (const mode of ['full', 'lowrank'] as const) {
    const peft = await adapter({ mode });
    const task = probeTask(peft);
    const opts = { optimizer: sgd(), weightDecay: 0.05, clipNorm: 1 };
    const init = task.initialParams(new Rng(0)) as Record<string, Float32Array>;
    const whole = await StepEngine.create(task, { ...opts, accumulation: 1 }, init);
    const split = await StepEngine.create(task, { ...opts, accumulation: 2 }, init);
    for (let t = 1; t <= 3; t++) {
      const a = await whole.run(micro(task, whole, t), 0.02);
      const b = await split.run(micro(task, split, t, 3), 0.02);
      assertAllclose([b.loss], [a.loss], { rtol: 1e-5, what: `${mode}: loss at step ${t}` });
    }
    for (const [k, v] of whole.params())
      assertAllclose(split.params().get(k)!, v, { rtol: 1e-4, atol: 1e-6, what: `${mode}: ${k}` });
    for (const [k, v] of whole.optimizerState())
      assertAllclose(split.optimizerState().get(k)!, v, { rtol: 1e-4, atol: 1e-7, what: `${mode}: ${k}` });
    await whole.dispose();
    await split.dispose();
  }
});

test('the X terms cancel: the equivalent update s(B·u_A + u_B·A) of a step is the same for every X', async () => {
  // Three full-mode engines (Sylvester, symmetric, zero X) from the same state after one step: their A, B differ,
  // but the first-order change of s·B·A does not, and it is the tangent projection of the Adam direction.
  const moved: Float64Array[] = [];
  const changed: Float64Array[] = [];
  for (const x_mode of ['sylvester', 'symmetry', 'zero'] as const) {
    const peft = await adapter({ x_mode });
    const task = probeTask(peft);
    const init = task.initialParams(new Rng(0)) as Record<string, Float32Array>;
    const engine = await StepEngine.create(task, { optimizer: sgd(), accumulation: 1, weightDecay: 0 }, init);
    await engine.run(micro(task, engine, 1), 0.02);
    const { A, B } = stateOf(engine, { ...DEFAULTS, x_mode });
    const lr = 0.5;
    await engine.run(micro(task, engine, 2), lr);
    const next = stateOf(engine, { ...DEFAULTS, x_mode });
    const [uA, uB] = [lin(1 / lr, A, -1 / lr, next.A), lin(1 / lr, B, -1 / lr, next.B)];
    moved.push(lin(1, mm(B, uA, OUT, R, IN), 1, mm(uB, A, OUT, R, IN))); // B·u_A + u_B·A [m, n]
    changed.push(uA);
    await engine.dispose();
  }
  assertAllclose(moved[1], moved[0], { rtol: 1e-4, atol: 1e-5, what: 'symmetric vs Sylvester X' });
  assertAllclose(moved[2], moved[0], { rtol: 1e-4, atol: 1e-5, what: 'zero vs Sylvester X' });
  const differs = (p: Float64Array, q: Float64Array) => p.some((v, i) => Math.abs(v - q[i]) > 1e-3 * Math.abs(q[i]));
  assert.ok(differs(changed[0], changed[2]), 'X does change u_A itself');
});

test('closed forms (float64): g̃ is the tangent projection of G, X cancels in it, and the Sylvester X is the minimiser', () => {
  const g = new Rng(9);
  const A = f64(g.normalArray(R * IN, 1)),
    B = f64(g.normalArray(OUT * R, 1)),
    G = f64(g.normalArray(OUT * IN, 1));
  const s = 1.7;
  const o = { ...DEFAULTS, delta: 0 };
  const gA = lin(s, mm(tr(B, OUT, R), G, R, OUT, IN)),
    gB = lin(s, mm(G, tr(A, R, IN), OUT, IN, R));
  const equiv = (u: { a: F64; b: F64 }) => lin(s, mm(B, u.a, OUT, R, IN), s, mm(u.b, A, OUT, R, IN));
  // P_B = B(BᵀB)⁻¹Bᵀ, P_A = Aᵀ(AAᵀ)⁻¹A, formed explicitly
  const PB = mm(mm(B, spdInverse(mm(tr(B, OUT, R), B, R, OUT, R), R), OUT, R, R), tr(B, OUT, R), OUT, R, OUT);
  const PA = mm(mm(tr(A, R, IN), spdInverse(mm(A, tr(A, R, IN), R, IN, R), R), IN, R, R), A, IN, R, IN);
  const GPA = mm(G, PA, OUT, IN, IN);
  const tangent = lin(1, lin(1, mm(PB, G, OUT, OUT, IN), 1, GPA), -1, mm(PB, GPA, OUT, OUT, IN));
  for (const x of ['zero', 'sylvester', 'symmetry'] as const)
    assertAllclose(equiv(adjust(A, B, gA, gB, s, o, x)), tangent, { rtol: 1e-9, atol: 1e-12, what: `g̃ with ${x}` });
  // the Sylvester X minimises ‖ĝ_A − g_A‖² + ‖ĝ_B − g_B‖² over X: every other X (random, symmetric, 0) is farther
  const base = adjust(A, B, gA, gB, s, o, 'zero');
  const dist = (X: F64) =>
    frob2(lin(1, lin(1, base.a, 1, mm(X, A, R, R, IN)), -1, gA)) +
    frob2(lin(1, lin(1, base.b, -1, mm(B, X, OUT, R, R)), -1, gB));
  const best = adjust(A, B, gA, gB, s, o, 'sylvester');
  const XAAt = mm(lin(1, best.a, -1, base.a), tr(A, R, IN), R, IN, R); // (X·A)·Aᵀ
  const X = mm(XAAt, spdInverse(mm(A, tr(A, R, IN), R, IN, R), R), R, R, R);
  const d0 = dist(X);
  for (let k = 0; k < 5; k++) {
    const E = lin(1e-3, f64(g.normalArray(R * R, 1)));
    assert.ok(dist(lin(1, X, 1, E)) > d0, `a perturbed X is farther (${k})`);
  }
  assert.ok(dist(new Float64Array(R * R)) > d0, 'X = 0 is farther');
});

test('step inputs: pinv spectra with the B = 0 guard and the float32 pinv cutoff', async () => {
  const peft = await adapter({});
  const a = peft.get('default');
  const spec = (k: string) => a.stepInputs.find((x) => x.name === `lora_pro.${k}`)!;
  const values = (A: Float32Array, B: Float32Array) => ({ 'lora_A.weight': A, 'lora_B.weight': B });
  const at = (k: string, v: Record<string, Float32Array>) =>
    spec(k).train({ config: a.config, step: 1, rng: new Rng(0), values: v }) as Float32Array;
  const A = a.layers.get('proj')!.values['lora_A.weight'];
  const zero = values(A, new Float32Array(OUT * R));
  assert.deepEqual([...at('kB', zero)], [0, 0], 'B = 0: K_B = 0, not 1e8·I');
  assert.ok(at('kA', zero).every((v) => v > 0 && Number.isFinite(v)));
  // B with columns b and 2b: BᵀB = ‖b‖²[[1, 2], [2, 4]] has eigenvalues 5‖b‖² and 0; torch's pinv of BᵀB + δI
  // drops δ (below r·ε₃₂ of the largest), so K_B = v·vᵀ/(5‖b‖² + δ), v = (1, 2)/√5.
  const b = Float32Array.from({ length: OUT }, (_, i) => 0.1 * (i + 1));
  const B = Float32Array.from({ length: OUT * R }, (_, k) => b[k >> 1] * (k % 2 ? 2 : 1));
  const nb = b.reduce((t, v) => t + v * v, 0);
  const v = values(A, B);
  const [P, kB] = [at('P', v), at('kB', v)];
  const K = Float32Array.from({ length: R * R }, (_, k) => {
    const [i, j] = [k >> 1, k % 2];
    return P[i * R] * kB[0] * P[j * R] + P[i * R + 1] * kB[1] * P[j * R + 1];
  });
  assertAllclose(
    K,
    [0.2, 0.4, 0.4, 0.8].map((x) => x / (5 * nb + 1e-8)),
    { rtol: 1e-5, what: 'K_B' },
  );
  // the Sylvester denominators 1/(λᵢ + μⱼ + δ), λ = (5‖b‖², 0) and μ the eigenvalues of AAᵀ (both descending)
  const mu = symEig(mm(f64(A), tr(f64(A), R, IN), R, IN, R), R).values;
  const D = [0, 1, 2, 3].map((k) => 1 / ([5 * nb, 0][k >> 1] + mu[k % 2] + 1e-8));
  assertAllclose(at('D', v), D, { rtol: 1e-5, what: 'D' });
  // a factor that diverged in the previous step is reported as such, naming the layer
  const broken = values(
    A,
    Float32Array.from(B, (x, k) => (k === 3 ? Number.NaN : x)),
  );
  assert.throws(
    () => at('P', broken),
    (e: unknown) => e instanceof LorakitError && e.code === 'LK_NON_FINITE' && e.message.includes('proj'),
  );
});

test('config: lora_pro is training-only (not saved), and DoRA is refused naming the field', async () => {
  const peft = await adapter({ mode: 'lowrank' });
  const a = peft.get('default');
  assert.equal(a.config.lora_pro.mode, 'lowrank');
  assert.equal(a.config.lora_pro.delta, 1e-8, 'defaults filled');
  assert.ok(!('lora_pro' in savedConfig(a.resolved)), 'left out of adapter_config.json');
  await assert.rejects(
    adapter({}, { use_dora: true }),
    (e: unknown) => e instanceof LorakitError && e.code === 'LK_CONFIG_INVALID' && /lora_pro.*use_dora/.test(e.message),
  );
  await assert.rejects(
    adapter({ mode: 'dense' as 'full' }),
    (e: unknown) => e instanceof LorakitError && e.code === 'LK_CONFIG_INVALID' && e.message.includes('lora_pro'),
  );
});
