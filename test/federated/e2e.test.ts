// End to end on a real Flower 1.42 SuperLink (loopback, started here) with the ServerApp of interop/flower_app and
// three lorakit clients on non-IID Brown-fiction genres (test/federated/harness.ts): after 3 rounds of FedSmoothLoRA,
// FFA-LoRA and LoRA-FAIR the global held-out loss (each client's held-out files, weighted by rows) is below the
// initial adapter's, and the bytes each way are what the rule sends. FedAvg federates in safety.test.ts (with a kill
// and node auth); scripts/fl-table.ts runs all four for docs/federated.md's table. This file runs beside the other
// tests (scripts/run-tests.mjs): it mostly waits on Flower. Skips when interop/.venv-flower is absent (.ci/run
// creates it); to run it:
//   python3 -m venv interop/.venv-flower && interop/.venv-flower/bin/pip install -r interop/requirements-flower.txt
//   node scripts/run-tests.mjs test/federated/e2e.test.ts
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type FederationOptions, noFlower, runFederation } from './harness.ts';

const RANK = 4;
const D = 256; // demo base hidden size; v_proj's output is 2 kv heads × 64 = 128
const LAYERS = 4;
/** Bytes of one client's float32 A factors and B factors (q_proj and v_proj of every layer). */
const A_BYTES = 4 * LAYERS * 2 * RANK * D;
const B_BYTES = 4 * LAYERS * RANK * (D + 128);

const small = (strategy: FederationOptions['strategy'], dir: string): FederationOptions => ({
  dir,
  strategy,
  rounds: 3,
  localSteps: 4,
  lr: 1e-2,
  rank: RANK,
  batch: 4,
  seqLen: 64,
  trainBytes: 30_000,
  evalBytes: 2_000,
});

test('fedsmooth: 3 lorakit clients, 3 rounds on a real SuperLink, the global held-out loss falls', {
  skip: noFlower ?? false,
  timeout: 900_000,
}, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'lorakit-fl-fedsmooth-'));
  try {
    const r = await runFederation(small('fedsmooth', dir));
    const losses = r.history.map((h) => h.eval_loss);
    assert.equal(r.history.length, 4, JSON.stringify(r.history));
    assert.ok(
      losses.every((l) => typeof l === 'number' && Number.isFinite(l)),
      JSON.stringify(losses),
    );
    assert.ok(losses[3]! < losses[0]! - 1e-3, `held-out loss ${losses.join(' → ')}`);
    const keep = process.env.LORAKIT_FL_RESULTS;
    if (keep) await writeFile(join(keep, 'fedsmooth.json'), JSON.stringify(r.history, null, 1));
    for (const h of r.history.slice(1)) {
      assert.equal(h.clients, 3, JSON.stringify(h));
      assert.equal(h.lora_modules, 2 * LAYERS); // the rule saw every A/B pair
      assert.equal(h.bytes_up, 3 * (A_BYTES + B_BYTES)); // each client's rank-r SVD of its update: A and B
    }
    // down: nothing in round 1 (the seed); then the global LoRA, and from round 3 the merged factors too (rank r·(t−2))
    assert.deepEqual(
      r.history.slice(1).map((h) => h.bytes_down),
      [0, 3 * (A_BYTES + B_BYTES), 3 * 2 * (A_BYTES + B_BYTES)],
    );
    for (const c of r.clients) assert.deepEqual(c.answered, { evaluate: 4, train: 3 });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

for (const strategy of ['ffa', 'fair'] as const) {
  test(`${strategy}: 3 lorakit clients, 3 rounds on a real SuperLink, the global held-out loss falls`, {
    skip: noFlower ?? false,
    timeout: 900_000,
  }, async () => {
    const dir = await mkdtemp(join(tmpdir(), `lorakit-fl-${strategy}-`));
    try {
      const r = await runFederation(small(strategy, dir));
      const losses = r.history.map((h) => h.eval_loss);
      assert.equal(r.history.length, 4, JSON.stringify(r.history));
      assert.ok(
        losses.every((l) => typeof l === 'number' && Number.isFinite(l)),
        JSON.stringify(losses),
      );
      assert.ok(losses[3]! < losses[0]! - 1e-3, `held-out loss ${losses.join(' → ')}`);
      for (const h of r.history.slice(1)) {
        assert.equal(h.clients, 3, JSON.stringify(h));
        assert.equal(h.lora_modules, strategy === 'ffa' ? 0 : 2 * LAYERS); // the rule saw every A/B pair (FAIR too)
      }
      // what travelled: FFA-LoRA sends B only, LoRA-FAIR A and B, from each of the 3 clients
      const up = strategy === 'ffa' ? 3 * B_BYTES : 3 * (A_BYTES + B_BYTES);
      for (const h of r.history.slice(1)) assert.equal(h.bytes_up, up);
      assert.equal(r.history[1].bytes_down, 0); // round 1 starts from the seed on every client
      assert.equal(r.history[2].bytes_down, up); // then the global adapter goes to 3 clients
      for (const c of r.clients) assert.deepEqual(c.answered, { evaluate: 4, train: 3 });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
}
