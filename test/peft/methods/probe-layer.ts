// The probe for tests of per-layer update rules (AltLoRA, ALLoRA, Stable-LoRA): one Linear `proj` (out 6, in 5)
// with a LoRA adapter, trained by the platform's own step (StepEngine) on the loss L = (1/N)·Σ rows r·y. Its gradient
// with respect to the layer's effective weight is exactly G = rᵀx/N, so a float64 reference gets the raw LoRA gradients
// g_A = s·BᵀG and g_B = s·G·Aᵀ without the graph. Also the small float64 matrix helpers those references use, and
// the engine set-up and state read-out shared by the rules that run AdamW on A and B (ALLoRA, Stable-LoRA).
import { Graph } from '../../../src/graph/index.ts';
import { Rng } from '../../../src/linalg/index.ts';
import { createContext, type ModuleInfo, WeightSource } from '../../../src/nn/index.ts';
import { type AdaptableBase, PeftModel, paramKey } from '../../../src/peft/index.ts';
import { sgd } from '../../../src/optim/index.ts';
import { adapterTraining, type MicroBatch, StepEngine, type TrainTask } from '../../../src/train/index.ts';
import { assertAllclose } from '../../helpers.ts';

export const OUT = 6,
  IN = 5,
  ROWS = 8;
const MODULE: ModuleInfo = {
  kind: 'linear',
  path: 'proj',
  inFeatures: IN,
  outFeatures: OUT,
  weightName: 'proj.weight',
  biasName: null,
};
const W0 = new Rng(7).normalArray(OUT * IN, 0.5);
const BASE: AdaptableBase = { modules: [MODULE], outputHead: null, readWeight: async () => Float32Array.from(W0) };

/** Graph-input names of the probe's A and B, and of one of the rule's state slots. */
export const keyA = paramKey('default', 'proj', 'lora_A.weight');
export const keyB = paramKey('default', 'proj', 'lora_B.weight');
export const slotKey = (slot: string) => `${paramKey('default', 'proj', slot)}::rule`;

/** A PeftModel of the probe base with one LoRA adapter `default` on proj (seed 3). */
export async function probeAdapter(config: Record<string, unknown>): Promise<PeftModel> {
  const peft = new PeftModel(BASE);
  await peft.addAdapter('default', { target_modules: ['proj'], ...config }, { seed: 3 });
  return peft;
}

/** The probe task: y = proj(x) with the adapter, L = (1/N)·Σ rows r·y. */
export function probeTask(peft: PeftModel): TrainTask {
  const shared = adapterTraining(peft, 'default');
  return {
    build() {
      const g = new Graph('rule-probe');
      const binding = shared.bind(g, true);
      const x = g.input('x', 'f32', ['N', IN]);
      const r = g.input('r', 'f32', ['N', OUT]);
      const ws = new WeightSource(g, null, { overrides: new Map([['proj.weight', W0]]) });
      const ctx = createContext({ graph: g, weights: ws, modules: [MODULE], config: {}, hooks: binding.hooks });
      const loss = ctx.linear('proj', x).mul(r).sum(1).mean(); // [N, out] → scalar
      return shared.taskGraph(g, binding, loss, { training: true });
    },
    initialParams: () => shared.initialParams(),
    *batches() {},
    stepInputs: shared.stepInputs,
  };
}

/** The rows of step `step`'s batch: x [8, in], r [8, out]. */
function batchOf(step: number) {
  const g = new Rng(100 + step);
  return { x: g.normalArray(ROWS * IN, 1), r: g.normalArray(ROWS * OUT, 1) };
}

/** The micro-batches of step `step`: rows [0, split) and [split, 8), or one batch of all rows without split. */
export function micro(task: TrainTask, engine: StepEngine, step: number, split?: number): MicroBatch[] {
  const { x, r } = batchOf(step);
  const ranges = split ? [0, split, ROWS] : [0, ROWS];
  const rng = new Rng(1);
  return ranges.slice(1).map((to, i) => {
    const from = ranges[i];
    const n = to - from;
    const inputs = task.stepInputs!({ step, micro: i, rng, params: engine.params() });
    const feeds = {
      x: { data: x.slice(from * IN, to * IN), shape: [n, IN] },
      r: { data: r.slice(from * OUT, to * OUT), shape: [n, OUT] },
    };
    return { feeds: { ...feeds, ...inputs }, weight: n };
  });
}

export type F64 = Float64Array;
export const f64 = (a: ArrayLike<number>) => Float64Array.from(a);

/** c [m, n] = a [m, k]·b [k, n]. */
export function mm(a: F64, b: F64, m: number, k: number, n: number): F64 {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let p = 0; p < k; p++) for (let j = 0; j < n; j++) c[i * n + j] += a[i * k + p] * b[p * n + j];
  return c;
}

/** aᵀ [n, m] of a [m, n]. */
export function tr(a: F64, m: number, n: number): F64 {
  const t = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) t[j * m + i] = a[i * n + j];
  return t;
}

