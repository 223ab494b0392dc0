// Optimizers against plain-JS implementations of PyTorch's update rules, over several steps.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Graph } from '../../src/graph/index.ts';
import { Runtime, compile } from '../../src/runtime/index.ts';
import { adamw, sgd, addTrainStep, TrainStepRunner, type Optimizer } from '../../src/optim/index.ts';
import { assertAllclose, randArray } from '../helpers.ts';

/** loss = Σ (p ⊙ c)² / 2 with gradient p ⊙ c², so the reference knows every gradient exactly. */
async function run(
  opt: Optimizer,
  steps: number,
  { lr = 0.1, wd = 0, clipNorm }: { lr?: number; wd?: number; clipNorm?: number } = {},
) {
  const n = 6;
  const c = randArray(n, 9, 0.5, 1.5);
  const g = new Graph();
  const p = g.input('p', 'f32', [n]);
  const pc = p.mul(g.constant(c, 'f32', [n]));
  const layout = addTrainStep(g, pc.mul(pc).sum().mul(0.5), {
    optimizer: opt,
    groups: [{ params: [p], weightDecay: wd }],
    clipNorm,
  });
  const s = await compile(g, { worker: false });
  const p0 = Float32Array.from(randArray(n, 4));
  const r = new TrainStepRunner(s, layout, { p: p0 });
  const norms: number[] = [];
  for (let t = 0; t < steps; t++) norms.push((await r.step({}, lr)).grad_norm);
  return { p: r.param('p'), p0, c, norms };
}

test('AdamW matches PyTorch semantics (bias correction, decoupled decay) over 5 steps', async () => {
  const [b1, b2, eps, lr, wd] = [0.9, 0.99, 1e-8, 0.05, 0.1];
  const { p, p0, c } = await run(adamw({ beta1: b1, beta2: b2, eps }), 5, { lr, wd });
  const ref = Float64Array.from(p0),
    m = new Float64Array(6),
    v = new Float64Array(6);
  for (let t = 1; t <= 5; t++) {
    for (let i = 0; i < 6; i++) {
      const gi = ref[i] * c[i] * c[i];
      ref[i] *= 1 - lr * wd;
      m[i] = b1 * m[i] + (1 - b1) * gi;
      v[i] = b2 * v[i] + (1 - b2) * gi * gi;
      ref[i] -= (lr * (m[i] / (1 - b1 ** t))) / (Math.sqrt(v[i] / (1 - b2 ** t)) + eps);
    }
  }
  assertAllclose(p, ref, { rtol: 1e-5, atol: 1e-6, what: 'AdamW params' });
});

// torch's own float32 ops are not all correctly rounded (its vectorised sqrt is a 0.5-ulp approximation), so
// the parameters agree to a few ulps; the float32 bias corrections lorakit used to compute were off by 6.7e-6
// (β2 0.999) and 8.3e-5 (β2 0.9999) relative per step, which this tolerance catches.
test("AdamW follows PyTorch's AdamW to a few ulps over 12 steps (float64 bias corrections, torch's op order)", async () => {
  const fx = JSON.parse(readFileSync(new URL('../fixtures/optim/adamw.json', import.meta.url), 'utf8'));
  for (const c of fx.cases) {
    const g = new Graph('adamw-parity');
    const p = g.input('p', 'f32', [8]);
    const grad = g.input('c', 'f32', [8]); // loss = Σ p·c: the gradient is c exactly, in torch and here
    const opt = adamw({ beta1: c.beta1, beta2: c.beta2, eps: c.eps });
    const groups = [{ params: [p], weightDecay: c.weight_decay }];
    const layout = addTrainStep(g, p.mul(grad).sum(), { optimizer: opt, groups });
    const r = new TrainStepRunner(await compile(g, { worker: false }), layout, { p: Float32Array.from(fx.p0) });
    for (let t = 0; t < fx.lrs.length; t++) {
      await r.step({ c: Float32Array.from(fx.grads[t]) }, fx.lrs[t]);
      assertAllclose(r.param('p'), c.params[t], { rtol: 1e-6, atol: 1e-7, what: `${c.name}, step ${t + 1}` });
    }
  }
});

test('SGD with Nesterov momentum and L2 decay matches PyTorch over 4 steps', async () => {
  const [mu, lr, wd] = [0.9, 0.1, 0.01];
  const { p, p0, c } = await run(sgd({ momentum: mu, nesterov: true }), 4, { lr, wd });
  const ref = Float64Array.from(p0),
    b = new Float64Array(6);
  for (let t = 0; t < 4; t++) {
    for (let i = 0; i < 6; i++) {
      const gi = ref[i] * c[i] * c[i] + wd * ref[i];
      b[i] = mu * b[i] + gi;
      ref[i] -= lr * (gi + mu * b[i]);
    }
  }
  assertAllclose(p, ref, { rtol: 1e-5, atol: 1e-6, what: 'SGD params' });
});

test('global-norm clipping scales the step and reports the unclipped norm', async () => {
  const { p, p0, c, norms } = await run(sgd(), 1, { lr: 1, clipNorm: 0.01 });
  const gfull = Array.from(p0, (v, i) => v * c[i] * c[i]);
  const norm = Math.hypot(...gfull);
  assertAllclose([norms[0]], [norm], { rtol: 1e-5, what: 'grad_norm' });
  const scale = 0.01 / (norm + 1e-6);
  assertAllclose(
    p,
    Array.from(p0, (v, i) => v - gfull[i] * scale),
    { rtol: 1e-5, atol: 1e-7, what: 'clipped step' },
  );
});

