// Stable-LoRA (src/peft/methods/stable_lora.ts) against a float64 host reference of the official optimizer
// (Yize-Wu/Stable-LoRA stable_lora.py): per step, from the values before it, ‖A‖ < ρ·‖B‖ (ρ = numel(A)/numel(B))
// stops the shrink for good, otherwise A ← (1 − λ)·A; then torch's AdamW (probe-layer.ts adamwRef) on A and B. On the
// probe layer's exact gradients: three steps at the example's λ; a fast schedule (λ = 0.3) whose stop step the graph
// and the reference must both find, with the flag never coming back; a stopped layer with a large A is not shrunk;
// and the variant trains from a YAML run config.
import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { SafetensorsFile } from '../../../src/io/index.ts';
import { STOPPED, type StableLoraOptions, stableLoraOptions } from '../../../src/peft/methods/stable_lora.ts';
import { savedConfig } from '../../../src/peft/registry.ts';
import { shutdownRuntime } from '../../../src/runtime/index.ts';
import type { StepEngine } from '../../../src/train/index.ts';
import {
  type AdamwProbeState,
  adamwRef,
  adamwStateOf,
  assertAdamwState,
  frob2,
  IN,
  keyA,
  loraGrads,
  micro,
  OUT,
  probeAdapter,
  probeEngine,
  slotKey,
} from './probe-layer.ts';
import { trainFromYaml } from './yaml-run.ts';

after(() => shutdownRuntime());

const R = 2;
const RHO = (R * IN) / (OUT * R); // numel(A)/numel(B) = in/out

interface RefState extends AdamwProbeState {
  stopped: boolean;
}

/** One step of the official optimizer in float64; `shrunk` says whether this step shrank A. */
function refStep(x: RefState, t: number, s: number, lr: number, wd: number, o: StableLoraOptions) {
  const g = loraGrads(x.A, x.B, R, s, t); // at the values before the shrink, as torch's backward saw them
  const stopped = x.stopped || Math.sqrt(frob2(x.A)) < RHO * Math.sqrt(frob2(x.B));
  const A = stopped ? x.A : x.A.map((v) => v * (1 - o.shrink_ratio));
  const a = adamwRef({ p: A, g: g.gA, m: x.st[0], v: x.st[1] }, t, new Array(R).fill(lr), wd, o);
  const b = adamwRef({ p: x.B, g: g.gB, m: x.st[2], v: x.st[3] }, t, new Array(OUT).fill(lr), wd, o);
  return { state: { A: a.p, B: b.p, st: [a.m, a.v, b.m, b.v], stopped }, shrunk: !stopped };
}

function stateOf(engine: StepEngine): RefState {
  const flag = engine.optimizerState().get(slotKey(STOPPED))![0];
  assert.ok(flag === 0 || flag === 1, `the stop flag is 0 or 1, got ${flag}`);
  return { ...adamwStateOf(engine, 'stable_lora'), stopped: flag === 1 };
}

function assertState(got: RefState, want: RefState, what: string, rtol = 1e-4) {
  assert.equal(got.stopped, want.stopped, `stop flag ${what}`);
  assertAdamwState(got, want, what, rtol);
}

async function setup(o: Record<string, unknown>, wd: number) {
  const { peft, task, engine } = await probeEngine({ r: R, lora_alpha: 4, stable_lora: o }, wd);
  const s = peft.get('default').layers.get('proj')!.settings.scaling;
  return { task, engine, s, o: stableLoraOptions.parse(o) };
}

test("the example's settings (λ = 5e-4, weight decay 0.01): three steps equal the float64 reference", async () => {
  const { task, engine, s, o } = await setup({}, 0.01);
  const lr = 0.01;
  let traj = stateOf(engine);
  for (let t = 1; t <= 3; t++) {
    const want = refStep(stateOf(engine), t, s, lr, 0.01, o);
    assert.ok(want.shrunk, `step ${t} shrinks (‖A‖ is far above ρ·‖B‖ this early)`);
    await engine.run(micro(task, engine, t), lr);
    assertState(stateOf(engine), want.state, `after step ${t}`);
    traj = refStep(traj, t, s, lr, 0.01, o).state;
  }
  assertState(stateOf(engine), traj, 'along the reference trajectory', 5e-4);
  await engine.dispose();
});

