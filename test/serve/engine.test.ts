// The serving engine against generate() with one adapter at a time: a mixed batch (base and LoRAs of ranks 2, 4,
// 8, rsLoRA, different layers and prompt lengths), methods converted to LoRA form (DoRA, VeRA), requests joining a
// running batch, n completions, cancellation freeing every slot, a broken adapter, and the request checks.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LorakitError } from '../../src/errors.ts';
import type { HfTokenizer } from '../../src/io/index.ts';
import type { LoadedModel } from '../../src/models/index.ts';
import { shutdownRuntime } from '../../src/runtime/index.ts';
import { createEngine, type Engine } from '../../src/serve/index.ts';
import { fixture, makeAdapters, reference } from './helpers.ts';

let model: LoadedModel;
let tokenizer: HfTokenizer;
let root: string;
let engine: Engine;

const CONVERTED = {
  dora: {
    peft_type: 'LORA',
    r: 4,
    lora_alpha: 32,
    use_dora: true,
    target_modules: ['q_proj', 'v_proj'],
    init_lora_weights: false,
  },
  vera: { peft_type: 'VERA', r: 8, target_modules: ['q_proj', 'v_proj'], init_weights: false },
};

before(async () => {
  ({ model, tokenizer } = await fixture());
  root = await makeAdapters(model);
  await makeAdapters(model, CONVERTED, root);
  mkdirSync(join(root, 'broken'));
  writeFileSync(join(root, 'broken', 'adapter_config.json'), '{"peft_type": "LORA", "r": "eight"}');
  copyFileSync(join(root, 'r2', 'adapter_model.safetensors'), join(root, 'broken', 'adapter_model.safetensors'));
  engine = await createEngine({
    model,
    tokenizer,
    adapterDir: root,
    maxLoraRank: 64,
    maxLoras: 4,
    kvCacheMemory: 2 ** 20,
  });
});
after(async () => {
  await engine.close();
  await model.close();
  await shutdownRuntime();
});

const greedy = (adapter: string | null, promptIds: number[], maxTokens: number) => ({
  adapter,
  promptIds,
  maxTokens,
  sampling: { temperature: 0 },
  ignoreEos: true,
});

test('a mixed batch of the base and three adapters gives each row the tokens generate() gives it alone', async () => {
  const prompts = [
    [1, 5, 9, 30],
    [1, 77, 3],
    [1, 200, 201, 202, 203, 17],
    [1, 8],
  ];
  const names = [null, 'r2', 'r4', 'r8rs'];
  const served = await Promise.all(names.map((n, i) => engine.generate(greedy(n, prompts[i], 10))));
  const refs: number[][] = [];
  for (let i = 0; i < names.length; i++) {
    refs.push(await reference(model, tokenizer, names[i] && join(root, names[i]!), prompts[i], 10));
    assert.deepEqual(served[i].choices[0].tokenIds, refs[i], `${names[i] ?? 'base'}`);
    assert.equal(served[i].choices[0].finishReason, 'length');
  }
  // the adapters matter: each changes the base model's tokens on its prompt
  for (let i = 1; i < names.length; i++)
    assert.notDeepEqual(refs[i], await reference(model, tokenizer, null, prompts[i], 10), `${names[i]} is no-op`);
  assert.ok(engine.metrics.steps.decode < 4 * 9, 'rows were decoded together');
});

test('DoRA and VeRA adapters are served in an exact LoRA form (DoRA at full rank)', async () => {
  const p = [1, 40, 41, 42];
  for (const name of ['dora', 'vera']) {
    const got = await engine.generate(greedy(name, p, 8));
    assert.deepEqual(got.choices[0].tokenIds, await reference(model, tokenizer, join(root, name), p, 8), name);
  }
  const forms = new Map(engine.parts.adapters.residents().map((a) => [a.name, a.form]));
  assert.equal(forms.get('dora')!.origin, 'factorised');
  assert.equal(forms.get('dora')!.rank, 64); // DoRA rescales W0's rows: ΔW of q_proj has full rank
  assert.equal(forms.get('vera')!.rank, 8);
  assert.equal(forms.get('r4')!.origin, 'lora');
});