/** a·x + b·y elementwise. */
export const lin = (a: number, x: F64, b = 0, y: F64 = x) => x.map((v, i) => a * v + b * y[i]);

/** ‖x‖²_F. */
export const frob2 = (x: ArrayLike<number>) => Array.from(x).reduce((s, v) => s + v * v, 0);

/** G = rᵀx/N [out, in] of rows [from, to) of step `step`'s batch (the whole batch by default). */
export function fullGrad(step: number, from = 0, to = ROWS): F64 {
  const { x, r } = batchOf(step);
  const n = to - from;
  return lin(1 / n, mm(tr(f64(r.slice(from * OUT, to * OUT)), n, OUT), f64(x.slice(from * IN, to * IN)), OUT, n, IN));
}

/** The raw LoRA gradients at (A [r, in], B [out, r]) for step `step`: g_A = s·BᵀG, g_B = s·G·Aᵀ. */
export function loraGrads(A: F64, B: F64, r: number, s: number, step: number): { gA: F64; gB: F64 } {
  const G = fullGrad(step);
  return { gA: lin(s, mm(tr(B, OUT, r), G, r, OUT, IN)), gB: lin(s, mm(G, tr(A, r, IN), OUT, IN, r)) };
}

/** Float32 B = N(0, σ²) [out, r] (a non-zero B, so that every term of a rule is exercised from step 1). */
export const randomB = (r: number, sigma: number, seed = 11) => new Rng(seed).normalArray(OUT * r, sigma);

/**
 * One step of torch's single-tensor AdamW in float64 on p [rows, cols] with a rate per row: p ← p·(1 − lrᵢ·wd);
 * m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²; p ← p − lrᵢ/(1−β1^t)·m/(√v/√(1−β2^t) + ε).
 */
export function adamwRef(
  x: { p: F64; g: F64; m: F64; v: F64 },
  t: number,
  rowLr: ArrayLike<number>,
  wd: number,
  o: { betas: [number, number]; eps: number },
): { p: F64; m: F64; v: F64 } {
  const [b1, b2] = o.betas;
  const cols = x.p.length / rowLr.length;
  const m = x.m.map((v, i) => b1 * v + (1 - b1) * x.g[i]);
  const v = x.v.map((w, i) => b2 * w + (1 - b2) * x.g[i] * x.g[i]);
  const p = x.p.map((w, i) => {
    const lr = rowLr[Math.floor(i / cols)];
    const decayed = w * (1 - lr * wd);
    return decayed - ((lr / (1 - b1 ** t)) * m[i]) / (Math.sqrt(v[i]) / Math.sqrt(1 - b2 ** t) + o.eps);
  });
  return { p, m, v };
}

/** A and B and their AdamW moments [m_A, v_A, m_B, v_B], as a rule on the probe holds them (ALLoRA, Stable-LoRA). */
export interface AdamwProbeState {
  A: F64;
  B: F64;
  st: F64[];
}

/** The moment slots of A and B under a rule's prefix, in the order of `AdamwProbeState.st`. */
export const ADAMW_SLOTS = [
  'exp_avg.lora_A.weight',
  'exp_avg_sq.lora_A.weight',
  'exp_avg.lora_B.weight',
  'exp_avg_sq.lora_B.weight',
];

/** The engine's A, B and the moments of the rule whose slots start with `prefix` (`allora`), in float64. */
export function adamwStateOf(engine: StepEngine, prefix: string): AdamwProbeState {
  const p = engine.params(),
    st = engine.optimizerState();
  return {
    A: f64(p.get(keyA)!),
    B: f64(p.get(keyB)!),
    st: ADAMW_SLOTS.map((k) => f64(st.get(slotKey(`${prefix}.${k}`))!)),
  };
}

/** Asserts A and B (atol 1e-7) and the moments (atol 1e-9) equal a reference's, relative tolerance `rtol`. */
export function assertAdamwState(got: AdamwProbeState, want: AdamwProbeState, what: string, rtol: number): void {
  assertAllclose(got.A, want.A, { rtol, atol: 1e-7, what: `A ${what}` });
  assertAllclose(got.B, want.B, { rtol, atol: 1e-7, what: `B ${what}` });
  got.st.forEach((v, i) => assertAllclose(v, want.st[i], { rtol, atol: 1e-9, what: `${ADAMW_SLOTS[i]} ${what}` }));
}

/**
 * The probe adapter of `config`, its task and a StepEngine over it (plain SGD outside the rule, weight decay `wd`),
 * from the seeded initial values; `edit` may change them first (a non-zero B).
 */
export async function probeEngine(
  config: Record<string, unknown>,
  wd: number,
  edit: (init: Record<string, Float32Array>) => void = () => {},
): Promise<{ peft: PeftModel; task: TrainTask; engine: StepEngine }> {
  const peft = await probeAdapter(config);
  const task = probeTask(peft);
  const init = task.initialParams(new Rng(0)) as Record<string, Float32Array>;
  edit(init);
  const engine = await StepEngine.create(task, { optimizer: sgd(), accumulation: 1, weightDecay: wd }, init);
  return { peft, task, engine };
}
