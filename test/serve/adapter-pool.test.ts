// The adapter pool: names cannot leave the adapter directory (traversal, absolute paths, symlinks to folders or
// files outside), lazy loads are shared, the LRU keeps within its byte budget and never evicts a pinned adapter,
// and runtime load/unload.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LorakitError } from '../../src/errors.ts';
import type { LoadedModel } from '../../src/models/index.ts';
import { adaptable } from '../../src/peft/index.ts';
import { AdapterPool, loraTargets } from '../../src/serve/index.ts';
import { fixture, makeAdapters } from './helpers.ts';

let model: LoadedModel;
let root: string;
let outside: string;
const pool = (memoryBudget = 2 ** 30) =>
  new AdapterPool({
    dir: root,
    memoryBudget,
    base: adaptable(model),
    maxRank: 16,
    servedLayers: new Set(loraTargets(model, null).map((t) => t.path)),
  });

before(async () => {
  ({ model } = await fixture());
  const base = mkdtempSync(join(tmpdir(), 'lorakit-pool-'));
  root = join(base, 'adapters');
  outside = join(base, 'outside');
  mkdirSync(root);
  await makeAdapters(model, undefined, root);
  await makeAdapters(model, { secret: { peft_type: 'LORA', r: 2, target_modules: ['q_proj'] } }, outside);
  mkdirSync(join(root, 'team'));
  await makeAdapters(model, { nested: { peft_type: 'LORA', r: 2, target_modules: ['q_proj'] } }, join(root, 'team'));
  symlinkSync(join(outside, 'secret'), join(root, 'escape')); // a folder symlink leaving the directory
  mkdirSync(join(root, 'halfway'));
  symlinkSync(join(root, 'r2', 'adapter_config.json'), join(root, 'halfway', 'adapter_config.json'));
  symlinkSync(join(outside, 'secret', 'adapter_model.safetensors'), join(root, 'halfway', 'adapter_model.safetensors'));
  symlinkSync(join(root, 'r4'), join(root, 'alias')); // a symlink that stays inside is fine
  mkdirSync(join(root, 'router'));
  await makeAdapters(model, { e1: { peft_type: 'LORA', r: 2, target_modules: ['q_proj'] } }, join(root, 'router'));
  writeFileSync(join(root, 'router', 'arrow_config.json'), '{"top_k": 1, "task_specific_adapters": ["e1"]}');
});
after(() => model.close());

const refused = (p: Promise<unknown>, code: string) =>
  assert.rejects(p, (e: unknown) => e instanceof LorakitError && e.code === code && e.details.param !== undefined);

test('names that would leave the adapter directory are refused before any file is read', async () => {
  const p = pool();
  for (const name of ['../outside/secret', '..', './r2', 'team/../r2', '.hidden', 'r2/', '/etc', 'a\0b', 'r2\\..'])
    await refused(p.acquire(name), 'LK_INVALID_ARGUMENT');
  await refused(p.acquire(join(outside, 'secret')), 'LK_INVALID_ARGUMENT'); // absolute: not a name
  await refused(p.acquire('escape'), 'LK_INVALID_ARGUMENT'); // symlinked folder outside
  await refused(p.acquire('halfway'), 'LK_INVALID_ARGUMENT'); // a file symlinked outside
  await refused(p.load('x', join(outside, 'secret')), 'LK_INVALID_ARGUMENT'); // a load path outside
  await refused(p.load('x', '../outside/secret'), 'LK_INVALID_ARGUMENT');
  await refused(p.acquire('missing'), 'LK_NOT_FOUND');
  await refused(p.acquire('router'), 'LK_UNSUPPORTED'); // an Arrow router folder: not served yet, said so
  assert.equal(p.residents().length, 0);
});

test('folders inside load by relative path, nested names and inner symlinks included; loads are shared', async () => {
  const p = pool();
  const [a, b] = await Promise.all([p.acquire('r2'), p.acquire('r2')]);
  assert.equal(a, b);
  assert.equal((await p.acquire('team/nested')).form.rank, 2);
  assert.equal((await p.acquire('alias')).form.rank, 4);
  const loaded = await p.load('mine', join(root, 'r8rs')); // absolute, inside
  assert.equal(loaded.form.rank, 8);
  assert.deepEqual([...p.registered().keys()].sort(), ['alias', 'mine', 'r2', 'team/nested']);
  assert.ok(p.unload('mine'));
  assert.equal(p.unload('mine'), false);
});

test('the LRU keeps within its byte budget, evicting the least recently used unpinned adapter', async () => {
  const probe = pool();
  const sizes = new Map<string, number>();
  for (const n of ['r2', 'r4', 'r8rs']) {
    sizes.set(n, (await probe.acquire(n)).bytes);
    probe.unpin(n);
  }
  const p = pool(sizes.get('r4')! + sizes.get('r8rs')!);
  await p.acquire('r4');
  p.unpin('r4');
  await p.acquire('r8rs'); // stays pinned
  await p.acquire('r2'); // evicts r4, the least recently used unpinned one
  assert.deepEqual(
    p
      .residents()
      .map((a) => a.name)
      .sort(),
    ['r2', 'r8rs'],
  );
  assert.ok(p.bytes <= sizes.get('r4')! + sizes.get('r8rs')!);
  // r4 no longer fits beside the pinned r8rs and r2
  await assert.rejects(p.acquire('r4'), { code: 'LK_OVERLOADED' });
  p.unpin('r2');
  assert.equal((await p.acquire('r4')).name, 'r4'); // now r2 can go
});
