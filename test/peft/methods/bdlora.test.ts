// BD-LoRA against independent references: the toy model's logits and merged weights against a float64 host model with
// ΔW = s·B·A formed from dense block-diagonal factors built from the stored blocks; PEFT 0.21.2's own BD-LoRA
// adapters (interop/make_bdlora_fixtures.py) give PEFT's logits unmerged and merged, and PEFT's initialisation facts
// (which factor, shapes, Kaiming a = 0 bound, zero B) hold for lorakit's; PEFT's rules refused alike (overlap,
// match_strict, divisibility). lorakit → PEFT: test/peft/roundtrip.test.ts (case llama_bdlora).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { LorakitError } from '../../../src/errors.ts';
import { SafetensorsFile } from '../../../src/io/index.ts';
import { loadModel } from '../../../src/models/index.ts';
import { adaptable, blockDiagonal, loadAdapter, PeftModel } from '../../../src/peft/index.ts';
import { assertAllclose } from '../../helpers.ts';
import { hostLogits, mm64 } from '../host.ts';
import { logitsOf } from '../logits.ts';
import { perturbAdapter, toyBase, toyLogits } from '../toy.ts';

const ROOT = new URL('../../../', import.meta.url).pathname;
const isLorakitError =
  (code: string, ...parts: string[]) =>
  (e: unknown) =>
    e instanceof LorakitError && e.code === code && parts.every((p) => e.message.includes(p));

/** Block-diagonal A on the toy's 6 → 5 layer, B on its 5 → 6 layer, 2 blocks; r 4. */
const TOY = {
  r: 4,
  lora_alpha: 6,
  target_modules: ['q_proj'],
  use_bdlora: { target_modules_bd_a: ['layers.0.q_proj'], target_modules_bd_b: ['layers.1.q_proj'], nblocks: 2 },
};

async function bdOn(config: Record<string, unknown>): Promise<PeftModel> {
  const peft = new PeftModel(toyBase());
  await peft.addAdapter('default', config, { seed: 3 });
  return peft;
}

test('blockDiagonal places the stored row blocks on the diagonal (torch.block_diag of chunk(w, nb, dim=0))', () => {
  // w [4, 2]: rows 0-1 are block 0 ([2, 2]), rows 2-3 block 1; dense [4, 4]
  const w = Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8]);
  assert.deepEqual([...blockDiagonal(w, 4, 4, 2)], [1, 2, 0, 0, 3, 4, 0, 0, 0, 0, 5, 6, 0, 0, 7, 8]);
  // a wide factor: B [2, 4/2] with 2 blocks of [1, 2]
  assert.deepEqual([...blockDiagonal(Float32Array.from([1, 2, 3, 4]), 2, 4, 2)], [1, 2, 0, 0, 0, 0, 3, 4]);
});

test('BD-LoRA logits equal a float64 host model with the dense block-diagonal factors; merged = W0 + ΔW', async () => {
  const peft = await bdOn(TOY);
  const a = peft.get('default');
  const shapes = [...a.layers.values()].map((l) => l.specs.map((s) => s.shape));
  assert.deepEqual(shapes, [
    [
      [4, 3],
      [5, 4],
    ],
    [
      [4, 5],
      [6, 2],
    ],
  ]);
  perturbAdapter(peft);
  const deltas = new Map(
    [...a.layers].map(([path, l]) => {
      const [out, inn] = [l.info.outFeatures, l.info.inFeatures];
      const A = path.includes('layers.0') ? blockDense(l.values['lora_A.weight'], 4, inn) : l.values['lora_A.weight'];
      const B = path.includes('layers.1') ? blockDense(l.values['lora_B.weight'], out, 4) : l.values['lora_B.weight'];
      return [path, mm64(B, A, out, 4, inn).map((v) => 1.5 * v)] as const;
    }),
  );
  const want = hostLogits(deltas);
  assertAllclose(await toyLogits(peft), want, { atol: 1e-5, what: 'unmerged' });
  await peft.merge();
  assertAllclose(await toyLogits(peft), want, { atol: 1e-5, what: 'merged' });
  const layers = [...a.layers.values()].map((l) => ({ layer: l.info, settings: l.settings }));
  assert.equal(a.method.trainableCount(a.config, layers), (4 * 6) / 2 + 5 * 4 + 4 * 5 + (6 * 4) / 2);
});

/** The dense [rows, cols] block-diagonal matrix of stored blocks [rows, cols/2], written out independently. */
function blockDense(w: Float32Array, rows: number, cols: number): Float64Array {
  const [n, m] = [rows / 2, cols / 2];
  const d = new Float64Array(rows * cols);
  for (let i = 0; i < 2; i++)
    for (let p = 0; p < n; p++) for (let q = 0; q < m; q++) d[(i * n + p) * cols + i * m + q] = w[(i * n + p) * m + q];
  return d;
}

