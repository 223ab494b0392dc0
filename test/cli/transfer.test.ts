// `lorakit transfer` run as child processes on tiny bases: kit → lora writes a PEFT LoRA for the 128-wide target
// from a 64-wide source's adapter; organ → transplant writes a model folder with the extra layer; a bad step and a
// cross-width transplant fail with one line.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel } from '../../src/models/index.ts';
import { PeftModel, adaptable, saveAdapter } from '../../src/peft/index.ts';
import { transfer } from '../../src/train/index.ts';
import { tinyBase, tinyShape } from '../train/transfer/tiny.ts';

const tmp = await mkdtemp(join(tmpdir(), 'lorakit-transfer-cli-'));
after(() => rm(tmp, { recursive: true, force: true }));

function lorakit(...args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(
      process.execPath,
      ['bin/lorakit.mjs', 'transfer', ...args],
      { encoding: 'utf8' },
      (err, stdout, stderr) => {
        done({ status: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
      },
    );
  });
}

const TEXT = Array.from(
  { length: 8 },
  (_, i) => `Paragraph ${i}: the quick brown fox jumps over the lazy dog, and the cat sleeps by the door.`,
).join('\n\n');

test('transfer kit + lora: a PEFT LoRA for the target from the source adapter and the kit', async () => {
  const source = await tinyBase(tinyShape(2, 1), 31);
  const target = await tinyBase(tinyShape(2, 2), 32);
  const data = join(tmp, 'task.txt');
  await writeFile(data, TEXT);
  const m = await loadModel(source);
  const peft = new PeftModel(adaptable(m));
  await peft.addAdapter('default', transfer.transferLoraConfig(4, 8));
  await saveAdapter(peft, 'default', join(tmp, 'src-lora'), { baseModel: source });
  await m.close();
  const common = ['--steps', '3', '--batch', '2'];
  const kit = await lorakit(
    'kit',
    '--model',
    source,
    '--data',
    data,
    '--out',
    join(tmp, 'kit'),
    '--length',
    '8',
    ...common,
  );
  assert.equal(kit.status, 0, kit.stderr);
  assert.match(kit.stdout, /discriminator loss \d+\.\d{4} -> \d+\.\d{4}; kit written to /);
  const kitJson = JSON.parse(await readFile(join(tmp, 'kit', 'transfer_kit.json'), 'utf8'));
  assert.equal(kitJson.seeds.length, 5);
  assert.deepEqual(kitJson.tokens, { separator: 124, real: 89, synthetic: 78 });
  const r = await lorakit(
    'lora',
    '--source',
    source,
    '--adapter',
    join(tmp, 'src-lora'),
    '--kit',
    join(tmp, 'kit'),
    '--target',
    target,
    '--out',
    join(tmp, 'moved'),
    '--keep',
    '4',
    '--rounds',
    '1',
    ...common,
  );
  assert.equal(r.status, 0, r.stderr);
  const cfg = JSON.parse(await readFile(join(tmp, 'moved', 'final', 'adapter_config.json'), 'utf8'));
  assert.equal(cfg.peft_type, 'LORA');
  assert.equal(cfg.r, 4);
  assert.equal(cfg.base_model_name_or_path, target);
  assert.match(r.stdout, /candidates: \d+\/\d+ passed \(\d+ filled\); distillation KL/);
  // early stopping on held-out rows, and the ablation without the filter
  const early = await lorakit(
    'kit',
    '--model',
    source,
    '--data',
    data,
    '--out',
    join(tmp, 'kit-early'),
    '--length',
    '8',
    '--held-out',
    '2',
    '--eval-every',
    '1',
    ...common,
  );
  assert.equal(early.status, 0, early.stderr);
  assert.match(early.stdout, /; kept step [123] \(held-out loss \d+\.\d{4}\); kit written to /);
  assert.ok(existsSync(join(tmp, 'kit-early', 'run', 'best', 'adapter_config.json')));
  const plain = await lorakit(
    'lora',
    '--source',
    source,
    '--adapter',
    join(tmp, 'src-lora'),
    '--kit',
    join(tmp, 'kit-early'),
    '--target',
    target,
    '--out',
    join(tmp, 'moved-plain'),
    '--keep',
    '4',
    '--unfiltered',
    ...common,
  );
  assert.equal(plain.status, 0, plain.stderr);
  assert.match(plain.stdout, /round 1: \d+ candidates from the target \(no filter\)\ncandidates: unfiltered; /);
});

test('transfer organ + transplant: a model folder with one more layer; widths must match', async () => {
  const base = await tinyBase(tinyShape(3, 1), 33);
  const wide = await tinyBase(tinyShape(3, 2), 34);
  const data = join(tmp, 'organ.txt');
  await writeFile(data, TEXT);
  const o = await lorakit(
    'organ',
    '--model',
    base,
    '--data',
    data,
    '--out',
    join(tmp, 'organ'),
    '--layers',
    '1',
    '--steps',
    '2',
    '--batch',
    '2',
    '--seq-len',
    '16',
  );
  assert.equal(o.status, 0, o.stderr);
  assert.match(o.stdout, /organ: layers 1\.\.1, final loss \d+\.\d{4}; written to /);
  const t = await lorakit(
    'transplant',
    '--organ',
    join(tmp, 'organ'),
    '--recipient',
    base,
    '--position',
    '1',
    '--out',
    join(tmp, 'model'),
  );
  assert.equal(t.status, 0, t.stderr);
  assert.equal(JSON.parse(await readFile(join(tmp, 'model', 'config.json'), 'utf8')).num_hidden_layers, 4);
  const bad = await lorakit(
    'transplant',
    '--organ',
    join(tmp, 'organ'),
    '--recipient',
    wide,
    '--position',
    '0',
    '--out',
    join(tmp, 'bad'),
  );
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /^lorakit: transplant: organ tensor .* width .*\[LK_SHAPE_MISMATCH\]\n$/);
  const step = await lorakit('graft', '--out', join(tmp, 'x'));
  assert.equal(
    step.stderr,
    'lorakit: transfer: unknown step "graft"; steps: kit, lora, organ, transplant [LK_INVALID_ARGUMENT]\n',
  );
});
