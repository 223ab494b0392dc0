// CLoRA's gradient with respect to the latent, through every pass of the U-Net: on the tiny diffusers
// UNet2DConditionModel fixture with two random LoRAs and a background pass, classifier-free batch [uncond, cond], the
// graph's ∂loss/∂latent (lorakit's autodiff) equals float64 central differences of the same loss at a few latent
// entries; and the graph's loss equals the loss of its own map outputs recomputed on the host.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { buildCloraGraph } from '../../src/diffusion/index.ts';
import { compile } from '../../src/runtime/index.ts';
import { randArray } from '../helpers.ts';
import { f64Convs, fixturePasses } from './clora-helpers.ts';
import { hostCloraLoss } from './clora-reference.ts';

const fx = await fixturePasses();
after(() => fx.unet.close());
const LATENT = [2, 8, 8] as const;

test('∂loss/∂latent through three U-Net passes equals float64 central differences', async () => {
  const g = buildCloraGraph(
    {
      unet: fx.unet,
      passes: fx.passes,
      latent: LATENT,
      uncond: fx.uncond,
      layers: (l) => l.downscale === 1, // down block 0 and up block 1: two layers averaged
      concepts: fx.concepts,
      temperature: 0.5,
      dtype: 'f64',
      wrapHooks: f64Convs,
    },
    true,
  );
  const s = await compile(g, { worker: false, optimization: 'disabled' });
  const latent = randArray(2 * 64, 5);
  const timestep = Float64Array.of(37);
  const run = async () => {
    const out = await s.run({ latent: { data: latent, shape: [1, ...LATENT] }, timestep });
    return { loss: (out.loss.data as Float64Array)[0], grad: out.grad.data as Float64Array };
  };
  const { loss, grad } = await run();
  assert.ok(loss > 0 && Number.isFinite(loss), `loss ${loss}`);
  const norm = Math.hypot(...grad);
  assert.ok(norm > 1e-6, `the latent gradient is not zero (norm ${norm})`);
  const h = 1e-5;
  for (const k of [9, 27, 64 + 18, 64 + 45]) {
    const v = latent[k];
    latent[k] = v + h;
    const up = (await run()).loss;
    latent[k] = v - h;
    const down = (await run()).loss;
    latent[k] = v;
    const numeric = (up - down) / (2 * h);
    assert.ok(
      Math.abs(grad[k] - numeric) <= 1e-6 * norm + 1e-5 * Math.abs(numeric),
      `latent[${k}]: autodiff ${grad[k]}, central differences ${numeric} (gradient norm ${norm})`,
    );
  }
  await s.dispose();
});

test('the graph loss is the host NT-Xent of its own map outputs; the passes differ by their LoRA', async () => {
  const g = buildCloraGraph(
    {
      unet: fx.unet,
      passes: fx.passes,
      latent: LATENT,
      layers: (l) => l.place === 'mid',
      concepts: fx.concepts,
      temperature: 0.5,
    },
    true,
  );
  const s = await compile(g, { worker: false });
  const out = await s.run({
    latent: { data: Float32Array.from(randArray(128, 6)), shape: [1, ...LATENT] },
    timestep: Float32Array.of(500),
  });
  const maps = [0, 1, 2].map((p) => out[`map${p}`].data as Float32Array);
  assert.deepEqual(out.map0.shape, [4, 4, 5], 'the mid block works at 1/2 of the 8×8 latent');
  for (const m of maps)
    for (let i = 0; i < 16; i++) {
      const row = m.subarray(i * 5, i * 5 + 5).reduce((a, b) => a + b, 0);
      assert.ok(Math.abs(row - 1) < 1e-5, `attention over the 5 tokens sums to 1 (got ${row})`);
    }
  const want = hostCloraLoss(maps, [4, 4, 5], fx.concepts, 0.5);
  assert.ok(Math.abs((out.loss.data as Float32Array)[0] - want) < 1e-5, `loss ${out.loss.data[0]} vs host ${want}`);
  const [n0, n1] = [out.noise0.data as Float32Array, out.noise1.data as Float32Array];
  assert.ok(
    n0.some((v, i) => Math.abs(v - n1[i]) > 1e-3),
    'the dog LoRA changes the noise prediction',
  );
  await s.dispose();
});
