// generate() against transformers' greedy fixtures for every causal family, plus the behaviours of the loop:
// batching with left padding, streaming, stop strings, eos, seeded sampling, abort and argument errors.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { loadModel, type LoadedModel } from '../../src/models/index.ts';
import { generate, type GenerateOptions, type TokenEvent } from '../../src/models/generate.ts';
import { HfTokenizer } from '../../src/io/tokenizer.ts';
import { encodeChat } from '../../src/io/chat.ts';
import { shutdownRuntime } from '../../src/runtime/index.ts';
import { PeftModel, loadAdapter, adaptable } from '../../src/peft/index.ts';
import { LorakitError } from '../../src/errors.ts';
import ort from 'onnxruntime-node';

const FAMILIES = ['gpt2', 'llama', 'llama3', 'mistral', 'qwen2', 'smollm'];
const dirOf = (name: string) => `test/fixtures/models/${name}`;
const expected = (name: string) => JSON.parse(readFileSync(`${dirOf(name)}/expected.json`, 'utf8'));

const loaded = new Map<string, Promise<{ model: LoadedModel; tokenizer: HfTokenizer }>>();
function fixture(name: string) {
  let f = loaded.get(name);
  if (!f)
    loaded.set(
      name,
      (f = Promise.all([loadModel(dirOf(name)), HfTokenizer.fromDir(dirOf(name))]).then(([model, tokenizer]) => ({
        model,
        tokenizer,
      }))),
    );
  return f;
}
after(async () => {
  for (const f of loaded.values()) await (await f).model.close();
  await shutdownRuntime();
});

/** Runs generate and collects the streamed pieces per row. */
async function run(name: string, opts: GenerateOptions) {
  const { model, tokenizer } = await fixture(name);
  const pieces: string[][] = [];
  const events: TokenEvent[] = [];
  const r = await generate(model, tokenizer, {
    ...opts,
    onToken: (piece, e) => {
      (pieces[e.row] ??= []).push(piece);
      events.push(e);
    },
  });
  return { ...r, pieces, events, tokenizer };
}

const rejects = (p: Promise<unknown>, code: string, re: RegExp) =>
  assert.rejects(p, (e: unknown) => e instanceof LorakitError && e.code === code && re.test(e.message));

test(
  'greedy tokens equal transformers generate for every causal family (plain and ' + 'repetition_penalty 1.3)',
  async () => {
    for (const name of FAMILIES) {
      const e = expected(name);
      const plain = await run(name, { inputIds: e.greedy_prompt_ids, maxNewTokens: e.greedy_max_new_tokens });
      assert.deepEqual(plain.rows[0].tokenIds, e.greedy, `${name} greedy`);
      assert.equal(plain.rows[0].finishReason, 'length');
      assert.deepEqual(plain.rows[0].promptTokenIds, e.greedy_prompt_ids);
      assert.equal(plain.timings.steps, e.greedy_max_new_tokens - 1);
      const rep = await run(name, {
        inputIds: e.greedy_prompt_ids,
        maxNewTokens: e.greedy_max_new_tokens,
        repetitionPenalty: e.repetition_penalty,
      });
      assert.deepEqual(rep.rows[0].tokenIds, e.greedy_rep, `${name} greedy_rep`);
    }
  },
);

test('a left-padded batch gives each row the tokens it gets alone, also when one row stops early', async () => {
  for (const name of ['llama', 'gpt2']) {
    const e = expected(name);
    const short = e.greedy_prompt_ids as number[];
    const long = (e.input_ids[1] as number[]).slice(0, 11);
    const eos = (e.greedy as number[])[4]; // row 0 ends on its 5th token
    const opts = { maxNewTokens: 12, eosTokenId: eos, repetitionPenalty: 1.3 };
    const batch = await run(name, { ...opts, inputIds: [short, long] });
    const alone0 = await run(name, { ...opts, inputIds: short });
    const alone1 = await run(name, { ...opts, inputIds: long });
    assert.deepEqual(batch.rows[0].tokenIds, alone0.rows[0].tokenIds, `${name} row 0`);
    assert.deepEqual(batch.rows[1].tokenIds, alone1.rows[0].tokenIds, `${name} row 1`);
    assert.equal(batch.rows[0].text, alone0.rows[0].text);
    assert.equal(batch.rows[1].text, alone1.rows[0].text);
    assert.deepEqual(
      batch.rows.map((r) => r.finishReason),
      [alone0.rows[0].finishReason, alone1.rows[0].finishReason],
    );
    assert.equal(batch.rows[0].finishReason, 'eos');
    assert.ok(batch.rows[0].tokenIds.length < batch.rows[1].tokenIds.length);
  }
  // Without the penalty, row 0 of the batch is transformers' greedy continuation.
  const e = expected('llama');
  const batch = await run('llama', { inputIds: [e.greedy_prompt_ids, e.input_ids[1].slice(0, 11)], maxNewTokens: 16 });
  assert.deepEqual(batch.rows[0].tokenIds, e.greedy);
});

