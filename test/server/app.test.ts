// The HTTP server on the demo base, driven by the official `openai` npm client (chat, streaming, completions) and by
// plain fetch for what the client hides: statuses and error fields, API keys, body limits, malformed bodies,
// adapter names that try to leave the adapter directory, runtime load/unload, a 429 when full, and a cancelled
// stream freeing its slot. Greedy answers are checked against generate() with the same adapter and prompt ids.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { HfTokenizer, renderChat } from '../../src/io/index.ts';
import { loadModel, type LoadedModel } from '../../src/models/index.ts';
import { shutdownRuntime } from '../../src/runtime/index.ts';
import { type RunningServer, startServer } from '../../src/server/index.ts';
import { makeAdapters, reference } from '../serve/helpers.ts';

const DEMO = 'models/demo-base';
const KEY = 'sk-lorakit-test';
const TEMPLATE =
  '{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}';
let server: RunningServer;
let model: LoadedModel;
let tokenizer: HfTokenizer;
let root: string;
let client: OpenAI;

before(async () => {
  model = await loadModel(DEMO);
  tokenizer = await HfTokenizer.fromDir(DEMO);
  const tmp = mkdtempSync(join(tmpdir(), 'lorakit-server-'));
  root = join(tmp, 'adapters');
  mkdirSync(root);
  await makeAdapters(
    model,
    {
      fiction: { peft_type: 'LORA', r: 8, lora_alpha: 16, target_modules: 'all-linear', init_lora_weights: false },
      news: { peft_type: 'LORA', r: 4, lora_alpha: 16, target_modules: ['q_proj', 'v_proj'], init_lora_weights: false },
    },
    root,
  );
  mkdirSync(join(root, 'broken'));
  writeFileSync(
    join(root, 'broken', 'adapter_config.json'),
    '{"peft_type": "LORA", "r": 4, "target_modules": ["nope"]}',
  );
  copyFileSync(join(root, 'news', 'adapter_model.safetensors'), join(root, 'broken', 'adapter_model.safetensors'));
  writeFileSync(join(tmp, 'chat.jinja'), TEMPLATE);
  server = await startServer({
    model: DEMO,
    adapterDir: root,
    port: 0,
    apiKeys: [KEY],
    chatTemplateFile: join(tmp, 'chat.jinja'),
    maxBodyBytes: 64 * 1024,
    maxConcurrent: 64,
    kvCacheMemory: 8 * 2 ** 20,
  });
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: KEY, maxRetries: 0 });
});
after(async () => {
  await server.close();
  await model.close();
  await shutdownRuntime();
});

/** The OpenAI error object of a response. */
const errorOf = async (r: Response) =>
  ((await r.json()) as { error: { code: string; param: string | null; type: string; message: string } }).error;

const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(`${server.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}`, ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });

test('chat with an adapter (openai client): greedy reply equals generate() on the rendered prompt', async () => {
  const messages = [{ role: 'user' as const, content: 'Tell me a story.' }];
  const r = await client.chat.completions.create({ model: 'fiction', messages, max_tokens: 12, temperature: 0 });
  const ids = tokenizer.encode(renderChat(TEMPLATE, messages, { addGenerationPrompt: true }), {
    addSpecialTokens: false,
  });
  const ref = await reference(model, tokenizer, join(root, 'fiction'), ids, 12);
  assert.equal(r.choices[0].message.content, tokenizer.decode(ref, { skipSpecialTokens: true }));
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(r.object, 'chat.completion');
  assert.deepEqual(r.usage, { prompt_tokens: ids.length, completion_tokens: 12, total_tokens: ids.length + 12 });
  // streamed: the deltas join to the same text, the first carries the role, usage comes last
  const stream = await client.chat.completions.create({
    model: 'fiction',
    messages,
    max_tokens: 12,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  let role: string | undefined;
  let usage: unknown = null;
  let finish: string | null = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      role ??= c.delta.role;
      text += c.delta.content ?? '';
      finish = c.finish_reason ?? finish;
    }
  }
  assert.equal(text, r.choices[0].message.content);
  assert.equal(role, 'assistant');
  assert.equal(finish, 'length');
  assert.deepEqual(usage, r.usage);
});

