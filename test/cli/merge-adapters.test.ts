// `lorakit merge-adapters` run as a child process: a DARE-TIES merge with PEFT's seed and --model (for PEFT's module
// order) writes a folder that lorakit loads onto the llama fixture and that gives the logits of PEFT's own merged
// adapter (test/fixtures/compose); --help lists the flags; bad flags fail with one line naming the flag.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { parseAdapterFlag } from '../../src/cli/merge-adapters.ts';
import { SafetensorsFile } from '../../src/io/index.ts';
import { loadModel } from '../../src/models/index.ts';
import { adaptable, loadAdapter, PeftModel } from '../../src/peft/index.ts';
import { shutdownRuntime } from '../../src/runtime/index.ts';
import { assertAllclose } from '../helpers.ts';
import { logitsOf } from '../peft/logits.ts';

const tmp = await mkdtemp(join(tmpdir(), 'lorakit-merge-adapters-'));
after(async () => {
  await rm(tmp, { recursive: true, force: true });
  await shutdownRuntime();
});
const FIX = 'test/fixtures/compose';
const BASE = 'test/fixtures/models/llama';

function run(...args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(process.execPath, ['bin/lorakit.mjs', 'merge-adapters', ...args], { encoding: 'utf8' }, (e, o, s) =>
      done({ status: e ? (typeof e.code === 'number' ? e.code : 1) : 0, stdout: o, stderr: s }),
    );
  });
}

test('dare_ties with --seed and --model: the folder gives the logits of PEFT add_weighted_adapter after manual_seed', async () => {
  const c = JSON.parse(await readFile(join(FIX, 'merges.json'), 'utf8')).cases.dare_ties;
  const out = join(tmp, 'dare');
  const adapters = c.adapters.flatMap((n: string, i: number) => ['--adapter', `${FIX}/adapters/${n}:${c.weights[i]}`]);
  const r = await run(...adapters, '--combination', 'dare_ties', '--density', String(c.density), '--seed', '77');
  assert.notEqual(r.status, 0, 'no --out');
  assert.match(r.stderr, /--out <dir> is required/);
  const ok = await run(
    ...adapters,
    '--combination',
    'dare_ties',
    '--density',
    String(c.density),
    '--seed',
    '77',
    '--model',
    BASE,
    '--out',
    out,
  );
  assert.equal(ok.status, 0, ok.stderr);
  assert.match(ok.stdout, /merged 3 adapter\(s\) with dare_ties: 8 modules at rank 4 \(lora_alpha 4, scaling 1\)/);
  const model = await loadModel(BASE);
  try {
    const peft = new PeftModel(adaptable(model));
    await loadAdapter(peft, out);
    const inputs = JSON.parse(await readFile(join(BASE, 'expected.json'), 'utf8'));
    const got = await logitsOf(model, inputs, { hooks: peft.hooks() });
    const st = await SafetensorsFile.open(join(FIX, 'merges', 'dare_ties', 'expected.safetensors'));
    assertAllclose(got, await st.readAs('logits', 'f32'), { atol: 1e-4, rtol: 0, what: 'merged adapter logits' });
    await st.close();
  } finally {
    await model.close();
  }
});

test('--help lists the flags; a bad --combination or --majority-sign-method fails with one line', async () => {
  const h = await run('--help');
  assert.equal(h.status, 0);
  for (const flag of ['--adapter', '--combination', '--density', '--rank', '--svd-clamp', '--seed', '--model', '--out'])
    assert.ok(h.stdout.includes(flag), flag);
  const a = ['--adapter', `${FIX}/adapters/t1`, '--adapter', `${FIX}/adapters/t2`, '--out', join(tmp, 'x')];
  const bad = await run(...a, '--combination', 'average');
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /--combination expects one of svd, linear, cat, .*lego, got "average"/);
  const sign = await run(...a, '--combination', 'ties', '--density', '0.5', '--majority-sign-method', 'median');
  assert.match(sign.stderr, /--majority-sign-method expects total or frequency/);
});

test('--adapter DIR[:WEIGHT]: the text after the last colon is a weight only when it is a number', () => {
  assert.deepEqual(parseAdapterFlag('runs/a:0.5'), { dir: 'runs/a', weight: 0.5 });
  assert.deepEqual(parseAdapterFlag('runs/a:-1e-1'), { dir: 'runs/a', weight: -0.1 });
  assert.deepEqual(parseAdapterFlag('runs/a'), { dir: 'runs/a', weight: 1 });
  assert.deepEqual(parseAdapterFlag('C:/runs/a'), { dir: 'C:/runs/a', weight: 1 });
  assert.deepEqual(parseAdapterFlag('runs/a:b'), { dir: 'runs/a:b', weight: 1 });
});
