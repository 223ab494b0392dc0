import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HfTokenizer } from '../../src/io/tokenizer.ts';
import {
  renderChat,
  encodeChat,
  chatTemplateFromConfig,
  loadChatTemplate,
  findChatTemplate,
  type ChatMessage,
} from '../../src/io/chat.ts';
import { LorakitError } from '../../src/errors.ts';
import { LLAMA3_DIR, QWEN3_DIR } from './tokenizer-fixtures.ts';

const conversation: ChatMessage[] = [
  { role: 'system', content: 'You are a helpful assistant.' },
  { role: 'user', content: 'What is 2+2?' },
  { role: 'assistant', content: '2+2 equals 4.' },
];
const multiTurn: ChatMessage[] = [
  { role: 'user', content: 'Hi!' },
  { role: 'assistant', content: 'Hello! How can I help?' },
  { role: 'user', content: 'Say yes.' },
  { role: 'assistant', content: 'yes' },
];

// Expected strings and ids: transformers 4.57.6 AutoTokenizer(...).apply_chat_template on the same folders.
const LLAMA3_TEXT =
  '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful ' +
  'assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is ' +
  '2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n2+2 equals ' +
  '4.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n';
const LLAMA3_IDS = [
  128000, 128006, 9125, 128007, 271, 2675, 527, 264, 11190, 18328, 13, 128009, 128006, 882, 128007, 271, 3923, 374, 220,
  17, 10, 17, 30, 128009, 128006, 78191, 128007, 271, 17, 10, 17, 17239, 220, 19, 13, 128009, 128006, 78191, 128007,
  271,
];
const QWEN3_TEXT =
  '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is ' +
  '2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n2+2 equals 4.<|im_end|>\n';
const QWEN3_PROMPT =
  '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is ' +
  '2+2?<|im_end|>\n<|im_start|>assistant\n';
const QWEN3_IDS = [
  151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198, 151644, 872, 198, 3838, 374, 220, 17, 10, 17, 30,
  151645, 198, 151644, 77091, 198, 151667, 271, 151668, 271, 17, 10, 17, 16819, 220, 19, 13, 151645, 198,
];
const QWEN3_MULTI =
  '<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello! How can I help?<|im_end|>\n<|im_start|>user\nSay ' +
  'yes.<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nyes<|im_end|>\n';

const config = (dir: string) =>
  JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
const llama3 = HfTokenizer.fromDir(LLAMA3_DIR);
const qwen3 = HfTokenizer.fromDir(QWEN3_DIR);

/** The masked ids, as runs of consecutive positions. */
function maskedRuns(ids: number[], mask: number[]): number[][] {
  const runs: number[][] = [];
  mask.forEach((m, i) => {
    if (m === 1 && (i === 0 || mask[i - 1] === 0)) runs.push([]);
    if (m === 1) runs.at(-1)!.push(ids[i]!);
  });
  return runs;
}

describe('renderChat', () => {
  test('llama3 template renders a 3-message chat exactly as transformers does', () => {
    const template = chatTemplateFromConfig(config(LLAMA3_DIR))!;
    assert.equal(renderChat(template, conversation, { bosToken: '<|begin_of_text|>' }), LLAMA3_TEXT);
  });

  test('qwen3 template renders a 3-message chat, a generation prompt and a multi-turn chat exactly', () => {
    const template = chatTemplateFromConfig(config(QWEN3_DIR))!;
    assert.equal(renderChat(template, conversation), QWEN3_TEXT);
    assert.equal(renderChat(template, conversation.slice(0, 2), { addGenerationPrompt: true }), QWEN3_PROMPT);
    assert.equal(renderChat(template, multiTurn), QWEN3_MULTI);
    assert.equal(
      renderChat(template, conversation.slice(0, 2), { addGenerationPrompt: true, enable_thinking: false }),
      `${QWEN3_PROMPT}<think>\n\n</think>\n\n`,
    );
  });

  test('raise_exception in a template becomes LK_INVALID_ARGUMENT with its message', () => {
    const template =
      "{% if messages[0].role != 'user' %}{{ raise_exception('first message must be from the user') }}{% endif %}ok";
    assert.throws(
      () => renderChat(template, conversation),
      (e: unknown) =>
        e instanceof LorakitError &&
        e.code === 'LK_INVALID_ARGUMENT' &&
        /first message must be from the user/.test(e.message),
    );
    assert.throws(
      () => renderChat('{% for %}', conversation),
      (e: unknown) => e instanceof LorakitError && e.code === 'LK_INVALID_ARGUMENT' && /parse/.test(e.message),
    );
  });
});