test('bad optimizer options are rejected', () => {
  assert.throws(() => adamw({ beta1: 1 }), /beta1 must be in \[0, 1\)/);
  assert.throws(() => sgd({ nesterov: true }), /nesterov needs momentum/);
});

// The step joins a group's parameters of equal trailing dimensions into one tensor for an elementwise optimizer
// (step.ts buckets): the values must be those of one update per parameter, bit for bit, in fewer nodes. The global
// norm sums squares per bucket, so with clipping its rounding (and the clipped step's) may differ in the last bits.
test('bucketed AdamW and SGD updates equal per-parameter ones bit for bit (decay, a scalar, clipping)', async () => {
  const shapes = [[4, 3], [2, 3], [5], [3], [], [6, 2], [1, 3]];
  const build = async (opt: Optimizer, clipNorm?: number) => {
    const g = new Graph('buckets');
    const ps = shapes.map((s, k) => g.input(`p${k}`, 'f32', s));
    // a loss whose gradient differs per element and per parameter: Σ_k (k + 1)·Σ sin(p_k)·p_k²
    const loss = ps
      .map((p, k) =>
        p
          .sin()
          .mul(p)
          .mul(p)
          .sum()
          .mul(k + 1),
      )
      .reduce((a, b) => a.add(b));
    const groups = [
      { params: ps.slice(0, 4), weightDecay: 0.1 },
      { params: ps.slice(4), lrRatio: 2 },
    ];
    const layout = addTrainStep(g, loss, { optimizer: opt, groups, clipNorm });
    const init = Object.fromEntries(
      shapes.map((s, k) => [
        `p${k}`,
        Float32Array.from(
          randArray(
            s.reduce((a, b) => a * b, 1),
            30 + k,
          ),
        ),
      ]),
    );
    const r = new TrainStepRunner(await compile(g, { worker: false }), layout, init);
    const norms: number[] = [];
    for (let t = 0; t < 4; t++) norms.push((await r.step({}, 0.05)).grad_norm);
    return { r, norms, nodes: g.nodes.length };
  };
  for (const opt of [adamw({ beta2: 0.99 }), sgd({ momentum: 0.9, nesterov: true })]) {
    for (const clipNorm of [undefined, 0.5]) {
      const joined = await build(opt, clipNorm);
      const single = await build({ ...opt, elementwise: false }, clipNorm);
      const what = `${opt.name}, clip ${clipNorm}`;
      assertAllclose(joined.norms, single.norms, { rtol: 1e-6, what: `${what}: grad norms` });
      for (const k of shapes.keys()) {
        const states = joined.r.layout.state.filter((x) => x.name.startsWith(`p${k}::`));
        const pairs: [Float32Array, Float32Array, string][] = [
          [joined.r.param(`p${k}`), single.r.param(`p${k}`), `p${k}`],
          ...states.map((x): [Float32Array, Float32Array, string] => [
            joined.r.values.get(x.name)!,
            single.r.values.get(x.name)!,
            x.name,
          ]),
        ];
        for (const [a, b, name] of pairs)
          if (clipNorm === undefined) assert.deepEqual(a, b, `${what}: ${name}`);
          else assertAllclose(a, b, { rtol: 1e-5, atol: 1e-7, what: `${what}: ${name}` });
      }
      assert.ok(joined.nodes < single.nodes, `${what}: ${joined.nodes} nodes joined, ${single.nodes} one by one`);
    }
  }
});

// A bucket's Split sizes must stay inline in a saved optimised model: ORT's shape inference cannot read an external
// one when it loads the model, and every warm start would then compile again (step.ts BUCKET_MAX).
test('a step with 150 parameters of one shape runs from its saved optimised model alone', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lk-buckets-'));
  try {
    // a frozen weight in a file: only such graphs get a disk entry, and with it a saved optimised model
    const path = join(dir, 'w.bin');
    writeFileSync(path, new Uint8Array(new Float32Array([1, 2, 3, 4, 5, 6]).buffer));
    const build = () => {
      const g = new Graph('many');
      const w = g.initializer('w', 'f32', [3, 2], { kind: 'file', path, offset: 0, length: 24 });
      const ps = Array.from({ length: 150 }, (_, k) => g.input(`p${k}`, 'f32', [3, 2]));
      const loss = ps.map((p) => p.mul(w).mul(p).sum()).reduce((a, b) => a.add(b));
      return { g, layout: addTrainStep(g, loss, { optimizer: adamw(), groups: [{ params: ps }] }) };
    };
    const init = Object.fromEntries(Array.from({ length: 150 }, (_, k) => [`p${k}`, new Float32Array(6).fill(k)]));
    const opts = { cacheDir: join(dir, 'cache'), persistOptimized: true, worker: false };
    const first = build();
    const s1 = await new Runtime().compile(first.g, opts);
    const r1 = new TrainStepRunner(s1, first.layout, init);
    await r1.step({}, 0.1);
    await s1.dispose();
    // model.onnx unreadable: the next session can only come from optimized.onnx
    const model = join(dir, 'cache', 'entries', s1.key, 'model.onnx');
    writeFileSync(model, 'not a model');
    const again = build();
    const s2 = await new Runtime().compile(again.g, opts);
    const r2 = new TrainStepRunner(s2, again.layout, init);
    await r2.step({}, 0.1);
    assert.deepEqual(r2.param('p149'), r1.param('p149'));
    // a saved model that failed to load would have sent the runtime back to a rebuilt entry
    assert.equal(readFileSync(model, 'utf8'), 'not a model', 'the entry was rebuilt: the saved model did not load');
    await s2.dispose();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