test('eos ends a row: the id is kept in tokenIds, not in the text', async () => {
  const e = expected('llama');
  const r = await run('llama', { inputIds: e.greedy_prompt_ids, maxNewTokens: 16, eosTokenId: [999, e.greedy[2]] });
  assert.deepEqual(r.rows[0].tokenIds, e.greedy.slice(0, 3));
  assert.equal(r.rows[0].finishReason, 'eos');
  assert.equal(r.rows[0].text, r.tokenizer.decode(e.greedy.slice(0, 2), { skipSpecialTokens: true }));
  assert.equal(r.events.at(-1)!.finishReason, 'eos');
});

test('streamed pieces join to the final text, which is the decode of the new tokens', async () => {
  for (const name of ['gpt2', 'mistral']) {
    const e = expected(name);
    const r = await run(name, {
      inputIds: [e.greedy_prompt_ids, e.input_ids[1].slice(0, 8)],
      maxNewTokens: 16,
      eosTokenId: null,
    });
    r.rows.forEach((row, b) => {
      assert.equal(r.pieces[b].join(''), row.text);
      assert.equal(
        row.text,
        r.tokenizer.decode(row.tokenIds, { skipSpecialTokens: true, cleanUpTokenizationSpaces: false }),
      );
    });
    // one event per token, plus the closing one (tokenId null) that carries the finish reason
    assert.equal(r.events.filter((ev) => ev.row === 0).length, 17);
    assert.deepEqual(
      r.events.filter((ev) => ev.finishReason).map((ev) => [ev.row, ev.tokenId, ev.finishReason]),
      [
        [0, null, 'length'],
        [1, null, 'length'],
      ],
    );
  }
  // mistral's 16th greedy token is <s> (special): skipSpecialTokens false keeps it in the text
  const e = expected('mistral');
  const raw = await run('mistral', { inputIds: e.greedy_prompt_ids, maxNewTokens: 16, skipSpecialTokens: false });
  assert.ok(raw.rows[0].text.endsWith('<s>'));
});

test('stop strings end the text before the stop string, and the stream never shows any of it', async () => {
  const e = expected('gpt2');
  const full = await run('gpt2', { inputIds: e.greedy_prompt_ids, maxNewTokens: 16 });
  const text = full.rows[0].text;
  const stop = text.slice(6, 9); // a string that first appears mid-generation
  const at = text.indexOf(stop);
  assert.ok(at > 0, `stop string ${JSON.stringify(stop)} in ${JSON.stringify(text)}`);
  const r = await run('gpt2', { inputIds: e.greedy_prompt_ids, maxNewTokens: 16, stop: ['never-there', stop] });
  assert.equal(r.rows[0].text, text.slice(0, at));
  assert.equal(r.pieces[0].join(''), text.slice(0, at));
  assert.equal(r.rows[0].finishReason, 'stop');
  assert.ok(r.rows[0].tokenIds.length < 16);
  assert.deepEqual(r.rows[0].tokenIds, e.greedy.slice(0, r.rows[0].tokenIds.length));
  // a stop string that never completes changes nothing
  const none = await run('gpt2', { inputIds: e.greedy_prompt_ids, maxNewTokens: 16, stop: `${text.slice(-2)}\u0000` });
  assert.equal(none.rows[0].text, text);
  assert.equal(none.rows[0].finishReason, 'length');
});

test('sampling with a seed is reproducible; other seeds and batch rows draw differently', async () => {
  const e = expected('llama');
  const opts = { inputIds: e.greedy_prompt_ids, maxNewTokens: 12, temperature: 1.5, topK: 50, topP: 0.95 };
  const a = await run('llama', { ...opts, seed: 7 });
  const b = await run('llama', { ...opts, seed: 7 });
  const c = await run('llama', { ...opts, seed: 8 });
  assert.equal(a.seed, 7);
  assert.deepEqual(a.rows[0].tokenIds, b.rows[0].tokenIds);
  assert.notDeepEqual(a.rows[0].tokenIds, c.rows[0].tokenIds);
  assert.notDeepEqual(a.rows[0].tokenIds, e.greedy.slice(0, 12));
  const batch = await run('llama', { ...opts, inputIds: [e.greedy_prompt_ids, e.greedy_prompt_ids], seed: 7 });
  assert.deepEqual(batch.rows[0].tokenIds, a.rows[0].tokenIds); // row 0 draws from stream 0, as alone
  assert.notDeepEqual(batch.rows[1].tokenIds, batch.rows[0].tokenIds);
  const unseeded = await run('llama', opts);
  assert.ok(Number.isInteger(unseeded.seed));
  assert.deepEqual((await run('llama', { ...opts, seed: unseeded.seed })).rows[0].tokenIds, unseeded.rows[0].tokenIds);
});

