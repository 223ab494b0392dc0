// AltLoRA / AltLoRA+ (src/peft/methods/altlora.ts) against a float64 host reference of the official optimizer
// (LucasXinYu/AltLoRA optimizer_new.py `altlora`, `altlora_plus`), written independently of the graph: explicit
// eigen-decomposition inverses (spdInverse) where the graph sweeps, the momentum carried by T_A = K_B·Bᵀ·B_prev and
// T_B = A_prev·Aᵀ·K_A, the step then the weight decay, as the code orders them. The probe layer (probe-layer.ts) gives
// exact raw gradients; three steps of the platform's train step are compared with the reference, both from the
// engine's state at every step and along the reference's own trajectory. The phase schedule is checked against a
// replay of the official trainer's micro-batch counter, and the variant is trained from a YAML run config.
import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { LorakitError } from '../../../src/errors.ts';
import { SafetensorsFile } from '../../../src/io/index.ts';
import { Rng, spdInverse } from '../../../src/linalg/index.ts';
import { sgd } from '../../../src/optim/index.ts';
import { type AltloraOptions, altloraOptions, altloraPhase } from '../../../src/peft/methods/altlora.ts';
import { savedConfig } from '../../../src/peft/registry.ts';
import { shutdownRuntime } from '../../../src/runtime/index.ts';
import { StepEngine } from '../../../src/train/index.ts';
import { assertAllclose } from '../../helpers.ts';
import {
  type F64,
  f64,
  IN,
  keyA,
  keyB,
  lin,
  loraGrads,
  micro,
  mm,
  OUT,
  probeAdapter,
  probeTask,
  randomB,
  slotKey,
  tr,
} from './probe-layer.ts';
import { trainFromYaml } from './yaml-run.ts';

after(() => shutdownRuntime());

const R = 3;

interface RefState {
  A: F64;
  B: F64;
  mA: F64;
  mB: F64;
  vA: F64;
  vB: F64;
  prevA: F64;
  prevB: F64;
  kA: number;
  kB: number;
}

/** One optimizer step of the official code in float64: A first, then B with the new A (each if its phase says). */
function refStep(x: RefState, gA: F64, gB: F64, phase: { a: boolean; b: boolean }, o: AltloraOptions, k: Ctx) {
  const [b1, b2] = o.betas;
  const c = o.grad_scale === 'inverse_s2' ? 1 / (k.s * k.s) : 1;
  const y: RefState = { ...x };
  // p ← p − step·u, then p ← p − lr·wd·p, with u the momentum (AltLoRA) or num/(√V + ε) (AltLoRA+)
  const move = (p: F64, aligned: F64, v: F64 | null, count: number) => {
    const step = k.lr / (1 - b1 ** count);
    const u = v ? aligned.map((a, i) => a / (Math.sqrt(v[i]) + o.eps)) : aligned;
    return lin(1 - k.lr * k.wd, lin(1, p, -step, u));
  };
  if (phase.a) {
    const KB = spdInverse(mm(tr(x.B, OUT, R), x.B, R, OUT, R), R, { ridge: o.reg });
    const g = lin(c, mm(KB, gA, R, R, IN));
    const T = mm(mm(KB, tr(x.B, OUT, R), R, R, OUT), x.prevB, R, OUT, R);
    const aligned = lin(b1, mm(T, x.mA, R, R, IN), 1 - b1, g);
    y.kA = x.kA + 1;
    y.vA = o.plus ? x.vA.map((v, i) => b2 * v + (1 - b2) * g[i] * g[i]) : x.vA;
    y.A = move(x.A, aligned, o.plus ? y.vA : null, y.kA);
    y.mA = o.plus && !o.plus_aligned ? lin(b1, x.mA, 1 - b1, g) : aligned;
    y.prevB = x.B;
  }
  if (phase.b) {
    const KA = spdInverse(mm(y.A, tr(y.A, R, IN), R, IN, R), R, { ridge: o.reg });
    const g = lin(c, mm(gB, KA, OUT, R, R));
    const T = mm(mm(x.prevA, tr(y.A, R, IN), R, IN, R), KA, R, R, R);
    const aligned = lin(b1, mm(x.mB, T, OUT, R, R), 1 - b1, g);
    y.kB = x.kB + 1;
    y.vB = o.plus ? x.vB.map((v, i) => b2 * v + (1 - b2) * g[i] * g[i]) : x.vB;
    y.B = move(x.B, aligned, o.plus ? y.vB : null, y.kB);
    y.mB = o.plus && !o.plus_aligned ? lin(b1, x.mB, 1 - b1, g) : aligned;
    y.prevA = y.A;
  }
  return y;
}

interface Ctx {
  s: number;
  lr: number;
  wd: number;
}

