// CLoRA as a sampler plug-in on the tiny diffusers UNet2DConditionModel fixture: one hook step equals
// latent − η·∇ with ∇ computed separately (clora.gradient), the schedule (max_iter_to_alter, iterative steps) is
// followed, and predictNoise's masks and fusion equal a host reference of the official attention_map_to_mask and
// guidance lines, computed from the per-pass noises and maps of a separately built graph.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { buildCloraGraph, clora, cloraMasks, fuseNoise } from '../../src/diffusion/index.ts';
import { compile } from '../../src/runtime/index.ts';
import { assertAllclose, randArray } from '../helpers.ts';
import { fixturePasses } from './clora-helpers.ts';

const fx = await fixturePasses();
after(() => fx.unet.close());
const SHAPE = [1, 2, 8, 8];
const mid = (l: { place: string }) => l.place === 'mid';

test('one hook step is latent − η·∇loss, at the steps the schedule names, repeated at iterative steps', async () => {
  const c = clora({ unet: fx.unet, passes: fx.passes, concepts: fx.concepts, uncond: fx.uncond, layers: mid });
  const latent = Float32Array.from(randArray(128, 21));
  const { loss, grad } = await c.gradient(latent, 300);
  assert.ok(loss > 0 && grad.some((g) => Math.abs(g) > 1e-7), 'a nonzero gradient');
  const stepped = await c.hook({ latent, shape: SHAPE, step: 0, timestep: 300 });
  assertAllclose(
    stepped,
    latent.map((v, i) => v - 20 * grad[i]),
    { atol: 1e-6, rtol: 1e-5, what: 'hook step' },
  );
  const late = await c.hook({ latent, shape: SHAPE, step: 30, timestep: 300 });
  assert.deepEqual(late, latent, 'no update at step ≥ max_iter_to_alter (30)');
  await c.close();

  const it = clora({
    unet: fx.unet,
    passes: fx.passes,
    concepts: fx.concepts,
    layers: mid,
    stepSize: 5,
    iterativeSteps: [2],
    iterativeStepsSteps: 2,
  });
  let z = Float32Array.from(latent);
  for (let k = 0; k < 3; k++) {
    const g = (await it.gradient(z, 300)).grad;
    z = z.map((v, i) => v - 5 * g[i]);
  }
  const three = await it.hook({ latent, shape: SHAPE, step: 2, timestep: 300 });
  assertAllclose(three, z, { atol: 1e-5, rtol: 1e-4, what: '1 + 2 updates at an iterative step' });
  assert.ok(
    (await it.gradient(three, 300)).loss < (await it.gradient(latent, 300)).loss,
    'the updates lower the contrastive loss',
  );
  await it.close();
});