test('completions (openai client): base and adapter, n, logprobs, stop, streaming', async () => {
  const base = await client.completions.create({ model: DEMO, prompt: 'The house', max_tokens: 10, temperature: 0 });
  const ids = tokenizer.encode('The house');
  assert.equal(base.choices[0].text, tokenizer.decode(await reference(model, tokenizer, null, ids, 10)));
  const news = await client.completions.create({
    model: 'news',
    prompt: ['The house', 'A man'],
    max_tokens: 6,
    n: 2,
    temperature: 0,
    logprobs: 2,
  });
  assert.equal(news.choices.length, 4);
  assert.deepEqual(
    news.choices.map((c) => c.index),
    [0, 1, 2, 3],
  );
  assert.equal(news.choices[0].text, news.choices[1].text);
  assert.equal(news.choices[0].logprobs!.tokens!.length, 6);
  assert.equal(news.usage!.completion_tokens, 24);
  const stop = await client.completions.create({
    model: DEMO,
    prompt: 'The house',
    max_tokens: 10,
    temperature: 0,
    stop: [base.choices[0].text.slice(3, 5)],
  });
  assert.equal(stop.choices[0].text, base.choices[0].text.slice(0, 3));
  assert.equal(stop.choices[0].finish_reason, 'stop');
  let streamed = '';
  for await (const c of await client.completions.create({
    model: DEMO,
    prompt: 'The house',
    max_tokens: 10,
    temperature: 0,
    stream: true,
  }))
    streamed += c.choices[0]?.text ?? '';
  assert.equal(streamed, base.choices[0].text);
  const models = await client.models.list();
  const ids2 = models.data.map((m) => m.id);
  assert.ok(ids2.includes(DEMO) && ids2.includes('news') && ids2.includes('fiction'));
  assert.equal((await client.models.retrieve('news')).id, 'news');
});

test('API keys guard /v1/ but not health and metrics', async () => {
  const noKey = await fetch(`${server.url}/v1/models`);
  assert.equal(noKey.status, 401);
  assert.equal((await errorOf(noKey)).code, 'LK_UNAUTHORIZED');
  assert.equal((await post('/v1/models', {}, { authorization: 'Bearer wrong' })).status, 401);
  const bad = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'nope', maxRetries: 0 });
  await assert.rejects(bad.models.list(), (e: unknown) => e instanceof OpenAI.APIError && e.status === 401);
  assert.equal((await fetch(`${server.url}/health`)).status, 200);
  const metrics = await (await fetch(`${server.url}/metrics`)).text();
  assert.match(metrics, /^vllm:num_requests_waiting\{model_name="models\/demo-base"\} 0$/m);
  assert.match(metrics, /^vllm:lora_requests_info\{max_lora="16",/m);
  assert.match(metrics, /^vllm:generation_tokens_total\{[^}]*\} [1-9]/m);
});

test('schema errors are 400 naming the field; unknown models 404; escaping names 400; bodies over the limit 413', async () => {
  const cases: [unknown, string][] = [
    [{ model: DEMO }, 'prompt'],
    [{ model: DEMO, prompt: 'x', max_tokens: -1 }, 'max_tokens'],
    [{ model: DEMO, prompt: 'x', temperature: 'hot' }, 'temperature'],
    [{ model: DEMO, prompt: 'x', stop: [1] }, 'stop'],
    [{ model: DEMO, prompt: 'x', max_tokens: 100000 }, 'max_tokens'],
    [{ model: DEMO, prompt: 'x', echo: true }, 'echo'],
    [{ model: 7, prompt: 'x' }, 'model'],
    [{ model: '../outside', prompt: 'x' }, 'model'],
    [{ model: '/etc/passwd', prompt: 'x' }, 'model'],
  ];
  for (const [body, param] of cases) {
    const r = await post('/v1/completions', body);
    assert.equal(r.status, 400, JSON.stringify(body));
    const e = await errorOf(r);
    assert.equal(e.param, param, JSON.stringify(body));
    assert.equal(e.type, 'invalid_request_error');
  }
  const chat = await post('/v1/chat/completions', { model: DEMO, messages: [{ role: 'wizard', content: 'x' }] });
  assert.equal((await errorOf(chat)).param, 'messages.0.role');
  const missing = await post('/v1/completions', { model: 'nobody', prompt: 'x' });
  assert.equal(missing.status, 404);
  assert.equal((await errorOf(missing)).code, 'LK_NOT_FOUND');
  const big = await post('/v1/completions', { model: DEMO, prompt: 'x'.repeat(70 * 1024) });
  assert.equal(big.status, 413);
  assert.equal((await errorOf(big)).code, 'LK_PAYLOAD_TOO_LARGE');
});