/** The engine's values as a reference state. */
function stateOf(engine: StepEngine, plus: boolean): RefState {
  const p = engine.params(),
    st = engine.optimizerState();
  const slot = (k: string) => f64(st.get(slotKey(`altlora.${k}`))!);
  const zeros = new Float64Array(0);
  return {
    A: f64(p.get(keyA)!),
    B: f64(p.get(keyB)!),
    mA: slot('exp_avg_A'),
    mB: slot('exp_avg_B'),
    vA: plus ? slot('exp_avg_sq_A') : zeros,
    vB: plus ? slot('exp_avg_sq_B') : zeros,
    prevA: slot('prev_A'),
    prevB: slot('prev_B'),
    kA: slot('count_A')[0],
    kB: slot('count_B')[0],
  };
}

function assertState(got: RefState, want: RefState, what: string, tol = { rtol: 2e-4, atol: 1e-6 }) {
  for (const k of ['A', 'B', 'mA', 'mB', 'vA', 'vB', 'prevA', 'prevB'] as const)
    assertAllclose(got[k], want[k], { ...tol, what: `${k} ${what}` });
  assert.deepEqual([got.kA, got.kB], [want.kA, want.kB], `counters ${what}`);
}

interface Case {
  what: string;
  o: Record<string, unknown>;
  /** Start from a non-zero B (every term of the rule is then active from step 1). */
  nonZeroB: boolean;
  wd: number;
  phases: string;
}
const CASES: Case[] = [
  {
    what: 'AltLoRA, code defaults (joint, c = 1), B = 0 start, weight decay',
    o: {},
    nonZeroB: false,
    wd: 0.1,
    phases: 'ab ab ab',
  },
  { what: 'AltLoRA, joint, non-zero B', o: {}, nonZeroB: true, wd: 0, phases: 'ab ab ab' },
  {
    what: 'AltLoRA+, joint, paper scaling 1/s², non-zero B',
    o: { plus: true, grad_scale: 'inverse_s2' },
    nonZeroB: true,
    wd: 0.05,
    phases: 'ab ab ab',
  },
  {
    what: 'AltLoRA+, aligned momentum stored',
    o: { plus: true, plus_aligned: true },
    nonZeroB: true,
    wd: 0,
    phases: 'ab ab ab',
  },
  {
    what: "AltLoRA, the paper's alternation (B first, every step)",
    o: { alternate: { phase_length: 1, first: 'B', joint_steps: 0 } },
    nonZeroB: true,
    wd: 0.1,
    phases: 'b a b',
  },
  {
    // δ = 1e-2: AltLoRA+'s first step from B = 0 is sign-like (V has no bias correction) and leaves BᵀB with
    // eigenvalues about (5, 2, 6e-5); with the default δ, a float32 K_B (here or in torch) is then only good to ~1e-2
    what: 'AltLoRA+, alternation after one joint step, phases of 2, B = 0 start',
    o: { plus: true, alternate: { phase_length: 2, joint_steps: 1 }, reg: 1e-2 },
    nonZeroB: false,
    wd: 0,
    phases: 'ab a a',
  },
];

for (const c of CASES) {
  test(`${c.what}: three steps of the train-step graph equal the float64 reference of the official optimizer`, async () => {
    const o = altloraOptions.parse(c.o);
    const peft = await probeAdapter({ r: R, lora_alpha: 4, altlora: c.o });
    const s = peft.get('default').layers.get('proj')!.settings.scaling;
    const task = probeTask(peft);
    const init = task.initialParams(new Rng(0)) as Record<string, Float32Array>;
    if (c.nonZeroB) init[keyB] = randomB(R, 0.3);
    const k: Ctx = { s, lr: 0.02, wd: c.wd };
    const engine = await StepEngine.create(task, { optimizer: sgd(), accumulation: 1, weightDecay: c.wd }, init);
    let traj = stateOf(engine, o.plus);
    const phases = c.phases.split(' ');
    // AltLoRA+'s first direction of an entry, 0.1·ĝ/(√(1e-3)·|ĝ| + ε), has slope ~500 at |ĝ| ~ ε: float32 rounding
    // of ĝ moves such entries by up to ~1e-5 (the float64 reference is exact)
    const atol = o.plus ? 1e-5 : 1e-6;
    for (let t = 1; t <= 3; t++) {
      const phase = altloraPhase(t, o.alternate);
      assert.equal((phase.a ? 'a' : '') + (phase.b ? 'b' : ''), phases[t - 1], `phase of step ${t}`);
      const from = stateOf(engine, o.plus);
      const g = loraGrads(from.A, from.B, R, s, t);
      const want = refStep(from, g.gA, g.gB, phase, o, k);
      await engine.run(micro(task, engine, t), k.lr);
      assertState(stateOf(engine, o.plus), want, `after step ${t}`, { rtol: 2e-4, atol });
      const gt = loraGrads(traj.A, traj.B, R, s, t);
      traj = refStep(traj, gt.gA, gt.gB, phase, o, k);
    }
    const end = stateOf(engine, o.plus);
    assert.ok(end.B.some((v) => v !== 0) && end.mA.some((v) => v !== 0), 'B and A moved');
    assertState(end, traj, 'along the reference trajectory', { rtol: 5e-4, atol });
    await engine.dispose();
  });
}

