// `lorakit generate` run as a child process: the streamed stdout equals the decode of transformers' greedy tokens,
// --chat renders the chat template, sampling flags reach the library, and errors are one line with exit code 1.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HfTokenizer } from '../../src/io/tokenizer.ts';
import { loadModel, quantizeModel } from '../../src/models/index.ts';
import { generate } from '../../src/models/generate.ts';
import { shutdownRuntime } from '../../src/runtime/index.ts';
import { fakeHubRepo } from '../io/fake-hub.ts';

const lorakit = (...args: string[]) =>
  spawnSync(process.execPath, ['bin/lorakit.mjs', 'generate', ...args], { encoding: 'utf8' });
const QWEN = 'test/fixtures/models/qwen2';
after(shutdownRuntime);

test('generate streams the greedy continuation: stdout is the decode of the fixture tokens', async () => {
  const e = JSON.parse(readFileSync(`${QWEN}/expected.json`, 'utf8'));
  const tokenizer = await HfTokenizer.fromDir(QWEN);
  // qwen2 adds no BOS and this text encodes back to exactly the fixture's prompt ids
  const prompt = tokenizer.decode(e.greedy_prompt_ids);
  assert.deepEqual(tokenizer.encode(prompt), e.greedy_prompt_ids);
  const r = lorakit('--model', QWEN, '--prompt', prompt, '--max-new-tokens', '16');
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr, '');
  assert.equal(r.stdout, `${tokenizer.decode(e.greedy, { skipSpecialTokens: true })}\n`);
});

test(
  'generate --chat --system renders the chat template; sampling flags match the library with the ' + 'same seed',
  async () => {
    const flags = [
      '--temperature',
      '0.8',
      '--top-k',
      '40',
      '--top-p',
      '0.9',
      '--repetition-penalty',
      '1.1',
      '--seed',
      '5',
      '--max-new-tokens',
      '8',
    ];
    const r = lorakit('--model', QWEN, '--prompt', 'What is a truth?', '--chat', '--system', 'Be brief.', ...flags);
    assert.equal(r.status, 0, r.stderr);
    const [model, tokenizer] = await Promise.all([loadModel(QWEN), HfTokenizer.fromDir(QWEN)]);
    const lib = await generate(model, tokenizer, {
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'What is a truth?' },
      ],
      temperature: 0.8,
      topK: 40,
      topP: 0.9,
      repetitionPenalty: 1.1,
      seed: 5,
      maxNewTokens: 8,
    });
    await model.close();
    assert.notEqual(lib.rows[0].text, '');
    assert.equal(r.stdout, `${lib.rows[0].text}\n`);
  },
);

test('--model takes a hub id found in the local Hugging Face cache (a snapshot of symlinks into blobs/)', async () => {
  const e = JSON.parse(readFileSync(`${QWEN}/expected.json`, 'utf8'));
  const tokenizer = await HfTokenizer.fromDir(QWEN);
  const hub = mkdtempSync(join(tmpdir(), 'lk-hub-'));
  fakeHubRepo(hub, 'TinyOrg/tiny-qwen2', QWEN);
  const gen = (model: string) =>
    spawnSync(
      process.execPath,
      ['bin/lorakit.mjs', 'generate', '--model', model, '--prompt', tokenizer.decode(e.greedy_prompt_ids)].concat([
        '--max-new-tokens',
        '16',
      ]),
      { encoding: 'utf8', env: { ...process.env, HF_HUB_CACHE: hub, LORAKIT_CACHE: join(hub, 'lorakit') } },
    );
  const r = gen('TinyOrg/tiny-qwen2');
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, `${tokenizer.decode(e.greedy, { skipSpecialTokens: true })}\n`);
  const missing = gen('TinyOrg/absent');
  assert.equal(missing.status, 1);
  assert.match(
    missing.stderr,
    /^lorakit: model TinyOrg\/absent: no folder of that name here, .* \[LK_FILE_NOT_FOUND\]\n$/,
  );
});

test('generate --quantize int8 streams the greedy tokens of the library on the same int8 base', async () => {
  const r = lorakit('--model', QWEN, '--prompt', 'The truth is', '--max-new-tokens', '8', '--quantize', 'int8');
  assert.equal(r.status, 0, r.stderr);
  const [model, tokenizer] = await Promise.all([loadModel(QWEN), HfTokenizer.fromDir(QWEN)]);
  const q = await quantizeModel(model, 'int8', { cacheDir: false });
  const lib = await generate(q, tokenizer, { prompt: 'The truth is', maxNewTokens: 8 });
  const float = await generate(model, tokenizer, { prompt: 'The truth is', maxNewTokens: 8 });
  await model.close();
  assert.equal(r.stdout, `${lib.rows[0].text}\n`);
  assert.notDeepEqual(lib.rows[0].tokenIds, float.rows[0].tokenIds, 'int8 changes some token on this fixture');
});

test('generate errors are one line on stderr and exit 1', () => {
  const cases: [string[], RegExp][] = [
    [
      ['--model', 'test/fixtures/models/bert', '--prompt', 'x'],
      /^lorakit: generate: test\/fixtures\/models\/bert is a bert model, not a causal LM; .* \[LK_UNSUPPORTED\]\n$/,
    ],
    [
      ['--model', QWEN, '--prompt', 'x', '--top-k', 'many'],
      /^lorakit: --top-k expects a number, got "many" \[LK_INVALID_ARGUMENT\]\n$/,
    ],
    [
      ['--model', QWEN, '--prompt', 'x', '--quantize', 'int4'],
      /^lorakit: --quantize expects none, int8 or q4, got "int4" \[LK_INVALID_ARGUMENT\]\n$/,
    ],
    [
      ['--prompt', 'x'],
      /^lorakit: --model <dir> is required: a Hugging Face model folder or a \.gguf file \[LK_INVALID_ARGUMENT\]\n$/,
    ],
  ];
  for (const [args, re] of cases) {
    const r = lorakit(...args);
    assert.equal(r.status, 1, args.join(' '));
    assert.equal(r.stdout, '');
    assert.match(r.stderr, re);
  }
});