test('malformed bodies are all answered 4xx and the server keeps serving', async () => {
  const rng = (() => {
    let s = 12345;
    return () => (s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  })();
  const shapes = [
    () => '{',
    () => '{"model":',
    () => 'null',
    () => '[]',
    () => '"text"',
    () => '{"__proto__": {"x": 1}, "model": "a", "prompt": "b"}',
    () => JSON.stringify({ model: DEMO, prompt: [[1, -2]] }),
    () => JSON.stringify({ model: DEMO, prompt: 'x', n: 1e9 }),
    () => JSON.stringify({ model: DEMO, messages: 'hi' }),
    () => String.fromCharCode(...Array.from({ length: 40 }, () => Math.floor(rng() * 256))),
  ];
  for (let i = 0; i < 200; i++) {
    const path = i % 2 ? '/v1/completions' : '/v1/chat/completions';
    const r = await post(path, shapes[i % shapes.length]());
    assert.ok(r.status >= 400 && r.status < 500, `${i}: ${r.status}`);
    assert.ok((await errorOf(r)).code.startsWith('LK_'));
  }
  const wrongType = await post('/v1/completions', 'x', { 'content-type': 'text/plain' });
  assert.ok(wrongType.status >= 400 && wrongType.status < 500);
  assert.equal((await fetch(`${server.url}/health`)).status, 200);
});

test('runtime load and unload; a failing load answers its error and leaves the server serving', async () => {
  const load = await post('/v1/load_lora_adapter', { lora_name: 'renamed', lora_path: 'news' });
  assert.equal(load.status, 200);
  assert.equal(await load.text(), "Success: LoRA adapter 'renamed' added successfully.");
  const r = await client.completions.create({ model: 'renamed', prompt: 'A', max_tokens: 3, temperature: 0 });
  assert.equal(r.choices[0].text.length > 0, true);
  assert.equal((await post('/v1/unload_lora_adapter', { lora_name: 'renamed' })).status, 200);
  assert.equal((await post('/v1/unload_lora_adapter', { lora_name: 'renamed' })).status, 404);
  assert.equal((await post('/v1/load_lora_adapter', { lora_name: 'x', lora_path: '../..' })).status, 400);
  const broken = await post('/v1/completions', { model: 'broken', prompt: 'A', max_tokens: 2 });
  assert.equal(broken.status, 400);
  assert.match((await errorOf(broken)).message, /nope/);
  const ok = await client.completions.create({ model: 'news', prompt: 'A', max_tokens: 2 });
  assert.equal(ok.choices.length, 1);
});

test('a client that cancels a stream frees its slot; a full server answers 429', async () => {
  const res = await post('/v1/completions', { model: 'fiction', prompt: 'Once', max_tokens: 200, stream: true });
  const reader = res.body!.getReader();
  await reader.read(); // the stream has started
  await reader.cancel();
  for (let i = 0; i < 100 && server.engine.load.inflight > 0; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(server.engine.load.inflight, 0);
  assert.equal(server.engine.parts.kv.used, 0);
  // fill the server: maxConcurrent 64 long requests, then one more (ignore_eos: a sampled stream that met its end
  // token before the extra request arrived freed a slot, and the extra got 200 on a loaded machine)
  const streams = await Promise.all(
    Array.from({ length: 64 }, () =>
      post('/v1/completions', { model: DEMO, prompt: 'A', max_tokens: 200, stream: true, ignore_eos: true }),
    ),
  );
  const extra = await post('/v1/completions', { model: DEMO, prompt: 'A', max_tokens: 2 });
  assert.equal(extra.status, 429);
  assert.equal((await errorOf(extra)).type, 'rate_limit_error');
  await Promise.all(streams.map((s) => s.body!.cancel()));
  for (let i = 0; i < 200 && server.engine.load.inflight > 0; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(server.engine.parts.kv.used, 0);
});
