// IntTune (the official inttune.py: requires_grad False on lora_A and lora_B): only the cores N are graph inputs of a
// training graph, training moves N and leaves A and B bit for bit as initialised (also through save and load), the
// count is r² per layer, and inttune without a core is refused. (Gradients of N against finite differences, resume:
// test/peft/contract.test.ts.)
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { LorakitError } from '../../../src/errors.ts';
import { Graph } from '../../../src/graph/index.ts';
import { loadAdapter, PeftModel, saveAdapter } from '../../../src/peft/index.ts';
import { train } from '../../../src/train/index.ts';
import { assertAllclose } from '../../helpers.ts';
import { toyBase, toyLogits, toyLoss, toyTask } from '../toy.ts';

const TARGETS = ['q_proj', 'c_fc'];

async function inttuneOn(config: Record<string, unknown> = {}): Promise<PeftModel> {
  const peft = new PeftModel(toyBase());
  const c = { r: 2, lora_alpha: 3, init_lora_weights: 'n_lora', inttune: true, target_modules: TARGETS, ...config };
  await peft.addAdapter('default', c, { seed: 3 });
  return peft;
}

test('IntTune trains only the r×r cores: A and B are constants of the training graph; the count is r² per layer', async () => {
  const peft = await inttuneOn();
  const g = new Graph('inttune');
  const { binding } = toyLoss(g, peft, 'default', { training: true });
  const handles = binding.trainables();
  assert.deepEqual(
    handles.map((h) => [h.layer, h.role, h.tensor.shape]),
    [
      ['model.layers.0.q_proj', 'core', [2, 2]],
      ['model.layers.1.q_proj', 'core', [2, 2]],
      ['model.layers.1.c_fc', 'core', [2, 2]],
    ],
  );
  const a = peft.get('default');
  const layers = [...a.layers.values()].map((l) => ({ layer: l.info, settings: l.settings }));
  assert.equal(a.method.trainableCount(a.config, layers), 3 * 4);
  assert.equal(
    [...peft.trainableValues('default').values()].reduce((n, v) => n + v.length, 0),
    12,
  );
});

test('training moves N and leaves A and B as initialised, also in the saved folder (a plain n_lora folder)', async () => {
  const peft = await inttuneOn();
  const before = new Map([...peft.get('default').layers].map(([p, l]) => [p, { ...l.values }]));
  const run = await train(toyTask(peft, 'default'), {
    outputDir: mkdtempSync(join(tmpdir(), 'lk-inttune-')),
    steps: 3,
    lr: 0.05,
    seed: 5,
    progress: 'none',
    plot: false,
  });
  peft.setValues('default', run.params);
  for (const [path, l] of peft.get('default').layers) {
    const was = before.get(path)!;
    assert.deepEqual(l.values['lora_A.weight'], was['lora_A.weight'], `${path} A frozen`);
    assert.deepEqual(l.values['lora_B.weight'], was['lora_B.weight'], `${path} B frozen`);
    assert.ok(
      l.values['lora_N.weight'].some((v, i) => v !== was['lora_N.weight'][i]),
      `${path} N trained`,
    );
  }
  const dir = mkdtempSync(join(tmpdir(), 'lk-inttune-'));
  await saveAdapter(peft, 'default', dir);
  const config = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
  assert.equal(config.inttune, undefined, 'inttune is a training setting');
  assert.equal(config.init_lora_weights, 'n_lora');
  const loaded = new PeftModel(toyBase());
  await loadAdapter(loaded, dir);
  assert.deepEqual(loaded.get('default').method.name, 'lora+slora+nlora');
  assertAllclose(await toyLogits(loaded), await toyLogits(peft), { atol: 0, rtol: 0, what: 'reloaded' });
});

test('inttune needs a core: refused with init_lora_weights true, accepted with s_lora', async () => {
  await assert.rejects(
    inttuneOn({ init_lora_weights: true }),
    (e: unknown) => e instanceof LorakitError && e.code === 'LK_CONFIG_INVALID' && e.message.includes('inttune'),
  );
  const s = await inttuneOn({ init_lora_weights: 's_lora' });
  assert.equal(s.get('default').method.name, 'lora+slora+inttune');
});