test('text prompts, chat messages and abort', async () => {
  const { tokenizer } = await fixture('qwen2');
  const messages = [{ role: 'user', content: 'To be, or not to be' }];
  const chat = await run('qwen2', { messages, maxNewTokens: 4 });
  assert.deepEqual(
    chat.rows[0].promptTokenIds,
    encodeChat(tokenizer, tokenizer.config.chat_template as string, messages, { addGenerationPrompt: true }).ids,
  );
  const plain = await run('llama', { prompts: ['To be', 'or not to be, that is'], maxNewTokens: 3 });
  assert.deepEqual(plain.rows[0].promptTokenIds, plain.tokenizer.encode('To be'));
  assert.equal(plain.rows[0].promptTokenIds[0], 1); // <s> added
  const ctrl = new AbortController();
  const { model } = await fixture('llama');
  const r = await generate(model, plain.tokenizer, {
    prompt: 'To be',
    maxNewTokens: 10,
    signal: ctrl.signal,
    onToken: () => ctrl.abort(),
  });
  assert.equal(r.rows[0].finishReason, 'abort');
  assert.equal(r.rows[0].tokenIds.length, 1);
});

test(
  'adapter hooks: an unmerged LoRA adapter generates what its merged weights generate, and differs from ' + 'the base',
  async () => {
    const { model } = await fixture('llama');
    const e = expected('llama');
    const peft = new PeftModel(adaptable(model));
    await loadAdapter(peft, 'test/fixtures/peft/llama_lora_patterns');
    const opts = { inputIds: e.greedy_prompt_ids, maxNewTokens: 16 };
    const unmerged = await run('llama', {
      ...opts,
      adapter: { hooks: () => peft.hooks(), overrides: peft.weightOverrides() },
    });
    await peft.merge();
    const merged = await run('llama', {
      ...opts,
      adapter: { hooks: () => peft.hooks(), overrides: peft.weightOverrides(), key: 'merged' },
    });
    assert.deepEqual(unmerged.rows[0].tokenIds, merged.rows[0].tokenIds);
    assert.notDeepEqual(unmerged.rows[0].tokenIds, e.greedy);
    const base = await run('llama', opts); // the base graphs are cached apart from the adapter's
    assert.deepEqual(base.rows[0].tokenIds, e.greedy);
  },
);

test('an adapter given without a key: each call rebuilds the graph but finds its ORT session again', async () => {
  const { model } = await fixture('llama');
  const peft = new PeftModel(adaptable(model));
  await loadAdapter(peft, 'test/fixtures/peft/llama_lora_patterns');
  const opts: GenerateOptions = {
    inputIds: [1, 5, 9],
    maxNewTokens: 3,
    adapter: { hooks: () => peft.hooks(), overrides: peft.weightOverrides() },
  };
  const first = await run('llama', opts);
  // Count the ORT sessions created from here on, at ONNX Runtime itself.
  const create = ort.InferenceSession.create;
  let created = 0;
  ort.InferenceSession.create = ((...args: Parameters<typeof create>) => {
    created++;
    return create.apply(ort.InferenceSession, args);
  }) as typeof create;
  try {
    for (let i = 0; i < 3; i++) assert.deepEqual((await run('llama', opts)).rows[0].tokenIds, first.rows[0].tokenIds);
  } finally {
    ort.InferenceSession.create = create;
  }
  assert.equal(created, 0);
});

test('argument errors name the option', async () => {
  const { model, tokenizer } = await fixture('gpt2');
  const g = (o: GenerateOptions) => generate(model, tokenizer, o);
  await rejects(
    g({ inputIds: [1, 2], maxNewTokens: 0 }),
    'LK_INVALID_ARGUMENT',
    /^maxNewTokens must be a positive integer, got 0$/,
  );
  await rejects(
    g({ inputIds: [1], prompt: 'x' }),
    'LK_INVALID_ARGUMENT',
    /give exactly one of prompt, prompts, messages, inputIds; got prompt, inputIds/,
  );
  await rejects(
    g({
      inputIds: [
        [1, 2],
        [3, 384],
      ],
    }),
    'LK_INVALID_ARGUMENT',
    /^inputIds\[1\]\[1\] must be a token id in \[0, 384\), got 384$/,
  );
  await rejects(g({ prompt: '' }), 'LK_INVALID_ARGUMENT', /prompt 0 has no tokens/);
  await rejects(
    g({ inputIds: [1, 2, 3], maxNewTokens: 126 }),
    'LK_INVALID_ARGUMENT',
    new RegExp(
      "^maxNewTokens: the prompt \\(3 tokens\\) plus maxNewTokens \\(126\\) exceeds the model's 128 positions; use " +
        'at most 125$',
    ),
  );
  await rejects(g({ inputIds: [1], topP: 2 }), 'LK_INVALID_ARGUMENT', /^topP must be a number in \(0, 1\], got 2$/);
  await rejects(g({ inputIds: [1], stop: [''] }), 'LK_INVALID_ARGUMENT', /^stop\[0\] must be a non-empty string/);
  const bert = await loadModel(dirOf('bert'));
  await rejects(generate(bert, tokenizer, { inputIds: [1] }), 'LK_UNSUPPORTED', /is a bert model, not a causal LM/);
  await bert.close();
});