test('a request joining a running batch does not change either result', async () => {
  const long = engine.submit(greedy('r4', [1, 9, 9], 40));
  await long.accepted;
  await new Promise((r) => setTimeout(r, 30));
  const late = await engine.generate(greedy('r2', [1, 60, 61], 6));
  assert.deepEqual(late.choices[0].tokenIds, await reference(model, tokenizer, join(root, 'r2'), [1, 60, 61], 6));
  const first = await long.completion;
  assert.deepEqual(first.choices[0].tokenIds, await reference(model, tokenizer, join(root, 'r4'), [1, 9, 9], 40));
});

test('n completions share the prompt; a seed reproduces them; greedy completions are equal', async () => {
  const sampled = { ...greedy('r2', [1, 3, 5], 12), n: 3, seed: 42, sampling: { temperature: 1 } };
  const a = await engine.generate(sampled);
  const b = await engine.generate(sampled);
  assert.deepEqual(
    a.choices.map((c) => c.tokenIds),
    b.choices.map((c) => c.tokenIds),
  );
  assert.equal(new Set(a.choices.map((c) => c.tokenIds.join())).size, 3);
  const g = await engine.generate({ ...greedy(null, [1, 3, 5], 6), n: 2 });
  assert.deepEqual(g.choices[0].tokenIds, g.choices[1].tokenIds);
  assert.equal(g.completionTokens, 12);
  assert.equal(engine.parts.kv.used, 0, 'shared prompt slots are freed once');
});

test('a cancelled request ends at the next step and frees its KV slots and its adapter slot', async () => {
  const ac = new AbortController();
  let pieces = 0;
  const r = engine.generate({
    ...greedy('r8rs', [1, 2, 3], 60),
    signal: ac.signal,
    onEvent: () => {
      if (++pieces === 3) ac.abort();
    },
  });
  const done = await r;
  assert.equal(done.choices[0].finishReason, 'abort');
  assert.ok(done.choices[0].tokenIds.length < 10);
  assert.equal(engine.parts.kv.used, 0);
  assert.deepEqual(engine.parts.slots.inUse(), []);
  assert.equal(engine.load.inflight, 0);
});

test('a broken or missing adapter fails its request only; log-probabilities are the chosen tokens', async () => {
  await assert.rejects(engine.generate(greedy('broken', [1, 2], 2)), (e: unknown) => {
    return e instanceof LorakitError && e.code === 'LK_CONFIG_INVALID' && /broken.*\br\b/.test(e.message);
  });
  await assert.rejects(engine.generate(greedy('nope', [1, 2], 2)), { code: 'LK_NOT_FOUND' });
  const ok = await engine.generate({ ...greedy('r2', [1, 2], 4), logprobs: 3 });
  const lps = ok.choices[0].logprobs!;
  assert.equal(lps.length, 4);
  lps.forEach((l, i) => {
    assert.equal(l.tokenId, ok.choices[0].tokenIds[i]);
    assert.equal(l.top[0].tokenId, l.tokenId); // greedy: the chosen token is the most likely
    assert.ok(l.top[0].logprob >= l.top[1].logprob && l.top[1].logprob >= l.top[2].logprob);
    assert.ok(l.top.reduce((s, t) => s + Math.exp(t.logprob), 0) <= 1 + 1e-9);
  });
});

test('requests outside the limits are refused with the field named', async () => {
  const bad = (r: Parameters<Engine['generate']>[0], param: string) =>
    assert.rejects(engine.generate(r), (e: unknown) => e instanceof LorakitError && e.details.param === param);
  await bad(greedy(null, [1, 2], 500), 'max_tokens');
  await bad(greedy(null, [], 2), 'prompt');
  await bad(greedy(null, [1, 99999], 2), 'prompt');
  await bad({ ...greedy(null, [1], 2), n: 99 }, 'n');
  await bad({ ...greedy(null, [1], 2), sampling: { presencePenalty: 3 } }, 'presence_penalty');
});