test("PEFT's BD-LoRA adapters give PEFT's logits in lorakit, unmerged and merged (1e-4)", async () => {
  for (const c of ['llama_bdlora', 'llama_bdlora_loose']) {
    const dir = join(ROOT, 'test/fixtures/bdlora', c);
    const expected = JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8'));
    const model = await loadModel(join(ROOT, expected.base_model));
    try {
      const peft = new PeftModel(adaptable(model));
      const { unused } = await loadAdapter(peft, dir);
      assert.deepEqual(unused, [], c);
      const st = await SafetensorsFile.open(join(dir, 'expected.safetensors'));
      const [want, wantMerged] = [await st.readAs('logits', 'f32'), await st.readAs('merged_logits', 'f32')];
      await st.close();
      const run = () => logitsOf(model, expected, { hooks: peft.hooks(), overrides: peft.weightOverrides() });
      assertAllclose(await run(), want, { atol: 1e-4, rtol: 0, what: `${c} logits` });
      await peft.merge();
      assertAllclose(await run(), wantMerged, { atol: 1e-4, rtol: 0, what: `${c} merged logits` });
      for (const [path, l] of peft.get('default').layers) {
        const p = expected.lora_layers[path];
        assert.deepEqual([l.settings.r, l.settings.alpha], [p.r, p.lora_alpha], path);
        assertAllclose([l.settings.scaling], [p.scaling], { rtol: 1e-6, atol: 0, what: `${path} scaling` });
      }
    } finally {
      await model.close();
    }
  }
});

test("lorakit's BD-LoRA initialisation has PEFT's facts: factor, shapes, Kaiming a = 0 bound for A, zero B", async () => {
  const init = JSON.parse(readFileSync(join(ROOT, 'test/fixtures/bdlora/init.json'), 'utf8'));
  const config = JSON.parse(readFileSync(join(ROOT, 'test/fixtures/bdlora/llama_bdlora/adapter_config.json'), 'utf8'));
  const model = await loadModel(join(ROOT, 'test/fixtures/models/llama'));
  try {
    const peft = new PeftModel(adaptable(model));
    await peft.addAdapter('default', { ...config, inference_mode: false }, { seed: 4 });
    for (const [path, l] of peft.get('default').layers) {
      const f = init.llama_bdlora[path];
      const [A, B] = [l.values['lora_A.weight'], l.values['lora_B.weight']];
      assert.deepEqual(
        l.specs.map((s) => s.shape),
        [f.lora_A, f.lora_B],
        path,
      );
      if (f.block_diagonal === 'A') {
        const bound = f.kaiming_a0_bound; // √(6·nb/in): PyTorch's kaiming_uniform_ default a = 0, fan-in in/nb
        assert.ok(A.every((v) => Math.abs(v) <= bound) && Math.max(...A.map(Math.abs)) > 0.9 * bound, path);
        assert.ok(
          B.every((v) => v === 0),
          `${path}: LoRA's B = 0`,
        );
      } else {
        assert.ok(
          B.every((v) => v === 0),
          `${path}: block-diagonal B = 0`,
        );
        assert.ok(Math.max(...A.map(Math.abs)) <= 1 / Math.sqrt(l.info.inFeatures), `${path}: LoRA's A (a = √5)`);
      }
    }
  } finally {
    await model.close();
  }
});

test('BD-LoRA refuses what PEFT refuses: overlapping lists, unmatched layers under match_strict, indivisible sizes', async () => {
  const bd = (u: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
    bdOn({ ...TOY, ...extra, use_bdlora: { ...TOY.use_bdlora, ...u } });
  await assert.rejects(
    bd({ target_modules_bd_b: ['layers.0.q_proj'] }),
    isLorakitError('LK_CONFIG_INVALID', 'both target_modules_bd_a and target_modules_bd_b'),
  );
  await assert.rejects(
    bd({ target_modules_bd_b: ['nothing'] }),
    isLorakitError('LK_CONFIG_INVALID', 'model.layers.1.q_proj', 'match_strict'),
  );
  const loose = await bd({ target_modules_bd_b: ['nothing'], match_strict: false });
  assert.deepEqual(
    loose
      .get('default')
      .layers.get('model.layers.1.q_proj')!
      .specs.map((s) => s.shape),
    [
      [4, 5],
      [6, 4],
    ],
  );
  await assert.rejects(bd({ nblocks: 3 }), isLorakitError('LK_CONFIG_INVALID', 'not divisible by nblocks = 3'));
  await assert.rejects(bd({}, { r: 3 }), isLorakitError('LK_CONFIG_INVALID', 'r = 3'));
  await assert.rejects(bd({}, { init_lora_weights: 'pissa' }), isLorakitError('LK_UNSUPPORTED', 'init_lora_weights'));
  await assert.rejects(bd({}, { target_modules: ['c_fc'] }), isLorakitError('LK_UNSUPPORTED', 'conv1d'));
});
