// Records to {ids, labels}: exact label masks on the fixture tokenizers (llama: Llama-2 template and BOS; qwen2:
// ChatML, no BOS). Expected ids were read off the tokenizers and checked by decoding each token (shown in comments).
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { HfTokenizer } from '../../../src/io/tokenizer.ts';
import { chatTemplateFromConfig, type ChatMessage } from '../../../src/io/chat.ts';
import {
  encodeRecord,
  encodeRecords,
  exampleCount,
  IGNORE_INDEX,
  type EncodeContext,
} from '../../../src/train/data/encode.ts';
import { alpacaPrompt, type DataRecord } from '../../../src/train/data/records.ts';
import { LorakitError } from '../../../src/errors.ts';
import { fixtureTokenizer, lossRuns } from './fixtures.ts';

const X = IGNORE_INDEX;
const where = { file: 'mem.jsonl', line: 1 };
const chat: ChatMessage[] = [
  { role: 'user', content: 'Hi' },
  { role: 'assistant', content: 'Yo' },
  { role: 'user', content: 'Bye' },
  { role: 'assistant', content: 'Ok' },
];

async function context(name: 'llama' | 'qwen2' | 'gpt2', seqLen = 8) {
  const tokenizer = await fixtureTokenizer(name);
  return { tokenizer, seqLen, chatTemplate: chatTemplateFromConfig(tokenizer.config as Record<string, unknown>) };
}

function one(record: DataRecord, ctx: EncodeContext) {
  const out = encodeRecord(record, ctx);
  assert.equal(out.length, 1);
  return out[0]!;
}

describe('text records', () => {
  test('llama: BOS as the tokenizer adds it, EOS appended, loss on every token after the first', async () => {
    // <s> H i " the" re </s>
    assert.deepEqual(one({ kind: 'text', text: 'Hi there', where }, await context('llama')), {
      ids: [1, 42, 75, 267, 266, 2],
      labels: [X, 42, 75, 267, 266, 2],
    });
  });

  test('qwen2: no BOS, so the first text token is the one without loss; EOS is <|im_end|>', async () => {
    assert.deepEqual(one({ kind: 'text', text: 'Hi there', where }, await context('qwen2')), {
      ids: [42, 75, 267, 266, 2],
      labels: [X, 75, 267, 266, 2],
    });
  });

  test('a tokenizer that already appends EOS does not get a second one', async () => {
    const dir = fileURLToPath(new URL('../../fixtures/models/llama/', import.meta.url));
    const json = JSON.parse(readFileSync(`${dir}tokenizer.json`, 'utf8'));
    const config = {
      ...JSON.parse(readFileSync(`${dir}tokenizer_config.json`, 'utf8')),
      tokenizer_class: 'LlamaTokenizerFast',
      add_bos_token: true,
      add_eos_token: true,
    };
    const tokenizer = HfTokenizer.fromJson(json, config);
    const ctx = { tokenizer, seqLen: 8 };
    assert.deepEqual(one({ kind: 'text', text: 'Hi there', where }, ctx).ids, [1, 42, 75, 267, 266, 2]);
    // The prompt's own trailing EOS is not a shared prefix, so the mask still starts at the completion.
    const pair = one({ kind: 'pair', prompt: 'Q: 2+2?\nA:', completion: ' 4', where }, ctx);
    assert.deepEqual(pair.ids.slice(-3), [223, 22, 2]);
    assert.deepEqual(pair.labels.slice(-4), [X, 223, 22, 2]);
  });
});

describe('prompt/completion and Alpaca records', () => {
  test('llama: loss on the completion and EOS only', async () => {
    // <s> Q : " " 2 + 2 ? \n A : | " " 4 </s>
    assert.deepEqual(one({ kind: 'pair', prompt: 'Q: 2+2?\nA:', completion: ' 4', where }, await context('llama')), {
      ids: [1, 51, 28, 223, 20, 13, 20, 33, 201, 35, 28, 223, 22, 2],
      labels: [X, X, X, X, X, X, X, X, X, X, X, 223, 22, 2],
    });
  });

  test('qwen2: the same mask without BOS', async () => {
    assert.deepEqual(one({ kind: 'pair', prompt: 'Q: 2+2?\nA:', completion: ' 4', where }, await context('qwen2')), {
      ids: [51, 28, 223, 20, 13, 20, 33, 201, 35, 28, 223, 22, 2],
      labels: [X, X, X, X, X, X, X, X, X, X, 223, 22, 2],
    });
  });

  test('a token that merges prompt and completion text counts as completion', async () => {
    const ctx = await context('llama');
    // The prompt alone ends in " t"; the full text is "<s> H i ' the' re </s>": " the" spans the boundary, so it
    // is not shared with the prompt's encoding and carries loss.
    const merged = one({ kind: 'pair', prompt: 'Hi t', completion: 'here', where }, ctx);
    assert.deepEqual(lossRuns(ctx.tokenizer, merged.ids, merged.labels), [' there</s>']);
  });

  test('Alpaca: the prompt is the Stanford template, the loss covers exactly the response and EOS', async () => {
    for (const name of ['llama', 'qwen2'] as const) {
      const ctx = await context(name);
      const ex = one(
        { kind: 'pair', prompt: alpacaPrompt('Say hi.', 'to Bob'), completion: 'Hello, Bob!', where },
        ctx,
      );
      assert.equal(
        ctx.tokenizer.decode(ex.ids),
        (name === 'llama' ? '<s>' : '') +
          alpacaPrompt('Say hi.', 'to Bob') +
          'Hello, Bob!' +
          (name === 'llama' ? '</s>' : '<|im_end|>'),
      );
      assert.deepEqual(lossRuns(ctx.tokenizer, ex.ids, ex.labels), [
        `Hello, Bob!${name === 'llama' ? '</s>' : '<|im_end|>'}`,
      ]);
    }
  });
});

