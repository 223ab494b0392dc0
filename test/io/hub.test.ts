// Hub ids resolved from the local Hugging Face cache: its location from the environment (huggingface_hub's rules),
// refs and revisions, the errors when a model is not there, and a cached model loaded, compiled and run through its
// symlinked snapshot.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LorakitError } from '../../src/errors.ts';
import { Graph } from '../../src/graph/index.ts';
import { HfTokenizer, hfHubCacheDir, isHubId, loadHfFolder, resolveModelDir } from '../../src/io/index.ts';
import { buildCausalLM, causalGraphInputs, loadModel, outputCausalLM } from '../../src/models/index.ts';
import { Runtime } from '../../src/runtime/index.ts';
import { fakeHubRepo } from './fake-hub.ts';

const LLAMA = join(import.meta.dirname, '..', 'fixtures', 'models', 'llama');
const notFound =
  (...res: RegExp[]) =>
  (e: unknown) =>
    e instanceof LorakitError && e.code === 'LK_FILE_NOT_FOUND' && res.every((re) => re.test(e.message));

test('the hub cache is $HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache', () => {
  const home = '/home/u';
  assert.equal(hfHubCacheDir({ HF_HUB_CACHE: '/x/hub', HF_HOME: '/y' }, home), '/x/hub');
  assert.equal(hfHubCacheDir({ HUGGINGFACE_HUB_CACHE: '/old/hub' }, home), '/old/hub');
  assert.equal(hfHubCacheDir({ HF_HOME: '~/hf', XDG_CACHE_HOME: '/xdg' }, home), '/home/u/hf/hub');
  assert.equal(hfHubCacheDir({ XDG_CACHE_HOME: '/xdg' }, home), '/xdg/huggingface/hub');
  assert.equal(hfHubCacheDir({}, home), '/home/u/.cache/huggingface/hub');
});

test('a hub id resolves to the snapshot refs/main names; @revision picks a ref or a commit', () => {
  const hub = mkdtempSync(join(tmpdir(), 'lk-hub-'));
  const snap = fakeHubRepo(hub, 'TinyOrg/tiny-llama', LLAMA, 'aaaa1111');
  const other = fakeHubRepo(join(hub, 'b'), 'TinyOrg/tiny-llama', LLAMA, 'bbbb2222');
  const env = { HF_HUB_CACHE: hub };
  assert.equal(resolveModelDir('TinyOrg/tiny-llama', { env }), snap);
  assert.equal(resolveModelDir('TinyOrg/tiny-llama@main', { env }), snap);
  assert.equal(resolveModelDir('TinyOrg/tiny-llama@aaaa1111', { env }), snap);
  assert.equal(resolveModelDir('TinyOrg/tiny-llama', { env: { HF_HUB_CACHE: join(hub, 'b') } }), other);
  // An existing path always wins over a hub id of the same spelling.
  assert.equal(resolveModelDir(LLAMA, { env }), LLAMA);
  assert.ok(isHubId('org/name') && isHubId('gpt2') && isHubId('org/name@v1.0'));
  assert.ok(!isHubId('./org/name') && !isHubId('/abs/org') && !isHubId('a/b/c'));
});

test('a hub id that is not cached, or a ref that is missing, is LK_FILE_NOT_FOUND naming the cache and the fix', () => {
  const hub = mkdtempSync(join(tmpdir(), 'lk-hub-'));
  fakeHubRepo(hub, 'TinyOrg/tiny-llama', LLAMA, 'aaaa1111');
  const env = { HF_HUB_CACHE: hub };
  assert.throws(
    () => resolveModelDir('TinyOrg/absent', { env }),
    notFound(/model TinyOrg\/absent: no folder of that name here/, new RegExp(hub), /HF_HUB_CACHE/, /hf download/),
  );
  assert.throws(() => resolveModelDir('TinyOrg/tiny-llama@v2', { env }), notFound(/no ref "v2"/, /aaaa1111/));
  assert.throws(
    () => resolveModelDir('/no/such/folder', { env }),
    notFound(/model folder \/no\/such\/folder does not exist/),
  );
  mkdirSync(join(hub, 'models--TinyOrg--empty', 'snapshots'), { recursive: true });
  assert.throws(() => resolveModelDir('TinyOrg/empty', { env }), notFound(/no ref "main"/));
});

test('a cached hub id loads (weights, config, tokenizer) and its graph compiles and runs through the symlinks', async () => {
  const hub = mkdtempSync(join(tmpdir(), 'lk-hub-'));
  const snap = fakeHubRepo(join(hub, 'hub'), 'TinyOrg/tiny-llama', LLAMA);
  const saved = { HF_HOME: process.env.HF_HOME, HF_HUB_CACHE: process.env.HF_HUB_CACHE };
  process.env.HF_HOME = hub; // the default rule: $HF_HOME/hub
  delete process.env.HF_HUB_CACHE;
  try {
    const tokenizer = await HfTokenizer.fromDir('TinyOrg/tiny-llama');
    assert.equal((await loadHfFolder('TinyOrg/tiny-llama', { tokenizer: false })).dir, snap);
    const ids = tokenizer.encode('Hello there');
    const rt = new Runtime();
    /** Last-position logits of the model at `where` (a hub id or a folder). */
    const logits = async (where: string) => {
      const model = await loadModel(where);
      const g = new Graph('forward');
      const { inputs } = causalGraphInputs(g, model.cache!);
      outputCausalLM(g, buildCausalLM(model.context(g), inputs), { lastOnly: true });
      const s = await rt.compile(g, { cacheDir: join(hub, 'sessions') });
      const T = ids.length;
      const out = await s.run({
        input_ids: { data: BigInt64Array.from(ids, BigInt), shape: [1, T] },
        attention_mask: { data: new BigInt64Array(T).fill(1n), shape: [1, T] },
        position_ids: { data: BigInt64Array.from({ length: T }, (_, i) => BigInt(i)), shape: [1, T] },
      });
      await model.close();
      return { dir: model.dir, logits: Array.from(out.logits.data as Float32Array) };
    };
    const viaHub = await logits('TinyOrg/tiny-llama');
    const direct = await logits(LLAMA);
    assert.equal(viaHub.dir, snap);
    assert.equal(viaHub.logits.length, 384);
    assert.deepEqual(viaHub.logits, direct.logits); // the same bytes, read through the blobs
    await rt.shutdown();
  } finally {
    for (const [k, v] of Object.entries(saved))
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
  }
});
