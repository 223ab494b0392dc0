// Cross-attention maps out of the UNet2DConditionModel graph against diffusers 0.35.2 (test/fixtures/clora/maps,
// interop/make_clora_fixtures.py: an attention processor recording softmax(QKᵀ/√d) per attn2): every layer's
// head-averaged map [N, h, w, L] matches to 1e-5, the noise output is unchanged by reading them, the average of the
// 8×8 layers over layers and batch rows equals CLoRA's official aggregate_attention, and selections are checked.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { join } from 'node:path';
import { LorakitError } from '../../src/errors.ts';
import { Graph } from '../../src/graph/index.ts';
import { SafetensorsFile } from '../../src/io/index.ts';
import {
  averageMaps,
  crossAttentionLayers,
  loadUNetCondition,
  selectLayers,
  unet2dConditionWithMaps,
} from '../../src/models/index.ts';
import { compile } from '../../src/runtime/index.ts';
import { assertAllclose } from '../helpers.ts';

const FIX = join(import.meta.dirname, '../fixtures');
const unet = await loadUNetCondition(join(FIX, 'unet/cond'));
after(() => unet.close());

async function tensors(path: string) {
  const f = await SafetensorsFile.open(path);
  const out: Record<string, Float32Array> = {};
  for (const n of f.names()) out[n] = await f.readAs(n, 'f32');
  await f.close();
  return out;
}

test('each cross-attention map equals diffusers; output unchanged; the 8×8 mean is aggregate_attention', async () => {
  const inputs = await tensors(join(FIX, 'unet/cond/expected.safetensors'));
  const want = await tensors(join(FIX, 'clora/maps.safetensors'));
  const g = new Graph('maps');
  const sample = g.input('sample', 'f32', [2, 2, 8, 8]);
  const timestep = g.input('timestep', 'f32', [2]);
  const states = g.input('states', 'f32', [2, 5, 12]);
  const { noise, maps } = unet2dConditionWithMaps(unet.context(g), sample, timestep, states, () => true);
  g.output('noise', noise);
  maps.forEach((m, i) => g.output(`m${i}`, m.map));
  g.output('aggregate', averageMaps(maps.filter((m) => m.layer.downscale === 1)).mean(0));
  const s = await compile(g, { worker: false });
  const out = await s.run({ sample: inputs.sample, timestep: inputs.timestep, states: inputs.states });
  assertAllclose(out.noise.data as Float32Array, inputs.output, { atol: 1e-4, rtol: 1e-4, what: 'noise' });
  assert.deepEqual(
    maps.map((m) => m.layer.path),
    crossAttentionLayers(unet.config).map((l) => l.path),
  );
  maps.forEach((m, i) => {
    assert.deepEqual(out[`m${i}`].shape, [2, 8 / m.layer.downscale, 8 / m.layer.downscale, 5]);
    assertAllclose(out[`m${i}`].data as Float32Array, want[m.layer.path], { atol: 1e-5, what: m.layer.path });
  });
  assertAllclose(out.aggregate.data as Float32Array, want.aggregate_1, { atol: 1e-5, what: 'aggregate_attention' });
  await s.dispose();
});

test('selections: handles pick their layers; an empty or unknown selection names the layers there are', () => {
  const all = crossAttentionLayers(unet.config);
  assert.deepEqual(
    all.map((l) => [l.place, l.block, l.attention, l.downscale]),
    [
      ['down', 0, 0, 1],
      ['mid', 0, 0, 2],
      ['up', 1, 0, 1],
      ['up', 1, 1, 1],
    ],
  );
  assert.deepEqual(selectLayers(unet.config, [all[2]]), [all[2]]);
  assert.deepEqual(selectLayers(unet.config, (l) => l.place === 'up').length, 2);
  const refuses = (f: () => unknown, text: RegExp) =>
    assert.throws(
      f,
      (e: unknown) => e instanceof LorakitError && e.code === 'LK_INVALID_ARGUMENT' && text.test(e.message),
    );
  refuses(() => selectLayers(unet.config, (l) => l.downscale === 4), /picks no cross-attention layer.*mid_block/);
  refuses(() => selectLayers(unet.config, [{ ...all[0], block: 1 }]), /no cross-attention layer down block 1/);
});