describe('chat records', () => {
  test('llama (Llama-2 template): loss on each assistant reply and its </s>, nothing else', async () => {
    const ctx = await context('llama');
    const ex = one({ kind: 'chat', messages: chat, where }, ctx);
    // <s>[INST] Hi [/INST] Yo</s>[INST] Bye [/INST] Ok</s>
    assert.deepEqual(
      ex.ids,
      [
        1, 61, 43, 48, 53, 54, 63, 223, 42, 75, 223, 61, 17, 43, 48, 53, 54, 63, 223, 59, 81, 2, 61, 43, 48, 53, 54, 63,
        366, 91, 71, 223, 61, 17, 43, 48, 53, 54, 63, 223, 49, 77, 2,
      ],
    );
    const expected = ex.ids.map((id, i) => ([19, 20, 21, 40, 41, 42].includes(i) ? id : X));
    assert.deepEqual(ex.labels, expected);
    assert.deepEqual(lossRuns(ctx.tokenizer, ex.ids, ex.labels), ['Yo</s>', 'Ok</s>']);
  });

  test('qwen2 (ChatML): loss on each reply and its <|im_end|>, not on the headers or the newline after', async () => {
    const ctx = await context('qwen2');
    const ex = one({ kind: 'chat', messages: [{ role: 'system', content: 'Be brief.' }, ...chat], where }, ctx);
    assert.equal(
      ctx.tokenizer.decode(ex.ids),
      '<|im_start|>system\nBe ' +
        'brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nYo<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\nOk<|im_end|>\n',
    );
    assert.deepEqual(lossRuns(ctx.tokenizer, ex.ids, ex.labels), ['Yo<|im_end|>', 'Ok<|im_end|>']);
    assert.equal(ex.labels.at(-1), X);
  });
});

describe('plain text windows', () => {
  test(
    'the document is encoded once and cut into consecutive windows of seqLen; a 1-token tail is ' + 'dropped',
    async () => {
      const llama = await context('llama', 8);
      // <s> T o " be" , " o" r " not" | " to" " be"
      assert.deepEqual(encodeRecord({ kind: 'plain', text: 'To be, or not to be', where }, llama), [
        { ids: [1, 54, 81, 303, 14, 277, 84, 323], labels: [X, 54, 81, 303, 14, 277, 84, 323] },
        { ids: [280, 303], labels: [X, 303] },
      ]);
      const qwen = await context('qwen2', 8);
      // 9 tokens: one full window, then " be" alone, which has nothing to predict.
      assert.deepEqual(encodeRecord({ kind: 'plain', text: 'To be, or not to be', where }, qwen), [
        { ids: [54, 81, 303, 14, 277, 84, 323, 280], labels: [X, 81, 303, 14, 277, 84, 323, 280] },
      ]);
    },
  );
});

describe('encodeRecords', () => {
  const records: DataRecord[] = [
    { kind: 'chat', messages: chat, where: { file: 'c.jsonl', line: 1 } },
    {
      kind: 'chat',
      messages: [
        { role: 'user', content: 'a' },
        { role: 'assistant', content: 'b' },
      ],
      where: { file: 'c.jsonl', line: 2 },
    },
  ];
  // A template that rewrites the assistant text, so its tokens cannot be found: a per-record problem.
  const shouting =
    "{% for m in messages %}{{ m['role'] + ': ' }}{% if m['role'] == 'assistant' and m['content'] == 'Ok' %}{{ " +
    "m['content'] | upper }}{% else %}{{ m['content'] }}{% endif %}{{ '\\n' }}{% endfor %}";

  test("onError 'skip' reports the record that cannot be encoded, with its line, and keeps the others", async () => {
    const tokenizer = await fixtureTokenizer('qwen2');
    const { examples, problems } = encodeRecords(records, {
      tokenizer,
      chatTemplate: shouting,
      seqLen: 16,
      onError: 'skip',
    });
    assert.equal(exampleCount(examples), 1);
    assert.equal(problems.length, 1);
    assert.equal(problems[0]!.line, 1);
    assert.match(problems[0]!.message, /does not appear in the rendered chat/);
  });

  test("onError 'fail' throws LK_FILE_INVALID naming file and line", async () => {
    const tokenizer = await fixtureTokenizer('qwen2');
    assert.throws(
      () => encodeRecords(records, { tokenizer, chatTemplate: shouting, seqLen: 16, onError: 'fail' }),
      (e: unknown) => {
        assert.ok(e instanceof LorakitError);
        assert.equal(e.code, 'LK_FILE_INVALID');
        assert.match(e.message, /^c\.jsonl:1: /);
        return true;
      },
    );
  });

  test('examples are stored flat with offsets, in record order', async () => {
    const ctx = await context('llama');
    const recs: DataRecord[] = [
      { kind: 'text', text: 'Hi there', where },
      { kind: 'pair', prompt: 'Q: 2+2?\nA:', completion: ' 4', where },
    ];
    const { examples } = encodeRecords(recs, { ...ctx, onError: 'fail' });
    assert.deepEqual(Array.from(examples.offsets), [0, 6, 20]);
    assert.deepEqual(Array.from(examples.ids.subarray(0, 6)), [1, 42, 75, 267, 266, 2]);
    assert.deepEqual(Array.from(examples.labels.subarray(17)), [223, 22, 2]);
  });
});
