// FedSmoothClient on the tiny Llama fixture against a float64 host reference: the frozen weight it sets (the
// backbone W0 + s·(B_m·A_m + B_s·A_s), shifted by −s·Ŵ_ga for training), the LoRA it starts from, and the upload it
// sends; round 1 with the gradient-aligned init (from the calibration hook) starts exactly at the backbone, and a
// later round starts where the client's last upload left it (round-matching, ζ = 1).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FedSmoothClient } from '../../src/federated/fedsmooth-client.ts';
import type { WireTensor } from '../../src/federated/npy.ts';
import { loadModel } from '../../src/models/index.ts';
import { PeftModel, adaptable, paramKey } from '../../src/peft/index.ts';
import { TokenDataset } from '../../src/train/data/index.ts';
import { assertAllclose, randArray } from '../helpers.ts';

const root = new URL('../../', import.meta.url).pathname;
const PATH = 'model.layers.1.self_attn.q_proj';
const [D, R, S] = [64, 2, 2]; // q_proj is [64, 64]; r = 2, lora_alpha = 4: s = 2

const wire = (shape: number[], data: ArrayLike<number>): WireTensor => ({
  dtype: 'float32',
  shape,
  data: Float32Array.from(data),
});
/** Dense [D, D] = b [D, k] · a [k, D] in float64 (the reference's own loop). */
function prod(b: ArrayLike<number>, a: ArrayLike<number>, k: number): Float64Array {
  const out = new Float64Array(D * D);
  for (let i = 0; i < D; i++)
    for (let j = 0; j < D; j++) for (let p = 0; p < k; p++) out[i * D + j] += b[i * k + p] * a[p * D + j];
  return out;
}

async function setup() {
  const model = await loadModel(`${root}test/fixtures/models/llama`);
  const peft = new PeftModel(adaptable(model));
  await peft.addAdapter('default', {
    peft_type: 'LORA',
    r: R,
    lora_alpha: 2 * R,
    target_modules: ['q_proj'],
    layers_to_transform: [1],
  });
  const [T, rows] = [8, 4];
  const ids = Int32Array.from({ length: rows * T }, (_, i) => (i * 37 + 11) % 384);
  const train = new TokenDataset({ seqLen: T, ids, labels: ids, lengths: new Uint32Array(rows).fill(T) }, 0);
  const client = new FedSmoothClient({ model, peft, adapter: 'default', train, batchSize: 2 });
  const w0 = Float64Array.from(await model.read(`${PATH}.weight`));
  const frozen = async () => Float64Array.from(await peft.frozenWeight(`${PATH}.weight`));
  const lora = () => {
    const v = peft.trainableValues('default');
    return {
      a: v.get(paramKey('default', PATH, 'lora_A.weight'))!,
      b: v.get(paramKey('default', PATH, 'lora_B.weight'))!,
    };
  };
  return { model, peft, client, w0, frozen, lora };
}

test('round 1, gradient-aligned init: backbone W0 − s·Ŵ_ga, and W0 exactly once the LoRA is added', async () => {
  const { model, client, w0, frozen, lora } = await setup();
  try {
    await client.prepareTrain(new Map(), new Map(), { zeta: 1, gamma: 16, gaBatches: 1, dataSeed: 0 });
    const l = lora();
    const start = (await frozen()).map((w, i) => w + S * prod(l.b, l.a, R)[i]);
    assertAllclose(start, w0, { rtol: 0, atol: 1e-6, what: 'W0 − s·Ŵ_ga + s·B·A' });
    const shift = (await frozen()).reduce((m, w, i) => Math.max(m, Math.abs(w - w0[i])), 0);
    assert.ok(shift > 1e-4, `the backbone moved by ${shift}`); // Ŵ_ga is not zero
    // the upload of untrained factors is B·A − Ŵ_ga = 0: nothing learned, nothing sent
    const up = client.upload(
      new Map([
        [paramKey('default', PATH, 'lora_A.weight'), l.a],
        [paramKey('default', PATH, 'lora_B.weight'), l.b],
      ]),
    );
    const u = prod(up.get(`${PATH}.lora_B.weight`)!.data, up.get(`${PATH}.lora_A.weight`)!.data, R);
    assert.ok(
      u.every((x) => Math.abs(x) < 1e-6),
      'upload of the start is ~0',
    );
  } finally {
    await model.close();
  }
});

test('a later round: backbone W0 + s·(merged + global), LoRA = trunc_r(last upload − global), evaluation on W0 + s·merged', async () => {
  const { model, client, w0, frozen, lora } = await setup();
  try {
    const last = { a: randArray(R * D, 1), b: randArray(D * R, 2) };
    client.upload(
      new Map([
        [paramKey('default', PATH, 'lora_A.weight'), Float32Array.from(last.a)],
        [paramKey('default', PATH, 'lora_B.weight'), Float32Array.from(last.b)],
      ]),
    );
    // the global LoRA: B_s = B_c·diag(0.5, −1), A_s = A_c (float32 as it travels), so B_c·A_c − B_s·A_s has rank r
    const upB = Float32Array.from(last.b),
      upA = Float32Array.from(last.a);
    const gB = upB.map((x, i) => x * (i % R === 0 ? 0.5 : -1));
    const merged = { a: randArray(2 * R * D, 3), b: randArray(D * 2 * R, 4) };
    const global = new Map([
      [`${PATH}.lora_A.weight`, wire([R, D], upA)],
      [`${PATH}.lora_B.weight`, wire([D, R], gB)],
    ]);
    const mergedRec = new Map([
      [`${PATH}.lora_A.weight`, wire([2 * R, D], merged.a)],
      [`${PATH}.lora_B.weight`, wire([D, 2 * R], merged.b)],
    ]);
    await client.prepareTrain(global, mergedRec, { zeta: 1, gamma: 16, gaBatches: 0, dataSeed: 0 });
    const m = prod(Float32Array.from(merged.b), Float32Array.from(merged.a), 2 * R);
    const g = prod(gB, upA, R);
    const backbone = w0.map((w, i) => w + S * (m[i] + g[i]));
    assertAllclose(await frozen(), backbone, { rtol: 0, atol: 1e-5, what: 'W0 + s·(M + G_s)' });
    const l = lora();
    const start = backbone.map((w, i) => w + S * prod(l.b, l.a, R)[i]);
    // where the client left off: the previous backbone W0 + s·M plus its last upload
    const c = prod(upB, upA, R);
    assertAllclose(
      start,
      w0.map((w, i) => w + S * (m[i] + c[i])),
      { rtol: 0, atol: 1e-5, what: 'round-matched start' },
    );
    await client.prepareEvaluate(global, mergedRec);
    assertAllclose(
      await frozen(),
      w0.map((w, i) => w + S * m[i]),
      { rtol: 0, atol: 1e-5, what: 'W0 + s·M' },
    );
    assertAllclose(lora().b, gB, { rtol: 0, atol: 0, what: 'evaluated LoRA B = B_s' });
  } finally {
    await model.close();
  }
});