test('the shrink schedule stops at the step the reference stops, for good (λ = 0.3)', async () => {
  const { task, engine, s, o } = await setup({ shrink_ratio: 0.3 }, 0);
  const lr = 0.05;
  const stops: number[] = [];
  let traj = stateOf(engine);
  const ratios: number[] = [];
  for (let t = 1; t <= 12; t++) {
    const from = stateOf(engine);
    ratios.push(Math.sqrt(frob2(from.A)) / (RHO * Math.sqrt(frob2(from.B))));
    const want = refStep(from, t, s, lr, 0, o);
    await engine.run(micro(task, engine, t), lr);
    const got = stateOf(engine);
    assertState(got, want.state, `after step ${t}`);
    if (got.stopped && !from.stopped) stops.push(t);
    if (from.stopped) assert.ok(got.stopped, `the flag stays set at step ${t}`);
    traj = refStep(traj, t, s, lr, 0, o).state;
  }
  assert.equal(stops.length, 1, `the shrink stops once within 12 steps (‖A‖/ρ‖B‖ before each step: ${ratios})`);
  const k = stops[0];
  assert.ok(k > 1, 'it shrinks at least once first');
  assert.ok(ratios[k - 1] < 1 && ratios.slice(0, k - 1).every((q) => q >= 1), 'it stops at the first ‖A‖ < ρ·‖B‖');
  assert.equal(traj.stopped, true, 'the reference trajectory stops too');
  assertState(stateOf(engine), traj, 'along the reference trajectory', 1e-3);
  await engine.dispose();
});

test('a stopped layer is never shrunk again, even with ‖A‖ far above ρ·‖B‖; an active one is', async () => {
  for (const stopped of [true, false]) {
    const { task, engine, s, o } = await setup({ shrink_ratio: 0.3 }, 0);
    await engine.run(micro(task, engine, 1), 0.01);
    const params = engine.params();
    const state = engine.optimizerState();
    params.set(
      keyA,
      params.get(keyA)!.map((v) => 10 * v),
    ); // ‖A‖ ≫ ρ·‖B‖
    state.set(slotKey(STOPPED), Float32Array.of(stopped ? 1 : 0));
    engine.restore(1, params, state);
    const want = refStep(stateOf(engine), 2, s, 0.01, 0, o);
    assert.equal(want.shrunk, !stopped);
    await engine.run(micro(task, engine, 2), 0.01);
    assertState(stateOf(engine), want.state, `after a step with the flag ${stopped ? 'set' : 'clear'}`);
    await engine.dispose();
  }
});

test('usable from YAML: a two-step Stable-LoRA run trains, checkpoints its stop flag, saves plain LoRA', async () => {
  const out = await trainFromYaml('  stable_lora: {shrink_ratio: 0.01}');
  try {
    assert.equal(out.result.step, 2);
    assert.ok(out.result.history.every((h) => Number.isFinite(h.loss)));
    const saved = JSON.parse(readFileSync(join(out.adapterDir, 'adapter_config.json'), 'utf8'));
    assert.ok(!('stable_lora' in saved), 'a plain LoRA folder');
    const opt = await SafetensorsFile.open(join(out.result.checkpoint, 'optimizer.safetensors'));
    const names = opt.names();
    await opt.close();
    assert.equal(names.filter((n) => n.includes(STOPPED)).length, 4, 'one stop flag per adapted layer (2 layers × 2)');
  } finally {
    rmSync(out.dir, { recursive: true, force: true });
  }
});

test('config: defaults are the official example’s, and the field is training-only', async () => {
  const peft = await probeAdapter({ r: R, stable_lora: {} });
  const a = peft.get('default');
  assert.deepEqual(a.config.stable_lora, { shrink_ratio: 5e-4, betas: [0.9, 0.999], eps: 1e-8 });
  assert.ok(!('stable_lora' in savedConfig(a.resolved)));
});
