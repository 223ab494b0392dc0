// FFA-LoRA: A comes from ffa_lora.seed and the layer path alone (two clients with different run seeds hold the same A,
// Kaiming-distributed as LoRA's), only B is a graph input, the count is r·out; the forward against a float64 host model
// with ΔW = s·B·A; the property the method exists for — averaging clients' B is exactly averaging their ΔW — against
// plain LoRA, where it is not; the saved folder is a plain LoRA folder (PEFT loads it:
// test/fixtures/lorakit/llama_ffa);
// the refusals. (Gradients of B, resume: test/peft/contract.test.ts.)
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { LorakitError } from '../../../src/errors.ts';
import { Graph } from '../../../src/graph/index.ts';
import { loadAdapter, PeftModel, paramKey, saveAdapter } from '../../../src/peft/index.ts';
import { assertAllclose } from '../../helpers.ts';
import { hostLogits, mm64 } from '../host.ts';
import { perturbAdapter, toyBase, toyLogits, toyLoss } from '../toy.ts';

const TARGETS = ['q_proj', 'c_fc'];
const CONFIG = { r: 3, lora_alpha: 6, target_modules: TARGETS, ffa_lora: { seed: 21 } };

async function client(config: Record<string, unknown>, runSeed: number): Promise<PeftModel> {
  const peft = new PeftModel(toyBase());
  await peft.addAdapter('default', config, { seed: runSeed });
  return peft;
}

test('A comes from ffa_lora.seed and the layer path only, with LoRA’s Kaiming bound; only B trains (r·out)', async () => {
  const [one, two] = [await client(CONFIG, 1), await client(CONFIG, 99)];
  const other = await client({ ...CONFIG, ffa_lora: { seed: 22 } }, 1);
  for (const [path, l] of one.get('default').layers) {
    const A = l.values['lora_A.weight'];
    assert.deepEqual(two.get('default').layers.get(path)!.values['lora_A.weight'], A, `${path}: clients share A`);
    assert.notDeepEqual(other.get('default').layers.get(path)!.values['lora_A.weight'], A, `${path}: another seed`);
    assert.ok(A.every((v) => Math.abs(v) <= 1 / Math.sqrt(l.info.inFeatures)) && A.some((v) => v !== 0), path);
    assert.ok(l.values['lora_B.weight'].every((v) => v === 0));
  }
  const { binding } = toyLoss(new Graph('ffa'), one, 'default', { training: true });
  assert.deepEqual(
    binding.trainables().map((h) => h.role),
    ['b', 'b', 'b'],
  );
  const a = one.get('default');
  const layers = [...a.layers.values()].map((l) => ({ layer: l.info, settings: l.settings }));
  assert.equal(a.method.trainableCount(a.config, layers), 3 * (5 + 6 + 4));
});

test('FFA-LoRA logits equal a float64 host model with W0 + s·B·A', async () => {
  const peft = await client(CONFIG, 1);
  perturbAdapter(peft);
  const deltas = new Map(
    [...peft.get('default').layers].map(([path, l]) => {
      const [out, inn] = [l.info.outFeatures, l.info.inFeatures];
      return [path, mm64(l.values['lora_B.weight'], l.values['lora_A.weight'], out, 3, inn).map((v) => 2 * v)] as const;
    }),
  );
  assertAllclose(await toyLogits(peft), hostLogits(deltas), { atol: 1e-5, what: 'logits' });
});

/** Two clients' adapters with different local B (as after local training), their B averaged into a third. */
async function federated(config: Record<string, unknown>) {
  const clients = [await client(config, 1), await client(config, 2)];
  clients.forEach((c, i) => {
    perturbAdapter(c, 'default', 30 + i);
  });
  const server = await client(config, 3);
  const avg = new Map<string, Float32Array>();
  for (const [k, v] of clients[0].trainableValues('default')) {
    const w = clients[1].trainableValues('default').get(k)!;
    avg.set(
      k,
      v.map((x, i) => (x + w[i]) / 2),
    );
  }
  server.setValues('default', avg);
  return { clients, server };
}

/** ΔW [out, in] of one layer in float64, from its stored factors (s = 2). */
async function deltaOf(peft: PeftModel, path: string): Promise<Float64Array> {
  const l = peft.get('default').layers.get(path)!;
  const [out, inn] = [l.info.outFeatures, l.info.inFeatures];
  return mm64(l.values['lora_B.weight'], l.values['lora_A.weight'], out, 3, inn).map((v) => 2 * v);
}

test('averaging the clients’ B averages their updates exactly (shared A); plain LoRA’s averaged factors do not', async () => {
  const path = 'model.layers.0.q_proj';
  const ffa = await federated(CONFIG);
  const mean = (ds: Float64Array[]) => ds[0].map((v, i) => (v + ds[1][i]) / 2);
  const want = mean(await Promise.all(ffa.clients.map((c) => deltaOf(c, path))));
  assertAllclose(await deltaOf(ffa.server, path), want, { atol: 1e-6, rtol: 0, what: 'FedAvg of B vs mean ΔW' });
  // plain LoRA: each client trains its own A too (here: its own init and noise), and mean(B)·mean(A) ≠ mean(B·A)
  const plain = await federated({ r: 3, lora_alpha: 6, target_modules: TARGETS });
  const wantPlain = mean(await Promise.all(plain.clients.map((c) => deltaOf(c, path))));
  const got = await deltaOf(plain.server, path);
  assert.ok(
    got.some((v, i) => Math.abs(v - wantPlain[i]) > 1e-2),
    'averaged LoRA factors are not the averaged update',
  );
});

test('the saved folder is a plain LoRA folder with the frozen A; ffa_lora is a training setting', async () => {
  const peft = await client(CONFIG, 1);
  perturbAdapter(peft);
  const dir = mkdtempSync(join(tmpdir(), 'lk-ffa-'));
  await saveAdapter(peft, 'default', dir);
  const config = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
  assert.equal(config.ffa_lora, undefined);
  assert.equal(config.peft_type, 'LORA');
  const loaded = new PeftModel(toyBase());
  await loadAdapter(loaded, dir);
  assert.equal(loaded.get('default').method.name, 'lora');
  const key = paramKey('default', 'model.layers.1.c_fc', 'lora_A.weight');
  assert.ok(!peft.trainableValues('default').has(key), 'A is not trained');
  assert.deepEqual(
    loaded.get('default').layers.get('model.layers.1.c_fc')!.values['lora_A.weight'],
    peft.get('default').layers.get('model.layers.1.c_fc')!.values['lora_A.weight'],
  );
  assertAllclose(await toyLogits(loaded), await toyLogits(peft), { atol: 0, rtol: 0, what: 'reloaded' });
});

test('ffa_lora refuses inits that compute A from the model, BD-LoRA, LoRA-Pro and embeddings', async () => {
  const refused = (extra: Record<string, unknown>, ...parts: string[]) =>
    assert.rejects(
      client({ ...CONFIG, ...extra }, 1),
      (e: unknown) => e instanceof LorakitError && parts.every((p) => e.message.includes(p)),
    );
  await refused({ init_lora_weights: 'pissa' }, 'init_lora_weights');
  await refused({ lora_pro: {} }, 'LoRA-Pro');
  await refused({ use_bdlora: { target_modules_bd_b: ['q_proj', 'c_fc'] } }, 'BD-LoRA');
  await refused({ target_modules: ['embed_tokens'] }, 'embedding');
});