test('gradient accumulation (k = 2, rows 3 + 5) gives the same AltLoRA+ steps as the batch of 8', async () => {
  const peft = await probeAdapter({
    r: R,
    lora_alpha: 4,
    altlora: { plus: true, alternate: { joint_steps: 1, phase_length: 1 } },
  });
  const task = probeTask(peft);
  const opts = { optimizer: sgd(), weightDecay: 0.05, clipNorm: 1 };
  const init = task.initialParams(new Rng(0)) as Record<string, Float32Array>;
  init[keyB] = randomB(R, 0.3); // well-conditioned K_B (see CASES' rtol)
  const whole = await StepEngine.create(task, { ...opts, accumulation: 1 }, init);
  const split = await StepEngine.create(task, { ...opts, accumulation: 2 }, init);
  for (let t = 1; t <= 3; t++) {
    await whole.run(micro(task, whole, t), 0.02);
    await split.run(micro(task, split, t, 3), 0.02);
  }
  // atol 1e-5: AltLoRA+'s first direction 0.1·ĝ/(√(1e-3)·|ĝ| + ε) has slope ~500 at |ĝ| ~ ε, so float32 sums in
  // another order move near-zero entries by up to ~1e-5
  for (const [name, v] of whole.params())
    assertAllclose(split.params().get(name)!, v, { rtol: 1e-4, atol: 1e-5, what: name });
  for (const [name, v] of whole.optimizerState())
    assertAllclose(split.optimizerState().get(name)!, v, { rtol: 1e-4, atol: 1e-7, what: name });
  await whole.dispose();
  await split.dispose();
});

test("the phase schedule replays the official trainer's micro-batch counter (logtrainer.py), with accumulation", () => {
  // the trainer: counter += 1 per micro-batch; at counter % (alter_freq·accum) == 0 it freezes one factor (A-only
  // first, then B-only, ...), dropping the frozen factor's gradient, so the step that micro-batch ends moves one factor
  for (const [freq, accum] of [
    [10, 1],
    [10, 4],
    [3, 2],
    [1, 1],
  ]) {
    let counter = 0,
      updateA = true,
      state = 'ab';
    for (let t = 1; t <= 70; t++) {
      for (let m = 0; m < accum; m++) {
        counter++;
        if (counter % (freq * accum) === 0) {
          state = updateA ? 'a' : 'b';
          updateA = !updateA;
        }
      }
      const p = altloraPhase(t, { phase_length: freq, first: 'A', joint_steps: freq - 1 });
      assert.equal((p.a ? 'a' : '') + (p.b ? 'b' : ''), state, `alter_freq ${freq}, accumulation ${accum}, step ${t}`);
    }
  }
  // the defaults of `alternate: {}` are the trainer's
  assert.deepEqual(altloraOptions.parse({ alternate: {} }).alternate, { phase_length: 10, first: 'A', joint_steps: 9 });
  assert.deepEqual(altloraPhase(5, null), { a: true, b: true }, 'joint without alternation');
});

test('config: altlora is training-only, defaults are the official trainer’s, DoRA and a zero phase length are refused', async () => {
  const peft = await probeAdapter({ r: R, altlora: {} });
  const a = peft.get('default');
  assert.deepEqual(a.config.altlora, {
    plus: false,
    betas: [0.9, 0.999],
    eps: 1e-4,
    reg: 1e-5,
    grad_scale: 'none',
    alternate: null,
    plus_aligned: false,
  });
  assert.ok(!('altlora' in savedConfig(a.resolved)), 'left out of adapter_config.json');
  await assert.rejects(
    probeAdapter({ r: R, altlora: {}, use_dora: true }),
    (e: unknown) => e instanceof LorakitError && e.code === 'LK_CONFIG_INVALID' && /altlora.*use_dora/.test(e.message),
  );
  await assert.rejects(
    probeAdapter({ r: R, altlora: { alternate: { phase_length: 0 } } }),
    (e: unknown) => e instanceof LorakitError && e.code === 'LK_CONFIG_INVALID' && e.message.includes('phase_length'),
  );
});

test('usable from YAML: a two-step AltLoRA+ run with alternation trains, checkpoints the rule state, saves plain LoRA', async () => {
  const out = await trainFromYaml(
    ['  altlora:', '    plus: true', '    alternate: {phase_length: 1, joint_steps: 0}'].join('\n'),
  );
  try {
    assert.equal(out.result.step, 2);
    assert.ok(out.result.history.every((h) => Number.isFinite(h.loss)));
    const saved = JSON.parse(readFileSync(join(out.adapterDir, 'adapter_config.json'), 'utf8'));
    assert.equal(saved.peft_type, 'LORA');
    assert.ok(!('altlora' in saved), 'a plain LoRA folder');
    const opt = await SafetensorsFile.open(join(out.result.checkpoint, 'optimizer.safetensors'));
    const names = opt.names();
    await opt.close();
    for (const slot of ['exp_avg_sq_A', 'prev_B', 'count_B'])
      assert.ok(
        names.some((n) => n.includes(`altlora.${slot}`)),
        `${slot} is checkpointed`,
      );
  } finally {
    rmSync(out.dir, { recursive: true, force: true });
  }
});
