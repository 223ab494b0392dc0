// ALLoRA (src/peft/methods/allora.ts) against a float64 host reference: torch's AdamW (probe-layer.ts adamwRef) with
// each row's rate lr·cᵢ, cᵢ = 1/√(‖Pᵢ‖² + 1/η²) from the values before the step (or the options' other forms), on the
// probe layer's exact gradients, over three steps of the platform's train step; B's first step from 0 moves every
// entry by about η·lr (cᵢ = η at a zero row, Adam's first direction ≈ ±1); the config refuses dropout and a scale ≠ 1
// naming the layer; and the variant trains from a YAML run config.
import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { LorakitError } from '../../../src/errors.ts';
import { type AlloraOptions, alloraOptions } from '../../../src/peft/methods/allora.ts';
import { savedConfig } from '../../../src/peft/registry.ts';
import { shutdownRuntime } from '../../../src/runtime/index.ts';
import type { StepEngine } from '../../../src/train/index.ts';
import { assertAllclose } from '../../helpers.ts';
import {
  type AdamwProbeState,
  adamwRef,
  adamwStateOf,
  assertAdamwState,
  type F64,
  keyB,
  loraGrads,
  micro,
  OUT,
  probeAdapter,
  probeEngine,
  randomB,
} from './probe-layer.ts';
import { trainFromYaml } from './yaml-run.ts';

after(() => shutdownRuntime());

const R = 3;

type RefState = AdamwProbeState;

/** cᵢ of every row of p [rows, cols] (one value per row; 'matrix' repeats the factor's). */
function coefficients(p: F64, rows: number, o: AlloraOptions): number[] {
  const cols = p.length / rows;
  const sq = Array.from({ length: rows }, (_, i) => p.slice(i * cols, (i + 1) * cols).reduce((s, v) => s + v * v, 0));
  const norms = o.granularity === 'row' ? sq : sq.map(() => sq.reduce((s, v) => s + v, 0));
  return norms.map((n) => 1 / Math.sqrt((o.norm_squared ? n : Math.sqrt(n)) + 1 / (o.eta * o.eta)));
}

/** One ALLoRA step of the reference. */
function refStep(x: RefState, t: number, lr: number, wd: number, o: AlloraOptions): RefState {
  const g = loraGrads(x.A, x.B, R, 1, t); // s = 1
  const one = (p: F64, grad: F64, m: F64, v: F64, rows: number) => {
    const c = coefficients(p, rows, o);
    const cols = p.length / rows;
    const onUpdate = o.apply_to === 'update';
    const scaled = onUpdate ? grad : grad.map((q, i) => q * c[Math.floor(i / cols)]);
    return adamwRef({ p, g: scaled, m, v }, t, onUpdate ? c.map((ci) => lr * ci) : c.map(() => lr), wd, o);
  };
  const a = one(x.A, g.gA, x.st[0], x.st[1], R);
  const b = one(x.B, g.gB, x.st[2], x.st[3], OUT);
  return { A: a.p, B: b.p, st: [a.m, a.v, b.m, b.v] };
}

const stateOf = (engine: StepEngine): RefState => adamwStateOf(engine, 'allora');

const CASES: { what: string; o: Record<string, unknown>; nonZeroB: boolean; wd: number }[] = [
  { what: 'defaults (row, squared norm, on the update), B = 0 start, weight decay', o: {}, nonZeroB: false, wd: 0.1 },
  {
    what: 'unsquared norm, one coefficient per factor, η = 5',
    o: { norm_squared: false, granularity: 'matrix', eta: 5 },
    nonZeroB: true,
    wd: 0,
  },
  { what: 'on the gradient', o: { apply_to: 'gradient' }, nonZeroB: true, wd: 0.05 },
];

for (const c of CASES) {
  test(`${c.what}: three steps of the train-step graph equal the float64 reference`, async () => {
    const o = alloraOptions.parse(c.o);
    const { peft, task, engine } = await probeEngine({ r: R, lora_alpha: R, allora: c.o }, c.wd, (init) => {
      if (c.nonZeroB) init[keyB] = randomB(R, 0.3);
    });
    assert.equal(peft.get('default').layers.get('proj')!.settings.scaling, 1);
    const lr = 0.01;
    let traj = stateOf(engine);
    for (let t = 1; t <= 3; t++) {
      const from = stateOf(engine);
      const want = refStep(from, t, lr, c.wd, o);
      await engine.run(micro(task, engine, t), lr);
      const got = stateOf(engine);
      assertAdamwState(got, want, `after step ${t}`, 1e-4);
      if (t === 1 && !c.nonZeroB) {
        // every row of B is 0: cᵢ = η, and Adam's first direction is g/(|g| + ε') ≈ ±1, so |ΔB| ≈ η·lr
        const moved = got.B.filter((v) => Math.abs(v) > 0.5 * o.eta * lr);
        assertAllclose(
          moved.map(Math.abs),
          moved.map(() => o.eta * lr),
          { rtol: 1e-3, what: '|B| after step 1' },
        );
        assert.ok(moved.length >= got.B.length - 1, 'B escapes 0 in (almost) every entry');
      }
      traj = refStep(traj, t, lr, c.wd, o);
    }
    assertAdamwState(stateOf(engine), traj, 'along the reference trajectory', 5e-4);
    await engine.dispose();
  });
}

test('config: no dropout and a scale of 1 on every layer, named in the error; PEFT defaults pass; training-only', async () => {
  const peft = await probeAdapter({ allora: {} }); // PEFT's defaults r = lora_alpha = 8
  const a = peft.get('default');
  assert.deepEqual(a.config.allora, alloraOptions.parse({}));
  assert.ok(!('allora' in savedConfig(a.resolved)), 'left out of adapter_config.json');
  const refused = async (config: Record<string, unknown>, pattern: RegExp) =>
    assert.rejects(
      probeAdapter(config),
      (e: unknown) => e instanceof LorakitError && e.code === 'LK_CONFIG_INVALID' && pattern.test(e.message),
    );
  await refused({ r: 4, lora_alpha: 8, allora: {} }, /allora needs the LoRA scale to be 1.*layer proj.*to r = 4/);
  await refused({ r: 4, lora_alpha: 4, alpha_pattern: { proj: 8 }, allora: {} }, /layer proj has lora_alpha 8/);
  await refused({ r: 4, lora_alpha: 4, lora_dropout: 0.05, allora: {} }, /allora needs lora_dropout = 0/);
  await refused({ r: 4, lora_alpha: 4, use_dora: true, allora: {} }, /allora.*use_dora/);
  await probeAdapter({ r: 4, lora_alpha: 2, use_rslora: true, allora: {} }); // α/√r = 1
});

test('usable from YAML: a two-step ALLoRA run trains and saves a plain LoRA folder', async () => {
  const out = await trainFromYaml(['  lora_alpha: 2', '  allora: {eta: 4}'].join('\n'));
  try {
    assert.equal(out.result.step, 2);
    assert.ok(out.result.history.every((h) => Number.isFinite(h.loss)));
    const saved = JSON.parse(readFileSync(join(out.adapterDir, 'adapter_config.json'), 'utf8'));
    assert.equal(saved.lora_alpha, 2);
    assert.ok(!('allora' in saved), 'a plain LoRA folder');
  } finally {
    rmSync(out.dir, { recursive: true, force: true });
  }
});
