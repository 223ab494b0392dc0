// `lorakit eval --json` run as a child process gives transformers' mean token loss and perplexity
// (interop/eval_reference.py → test/fixtures/eval/expected.json) for plain text and JSONL, with and without a PEFT
// adapter; the windowing rule and bad inputs are checked on the library call.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HfTokenizer } from '../../src/io/tokenizer.ts';
import { loadModel } from '../../src/models/load.ts';
import { shutdownRuntime } from '../../src/runtime/index.ts';
import { fakeHubRepo } from '../io/fake-hub.ts';
import { aurac, evaluateText, textWindows } from '../../src/train/text-eval.ts';
import { adaptable, loadAdapter, PeftModel, saveTruncated } from '../../src/peft/index.ts';
import { assertAllclose } from '../helpers.ts';

const tmp = await mkdtemp(join(tmpdir(), 'lorakit-eval-'));
after(async () => {
  await rm(tmp, { recursive: true, force: true });
  await shutdownRuntime();
});

function lorakit(...args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(process.execPath, ['bin/lorakit.mjs', 'eval', ...args], { encoding: 'utf8' }, (err, stdout, stderr) => {
      done({ status: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

interface RefCase {
  model: string;
  adapter: string | null;
  data: string;
  seq_len: number | null;
  seq_len_used: number;
  loss: number;
  perplexity: number;
  tokens: number;
  windows: number;
  loss_without_adapter?: number;
}
const expected: { cases: Record<string, RefCase> } = JSON.parse(
  await readFile('test/fixtures/eval/expected.json', 'utf8'),
);

test(
  "eval --json equals transformers' loss and perplexity (1e-4 relative) and counts the same predicted " + 'tokens',
  async () => {
    const names = Object.keys(expected.cases);
    assert.ok(names.length >= 5);
    const runs = await Promise.all(
      names.map((name) => {
        const c = expected.cases[name];
        return lorakit(
          '--model',
          c.model,
          '--data',
          c.data,
          '--json',
          ...(c.adapter ? ['--adapter', c.adapter] : []),
          ...(c.seq_len === null ? [] : ['--seq-len', String(c.seq_len)]),
        );
      }),
    );
    runs.forEach((r, i) => {
      const name = names[i],
        c = expected.cases[name];
      assert.equal(r.status, 0, `${name}: ${r.stderr}`);
      assert.equal(r.stderr, '');
      const got = JSON.parse(r.stdout);
      assert.deepEqual([got.tokens, got.windows, got.seq_len], [c.tokens, c.windows, c.seq_len_used], name);
      assertAllclose([got.loss, got.perplexity], [c.loss, c.perplexity], {
        rtol: 1e-4,
        atol: 0,
        what: `${name} loss, perplexity`,
      });
    });
    // an adapter moves the loss by over 10x the tolerance, so an ignored adapter could not pass
    for (const c of Object.values(expected.cases)) {
      if (c.adapter)
        assert.ok(
          Math.abs(c.loss - c.loss_without_adapter!) > 10 * 1e-4 * c.loss,
          `${c.adapter}: ${c.loss} vs ${c.loss_without_adapter}`,
        );
    }
  },
);

test("eval --model <hub id> reads the cached snapshot through its symlinks: transformers' loss", async () => {
  const c = expected.cases.llama_lora_patterns_text_128;
  fakeHubRepo(join(tmp, 'hf', 'hub'), 'TinyOrg/tiny-llama', c.model);
  const r = await new Promise<{ err: Error | null; stdout: string; stderr: string }>((done) =>
    execFile(
      process.execPath,
      [
        'bin/lorakit.mjs',
        'eval',
        '--model',
        'TinyOrg/tiny-llama',
        '--adapter',
        c.adapter!,
        '--data',
        c.data,
        '--seq-len',
        '128',
        '--json',
      ],
      {
        encoding: 'utf8',
        env: { ...process.env, HF_HUB_CACHE: '', HF_HOME: join(tmp, 'hf'), LORAKIT_CACHE: join(tmp, 'lk') },
      },
      (err, stdout, stderr) => done({ err, stdout, stderr }),
    ),
  );
  assert.equal(r.err, null, r.stderr);
  const got = JSON.parse(r.stdout);
  assert.equal(got.tokens, c.tokens);
  assertAllclose([got.loss], [c.loss], { rtol: 1e-4, atol: 0, what: 'loss' });
});

test("eval --ranks: the adapter truncated to each rank (the full rank gives transformers' loss) and the AURAC", async () => {
  const c = expected.cases.gpt2_lora_jsonl_48; // PEFT's r 4 LoRA on GPT-2
  const r = await lorakit(
    '--model',
    c.model,
    '--adapter',
    c.adapter!,
    '--data',
    c.data,
    '--seq-len',
    '48',
    '--ranks',
    '4,1,2',
    '--json',
  );
  assert.equal(r.status, 0, r.stderr);
  const got = JSON.parse(r.stdout);
  assert.deepEqual(
    got.ranks.map((x: { rank: number }) => x.rank),
    [1, 2, 4],
  );
  assert.equal(got.tokens, c.tokens);
  assertAllclose([got.ranks[2].loss], [c.loss], { rtol: 1e-4, atol: 0, what: 'rank 4 = the whole adapter' });
  // a lower rank is the folder saveTruncated writes (first t components, lora_alpha kept), evaluated as any adapter
  const model = await loadModel(c.model);
  try {
    const tokenizer = await HfTokenizer.fromDir(model.dir);
    const peft = new PeftModel(adaptable(model));
    await loadAdapter(peft, c.adapter!);
    for (const [i, t] of [1, 2].entries()) {
      const dir = join(tmp, `gpt2-rank${t}`);
      await saveTruncated(peft, 'default', dir, t);
      const truncated = new PeftModel(adaptable(model));
      await loadAdapter(truncated, dir);
      const want = await evaluateText(model, tokenizer, {
        data: c.data,
        seqLen: 48,
        adapter: truncated.generationAdapter(),
      });
      assertAllclose([got.ranks[i].loss], [want.loss], { rtol: 1e-6, atol: 0, what: `rank ${t}` });
    }
  } finally {
    await model.close();
  }
  const losses = got.ranks.map((x: { loss: number }) => x.loss);
  assert.ok(Math.abs(losses[0] - losses[2]) > 1e-3, 'ranks give different losses');
  assert.equal(got.aurac_loss.v1, aurac(losses, [1, 2, 4], 'v1'));
  assert.equal(got.aurac_loss.v2, aurac(losses, [1, 2, 4], 'v2'));
  const bad = await lorakit('--model', c.model, '--adapter', c.adapter!, '--data', c.data, '--ranks', '2,8');
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /rank must be an integer in 1\.\.4/);
  const noAdapter = await lorakit('--model', c.model, '--data', c.data, '--ranks', '1,2');
  assert.match(noAdapter.stderr, /--adapter <dir> is required/);
});

test("aurac follows MatryoshkaLoRA's metrics.py: trapezoids over ranks (v1) or log2 ranks (v2) over the span", () => {
  // v1: ((2−1)·(0.2+0.4)/2 + (8−2)·(0.4+0.7)/2) / 7 = (0.3 + 3.3) / 7; v2 over log2: (1·0.3 + 2·0.55) / 3
  assertAllclose([aurac([0.2, 0.4, 0.7], [1, 2, 8], 'v1')], [3.6 / 7], { rtol: 1e-15, atol: 0 });
  assertAllclose([aurac([0.2, 0.4, 0.7], [1, 2, 8], 'v2')], [1.4 / 3], { rtol: 1e-15, atol: 0 });
  assert.equal(aurac([0.5], [4], 'v2'), 0.5);
  assert.throws(() => aurac([1, 2], [2, 1], 'v1'), /ranks must increase/);
});

test('windows are consecutive and non-overlapping; a one-token tail predicts nothing and is dropped', () => {
  const ids = Array.from({ length: 10 }, (_, i) => i);
  assert.deepEqual(textWindows(ids, 4), [
    [0, 1, 2, 3],
    [4, 5, 6, 7],
    [8, 9],
  ]);
  assert.deepEqual(textWindows(ids.slice(0, 9), 4), [
    [0, 1, 2, 3],
    [4, 5, 6, 7],
  ]);
  assert.deepEqual(textWindows([5], 4), []);
});

test(
  'bad inputs: not a causal LM, seqLen past the positions, missing file, bad JSONL record, nothing to ' + 'predict',
  async () => {
    const [llama, bert] = await Promise.all([
      loadModel('test/fixtures/models/llama'),
      loadModel('test/fixtures/models/bert'),
    ]);
    const tok = await HfTokenizer.fromDir('test/fixtures/models/llama');
    const data = 'test/fixtures/eval/shakespeare.txt';
    const bad = join(tmp, 'bad.jsonl'),
      empty = join(tmp, 'empty.txt');
    await writeFile(bad, '{"text": "fine"}\n{"content": "no text field"}\n');
    await writeFile(empty, '');
    // thunks: each call starts only when awaited, so no rejection is left unhandled meanwhile
    const cases: [() => Promise<unknown>, string, RegExp][] = [
      [() => evaluateText(bert, tok, { data }), 'LK_UNSUPPORTED', /bert model, not a causal LM/],
      [
        () => evaluateText(llama, tok, { data, seqLen: 129 }),
        'LK_INVALID_ARGUMENT',
        /seqLen 129 exceeds the model's 128 positions; use at most 128/,
      ],
      [
        () => evaluateText(llama, tok, { data: join(tmp, 'nope.txt') }),
        'LK_FILE_NOT_FOUND',
        /data file .*nope\.txt does not exist/,
      ],
      [
        () => evaluateText(llama, tok, { data: bad }),
        'LK_FILE_INVALID',
        /bad\.jsonl:2: expected a record with a string field "text"/,
      ],
      // the llama tokenizer adds <s>, so an empty text is one token: nothing to predict
      [() => evaluateText(llama, tok, { data: empty }), 'LK_INVALID_ARGUMENT', /empty\.txt: no token to predict/],
    ];
    for (const [p, code, re] of cases) await assert.rejects(p(), (e: any) => e.code === code && re.test(e.message));
    await Promise.all([llama.close(), bert.close()]);
    const r = await lorakit('--model', 'test/fixtures/models/llama', '--data', data, '--seq-len', 'long');
    assert.equal(r.status, 1);
    assert.match(r.stderr, /^lorakit: --seq-len expects a positive integer, got "long" \[LK_INVALID_ARGUMENT\]\n$/);
  },
);
