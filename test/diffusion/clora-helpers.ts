// Shared by the CLoRA tests: the tiny diffusers UNet2DConditionModel fixture (test/fixtures/unet/cond: 8×8 latents with
// 2 channels, cross-attention in down block 0, the mid block and up block 1, 2 heads, states [5, 12]), two random
// LoRAs on its attention projections, and a Conv2d in float64 from slices and matrix products (ORT's Conv has no f64
// kernel) for gradient checks in float64.
import { join } from 'node:path';
import type { Tensor } from '../../src/graph/index.ts';
import { loadUNetCondition } from '../../src/models/index.ts';
import type { Conv2dModule, ModuleHooks } from '../../src/nn/index.ts';
import { PeftModel } from '../../src/peft/index.ts';
import { type CloraPass, passAdapter } from '../../src/diffusion/index.ts';
import { randArray } from '../helpers.ts';

export const COND_DIR = join(import.meta.dirname, '../fixtures/unet/cond');

/** Opens the fixture U-Net and makes three passes: the background (no LoRA, no mask) and two concept LoRAs. */
export async function fixturePasses() {
  const unet = await loadUNetCondition(COND_DIR);
  const peft = new PeftModel(unet.base());
  const lora = { peft_type: 'LORA', r: 2, lora_alpha: 4, init_lora_weights: false };
  await peft.addAdapter('dog', { ...lora, target_modules: ['to_q', 'to_k', 'to_v'] }, { seed: 1 });
  await peft.addAdapter('cat', { ...lora, target_modules: ['to_k', 'to_v', 'to_out.0'] }, { seed: 2 });
  const adapter = (name: string) => passAdapter(peft, name);
  const states = (seed: number) => Float32Array.from(randArray(5 * 12, seed));
  // prompt 1 names the dog at tokens 1 and 2, prompt 2 the cat at token 3; the background prompt names both
  const passes: CloraPass[] = [
    { states: states(10), adapter: null, maskTokens: [] },
    { states: states(11), adapter: adapter('dog'), maskTokens: [1, 2] },
    { states: states(12), adapter: adapter('cat'), maskTokens: [3] },
  ];
  const concepts = [
    [
      { prompt: 0, token: 1 },
      { prompt: 1, token: 1 },
      { prompt: 1, token: 2 },
    ],
    [
      { prompt: 0, token: 3 },
      { prompt: 2, token: 3 },
    ],
  ];
  return { unet, passes, concepts, uncond: Float32Array.from(randArray(5 * 12, 13)) };
}

/** torch.nn.Conv2d (groups 1, zero padding) as Σ over kernel taps of W[:, :, i, j] · strided slice of the padded x. */
export function sliceConv2d(x: Tensor, m: Conv2dModule): Tensor {
  const g = x.graph;
  const [n, c, h, w] = x.shape as number[];
  const [ph, pw] = m.padding;
  const [sh, sw] = m.stride;
  const [kh, kw] = m.kernel;
  const zeros = (t: Tensor, axis: number, p: number) => {
    const shape = t.shape.map((d, i) => (i === axis ? p : d)) as number[];
    return g.constant(new Float64Array(shape.reduce((a, b) => a * b, 1)), t.dtype, shape);
  };
  // zero padding, plus `stride` extra zeros at the end so that every tap's window of stride·out rows fits
  const pad = (t: Tensor, axis: number, p: number, s: number) =>
    g.concat(p ? [zeros(t, axis, p), t, zeros(t, axis, p + s)] : [t, zeros(t, axis, s)], axis);
  const xp = pad(pad(x, 2, ph, sh), 3, pw, sw); // [N, C, H + 2ph + sh, W + 2pw + sw]
  const [ho, wo] = [Math.floor((h + 2 * ph - kh) / sh) + 1, Math.floor((w + 2 * pw - kw) / sw) + 1];
  let y: Tensor | null = null;
  for (let i = 0; i < kh; i++)
    for (let j = 0; j < kw; j++) {
      // every stride-th row and column from tap (i, j), with unit-step slices only (Slice's gradient needs them)
      const patch = xp
        .slice([i, j], [i + sh * ho, j + sw * wo], [2, 3])
        .reshape([n, c, ho, sh, wo, sw])
        .slice([0, 0], [1, 1], [3, 5])
        .reshape([n, c, ho, wo]); // [N, C, ho, wo]
      const tap = m.weight.slice([i, j], [i + 1, j + 1], [2, 3]).reshape([m.outChannels, c]); // [O, C]
      const term = tap.matmul(patch.reshape([n, c, ho * wo])); // [N, O, ho·wo]
      y = y ? y.add(term) : term;
    }
  const out = y!.reshape([n, m.outChannels, ho, wo]);
  return m.bias ? out.add(m.bias.reshape([1, m.outChannels, 1, 1])) : out;
}

/** Hooks whose convolutions run in f64 (sliceConv2d); other modules go through `inner`. */
export const f64Convs = (inner: ModuleHooks): ModuleHooks => ({ ...inner, conv2d: (m, x) => sliceConv2d(x, m) });