test('predictNoise fuses the passes with the official masks and guidance (host reference)', async () => {
  const alpha = 0.4;
  const c = clora({
    unet: fx.unet,
    passes: fx.passes,
    concepts: fx.concepts,
    uncond: fx.uncond,
    layers: mid,
    guidanceScale: 3,
    maskThreshold: alpha,
  });
  const latent = Float32Array.from(randArray(128, 22));
  await c.hook({ latent, shape: SHAPE, step: 40, timestep: 700 }); // past max_iter_to_alter: no update
  const eps = await c.predictNoise(latent, 700);
  // the same passes, built and run separately
  const g = buildCloraGraph(
    {
      unet: fx.unet,
      passes: fx.passes,
      latent: [2, 8, 8],
      uncond: fx.uncond,
      layers: mid,
      concepts: fx.concepts,
      temperature: 0.5,
    },
    false,
  );
  const s = await compile(g, { worker: false });
  const out = await s.run({ latent: { data: latent, shape: SHAPE }, timestep: Float32Array.of(700) });
  const maps = [0, 1, 2].map((p) => out[`map${p}`].data as Float32Array);
  // host masks: per token > α·max, union, background fills the rest, nearest 4×4 → 8×8
  const small = maps.map((m, p) => {
    const mask = new Array(16).fill(0);
    for (const tok of fx.passes[p].maskTokens) {
      const v = Array.from({ length: 16 }, (_, i) => m[i * 5 + tok]);
      const max = Math.max(...v);
      v.forEach((x, i) => {
        if (x > alpha * max) mask[i] = 1;
      });
    }
    return mask;
  });
  for (let i = 0; i < 16; i++) if (small.every((m) => m[i] === 0)) small[0][i] = 1;
  const want = new Float64Array(128);
  for (let ch = 0; ch < 2; ch++)
    for (let y = 0; y < 8; y++)
      for (let x = 0; x < 8; x++) {
        const cell = (y >> 1) * 4 + (x >> 1);
        const at = ch * 64 + y * 8 + x;
        const fused = (row: number) => {
          let [num, den] = [0, 0];
          for (let p = 0; p < 3; p++) {
            num += small[p][cell] * (out[`noise${p}`].data as Float32Array)[row * 128 + at];
            den += small[p][cell];
          }
          return num / den;
        };
        want[at] = fused(0) + 3 * (fused(1) - fused(0));
      }
  assertAllclose(eps, want, { atol: 1e-5, rtol: 1e-4, what: 'fused, guided noise' });
  const m = c.lastMasks()[0];
  assert.ok(
    [1, 2].some((p) => m.subarray(p * 64, (p + 1) * 64).some((v) => v === 1)),
    'a concept mask is not empty',
  );
  for (let i = 0; i < 64; i++) assert.ok(m[i] + m[64 + i] + m[128 + i] >= 1, 'every position is covered');
  // before apply_mask_after every mask is 1: the passes are averaged evenly (the sampler passes the step)
  const early = clora({
    unet: fx.unet,
    passes: fx.passes,
    concepts: fx.concepts,
    uncond: fx.uncond,
    layers: mid,
    guidanceScale: 3,
    applyMaskAfter: 1,
  });
  const even = await early.predictNoise(latent, 700, 0);
  const noise = (p: number, row: number, k: number) => (out[`noise${p}`].data as Float32Array)[row * 128 + k];
  const mean = (row: number, k: number) => (noise(0, row, k) + noise(1, row, k) + noise(2, row, k)) / 3;
  assertAllclose(
    even,
    Float64Array.from({ length: 128 }, (_, k) => mean(0, k) + 3 * (mean(1, k) - mean(0, k))),
    { atol: 1e-5, rtol: 1e-4, what: 'even average before apply_mask_after' },
  );
  assert.ok(early.lastMasks()[0].every((v) => v === 1));
  await early.close();
  await s.dispose();
  await c.close();
});

test('cloraMasks: morphology is 3×3 max pooling, erosion its complement; fuseNoise divides by the mask sum', () => {
  // one pass, one token, a single hot cell in a 4×4 map: dilation grows it to its 3×3 neighbourhood
  const map = new Float32Array(16 * 1);
  map[5] = 1;
  const dilated = cloraMasks([new Float32Array(16), map], [4, 4, 1], [[], [0]], 0.5, [4, 4], { dilate: true });
  assert.deepEqual(Array.from(dilated.subarray(16)), [1, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 0, 0]);
  assert.deepEqual(
    Array.from(dilated.subarray(0, 16)),
    [0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1, 1],
    'background takes the rest',
  );
  const eroded = cloraMasks([new Float32Array(16), map], [4, 4, 1], [[], [0]], 0.5, [4, 4], { opening: true });
  assert.equal(
    eroded.subarray(16).reduce((a, b) => a + b, 0),
    0,
    'opening removes a single cell',
  );
  const fused = fuseNoise([Float32Array.of(1, 2), Float32Array.of(3, 6)], Float32Array.of(1, 1, 0, 1), 1, 2);
  assert.deepEqual(Array.from(fused), [1, 4], '(1·1)/1 and (2 + 6)/2');
});
