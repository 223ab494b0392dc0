// `lorakit adaptive-merge` run as a child process on the llama fixture with two random LoRA folders: AdaMerging
// writes a PEFT LoRA folder whose ΔW is Σ cᵢ·sᵢ·BᵢAᵢ with the printed coefficients' shape (cat layout, scaling 1);
// Arrow (the library call) writes a router folder that reads back as the same pool; a bad --method fails with one
// line naming the flag.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { adaptiveMergeFolders, readArrowFolder } from '../../src/adaptive/index.ts';
import { compose } from '../../src/peft/index.ts';
import { shutdownRuntime } from '../../src/runtime/index.ts';
import { randomLora, TARGETS } from '../adaptive/tiny.ts';

const tmp = await mkdtemp(join(tmpdir(), 'lorakit-adaptive-merge-'));
after(async () => {
  await rm(tmp, { recursive: true, force: true });
  await shutdownRuntime();
});
const BASE = 'test/fixtures/models/llama';

function run(...args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(process.execPath, ['bin/lorakit.mjs', 'adaptive-merge', ...args], { encoding: 'utf8' }, (e, o, s) =>
      done({ status: e ? (typeof e.code === 'number' ? e.code : 1) : 0, stdout: o, stderr: s }),
    );
  });
}

async function writeRandom(name: string, seed: number): Promise<string> {
  const ad = randomLora(seed, 2, 2, 0.2);
  const dir = join(tmp, name);
  const config = {
    peft_type: 'LORA',
    r: 2,
    lora_alpha: 4,
    target_modules: TARGETS.map(([p]) => p.split('.').pop()),
    base_model_name_or_path: BASE,
  };
  await compose.writeLora(dir, { config, modules: ad.modules }, 'random test adapter');
  return dir;
}

test('adamerging writes a PEFT folder of Σ cᵢ·sᵢ·BᵢAᵢ; arrow, a router folder; bad flags name the flag', async () => {
  const a = await writeRandom('one', 1);
  const b = await writeRandom('two', 2);
  const data = join(tmp, 'target.txt');
  await writeFile(data, 'The quick brown fox jumps over the lazy dog. '.repeat(40));
  const common = [
    '--model',
    BASE,
    '--adapter',
    a,
    '--adapter',
    b,
    '--data',
    data,
    '--samples',
    '10',
    '--seq-len',
    '16',
  ];

  const out = join(tmp, 'ada');
  const r = await run(...common, '--method', 'adamerging', '--steps', '1', '--out', out);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /adamerging: validation loss [\d.]+ nats\/token/);
  const merged = await compose.readLora(out);
  const cfg = JSON.parse(await readFile(join(out, 'adapter_config.json'), 'utf8'));
  assert.equal(cfg.r, 4); // cat layout: 2 + 2
  assert.equal(cfg.lora_alpha, 4);
  // B of the merge is [B₁ B₂]; A is [c₁s₁A₁; c₂s₂A₂] with c task-wise (one coefficient per adapter)
  const src = [await compose.readLora(a), await compose.readLora(b)];
  const path = TARGETS[0][0];
  const m = merged.modules.get(path)!;
  const c = [0, 1].map((i) => {
    const s = src[i].modules.get(path)!;
    assert.ok(Math.abs(m.b[i * 2] - s.b[0]) < 1e-6, 'B block copied');
    return m.a[i * 2 * m.in] / (s.scaling * s.a[0]);
  });
  for (const [i, sa] of src.entries()) {
    const s = sa.modules.get(path)!;
    for (let k = 0; k < s.a.length; k++)
      assert.ok(Math.abs(m.a[i * 2 * m.in + k] - c[i] * s.scaling * s.a[k]) < 1e-5, `A block ${i}`);
  }

  // Arrow through the library call the command wraps (one child process is enough to test the shell)
  const arrowOut = join(tmp, 'arrow');
  const text = await readFile(data, 'utf8');
  const r2 = await adaptiveMergeFolders({
    model: BASE,
    adapters: [a, b],
    text,
    method: 'arrow',
    out: arrowOut,
    samples: 10,
    seqLen: 16,
    arrow: { topK: 1 },
  });
  assert.ok(Number.isFinite(r2.valLoss));
  const back = await readArrowFolder(arrowOut);
  assert.equal(back.options.topK, 1);
  assert.equal(back.pool.names.length, 2);

  const r3 = await run(...common, '--method', 'magic', '--out', join(tmp, 'x'));
  assert.notEqual(r3.status, 0);
  assert.match(r3.stderr, /--method expects one of lorahub, adamerging/);
  const r4 = await run(...common, '--select', 'closeness', '--out', join(tmp, 'y'));
  assert.notEqual(r4.status, 0);
  assert.match(r4.stderr, /--select closeness compares the pool with a target LoRA: add --target-adapter/);
});

test('π-Tuning with a target LoRA selects by quasi-Fisher similarity; --select closeness keeps the closest', async () => {
  const dirs = [await writeRandom('s1', 11), await writeRandom('s2', 12), await writeRandom('s3', 13)];
  const text = 'The quick brown fox jumps over the lazy dog. '.repeat(40);
  const common = { model: BASE, adapters: dirs, text, samples: 10, seqLen: 16, steps: 1 };
  // the target is the second adapter itself: similarity 1 under both measures
  const pi = await adaptiveMergeFolders({
    ...common,
    method: 'pi-tuning',
    out: join(tmp, 'pi'),
    target: dirs[1],
    topK: 2,
  });
  assert.equal(pi.selected?.names.length, 2);
  assert.equal(pi.selected?.names[0], '1-s2');
  assert.ok(Math.abs(pi.selected!.scores![0] - 1) < 1e-4, `quasi-Fisher similarity ${pi.selected!.scores![0]}`);
  assert.equal((await compose.readLora(join(tmp, 'pi'))).config.r, 4); // two rank-2 adapters merged
  const cl = await adaptiveMergeFolders({
    ...common,
    method: 'arrow',
    out: join(tmp, 'cl'),
    select: 'closeness',
    target: dirs[2],
    topK: 1,
  });
  assert.deepEqual(cl.selected?.names, ['2-s3']);
  assert.deepEqual((await readArrowFolder(join(tmp, 'cl'))).pool.names, ['2-s3']);
});
