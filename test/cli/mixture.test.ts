// `lorakit mixture` run as a child process on the llama fixture: --help lists the flags; a short ReMix run and a
// short LoRA-Mixer run (both stages) from YAML configs and two text domains write mixture folders whose saved values
// give, with --mixture, exactly the held-out losses the training run printed; the experts moved from their zero B;
// bad flags fail with one line naming the flag.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { parseDomainFlag } from '../../src/cli/mixture.ts';
import { MixtureModel } from '../../src/peft/mixture/index.ts';

const tmp = await mkdtemp(join(tmpdir(), 'lorakit-mixture-'));
after(() => rm(tmp, { recursive: true, force: true }));
const BASE = 'test/fixtures/models/llama';

function run(...args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(process.execPath, ['bin/lorakit.mjs', 'mixture', ...args], { encoding: 'utf8' }, (e, o, s) =>
      done({ status: e ? (typeof e.code === 'number' ? e.code : 1) : 0, stdout: o, stderr: s }),
    );
  });
}

test('--help lists the flags; bad flags name themselves', async () => {
  const h = await run('--help');
  assert.equal(h.status, 0);
  for (const f of ['--config', '--mixture', '--domain', '--brown', '--steps', '--hard-steps', '--out'])
    assert.ok(h.stdout.includes(f), f);
  const r = await run('--model', BASE, '--config', 'x.yaml', '--out', join(tmp, 'x'));
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /--domain <name=file>/);
  assert.throws(() => parseDomainFlag('nofile'), /NAME=FILE/);
  assert.deepEqual(parseDomainFlag('a=b=c.txt'), { name: 'a', file: 'b=c.txt' });
});

test('ReMix and LoRA-Mixer train from YAML, save, and the saved folder evaluates to the same losses', async () => {
  const words = (seed: number) =>
    Array.from({ length: 1500 }, (_, i) => ['the', 'a', 'cat', 'sat', 'on', 'mat', 'dog'][(i * seed + i) % 7]).join(
      ' ',
    );
  await writeFile(join(tmp, 'a.txt'), words(3));
  await writeFile(join(tmp, 'b.txt'), words(5));
  const domains = ['--domain', `a=${join(tmp, 'a.txt')}`, '--domain', `b=${join(tmp, 'b.txt')}`];
  const shape = ['--batch', '2', '--seq-len', '16', '--eval-windows', '4', '--model', BASE];
  const configs = {
    remix: 'method: remix\nnum_experts: 3\nr: 2\ntop_k: 2\nsamples: 2\nlora_alpha: 8\n',
    lora_mixer: 'method: lora_mixer\nnum_experts: 2\nr: 2\ntop_k: 1\nentropy_sign: "-"\n',
  };
  for (const [method, yaml] of Object.entries(configs)) {
    await writeFile(join(tmp, `${method}.yaml`), yaml);
    const out = join(tmp, method);
    const steps = ['--steps', '2', '--hard-steps', '2'];
    const r = await run('--config', join(tmp, `${method}.yaml`), '--out', out, ...domains, ...shape, ...steps);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`trained ${method}`));
    const stages = method === 'remix' ? ['sample'] : ['hard', 'soft'];
    for (const s of stages) assert.match(r.stderr, new RegExp(`${s} step 2:`));
    const losses = r.stdout.split('\n').filter((l) => l.includes('held-out'));
    assert.equal(losses.length, 2);
    const again = await run('--mixture', out, ...domains, ...shape);
    assert.equal(again.status, 0, again.stderr);
    assert.deepEqual(
      again.stdout.split('\n').filter((l) => l.includes('held-out')),
      losses,
    );
    const mix = await MixtureModel.load(out);
    assert.equal(mix.config.method, method);
    const b = [...mix.values].filter(([n]) => n.endsWith('experts_B'));
    assert.ok(
      b.some(([, v]) => v.some((x) => x !== 0)),
      'the experts trained',
    );
  }
});