describe('chat template lookup', () => {
  test('a list of named templates picks "default", or the name asked for', () => {
    const cfg = {
      chat_template: [
        { name: 'tool_use', template: 'T' },
        { name: 'default', template: 'D' },
      ],
    };
    assert.equal(chatTemplateFromConfig(cfg), 'D');
    assert.equal(chatTemplateFromConfig(cfg, { name: 'tool_use' }), 'T');
    assert.throws(
      () => chatTemplateFromConfig(cfg, { name: 'rag' }),
      (e: unknown) =>
        e instanceof LorakitError && e.code === 'LK_CONFIG_INVALID' && /"rag".*"tool_use", "default"/.test(e.message),
    );
    assert.equal(chatTemplateFromConfig({}), undefined);
  });

  test('chat_template.jinja wins over tokenizer_config.json; a folder without either is a clear error', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lk-chat-'));
    await assert.rejects(
      loadChatTemplate(dir),
      (e: unknown) =>
        e instanceof LorakitError &&
        e.code === 'LK_FILE_NOT_FOUND' &&
        e.message.includes('chat_template.jinja') &&
        e.message.includes(dir),
    );
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ chat_template: 'from config' }));
    assert.equal(await findChatTemplate(dir), 'from config');
    writeFileSync(join(dir, 'chat_template.jinja'), 'from jinja');
    assert.equal(await loadChatTemplate(dir), 'from jinja');
  });
});

describe('encodeChat and the assistant mask', () => {
  test('llama3: ids equal transformers; the mask is exactly the assistant content and its <|eot_id|>', async () => {
    const t = await llama3;
    const r = encodeChat(t, chatTemplateFromConfig(t.config)!, conversation);
    assert.equal(r.text, LLAMA3_TEXT);
    assert.deepEqual(r.ids, LLAMA3_IDS);
    assert.deepEqual(maskedRuns(r.ids, r.assistantMask), [
      [...t.encode('2+2 equals 4.', { addSpecialTokens: false }), 128009],
    ]);
    assert.deepEqual(maskedRuns(r.ids, r.assistantMask), [[17, 10, 17, 17239, 220, 19, 13, 128009]]);
  });

  test('qwen3: ids equal transformers; the mask is the content and <|im_end|>, not the empty think block', async () => {
    const t = await qwen3;
    const r = encodeChat(t, chatTemplateFromConfig(t.config)!, conversation);
    assert.deepEqual(r.ids, QWEN3_IDS);
    assert.deepEqual(maskedRuns(r.ids, r.assistantMask), [
      [...t.encode('2+2 equals 4.', { addSpecialTokens: false }), 151645],
    ]);
    assert.equal(t.decode(r.ids.filter((_, i) => r.assistantMask[i] === 1)), '2+2 equals 4.<|im_end|>');
  });

  test('qwen3 multi-turn: each assistant turn is masked, the user text "yes" is not', async () => {
    const t = await qwen3;
    const r = encodeChat(t, chatTemplateFromConfig(t.config)!, multiTurn);
    assert.equal(r.text, QWEN3_MULTI);
    const runs = maskedRuns(r.ids, r.assistantMask).map((run) => t.decode(run));
    assert.deepEqual(runs, ['Hello! How can I help?<|im_end|>', 'yes<|im_end|>']);
  });

  test('a template that rewrites the content is reported', async () => {
    const t = await qwen3;
    const template = '{% for m in messages %}{{ m.role }}: {{ m.content | upper }}\n{% endfor %}';
    assert.throws(
      () => encodeChat(t, template, conversation),
      (e: unknown) => e instanceof LorakitError && e.code === 'LK_UNSUPPORTED' && /messages\[2\]/.test(e.message),
    );
  });
});
