// `lorakit eval --adapter <Arrow router folder>` (child process, llama fixture, three random LoRA folders routed with
// top_k 2 and temperature 0.7): its loss equals adaptive.arrowLoss on the same windows (and differs from the base
// model's), and malformed router folders fail with one line naming the file and the field.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { arrowLoss, readArrowFolder, type TokenBatch, writeArrowFolder } from '../../src/adaptive/index.ts';
import { HfTokenizer } from '../../src/io/index.ts';
import { loadModel } from '../../src/models/index.ts';
import { compose } from '../../src/peft/index.ts';
import { shutdownRuntime } from '../../src/runtime/index.ts';
import { textWindows } from '../../src/train/text-eval.ts';
import { randomLora, TARGETS } from '../adaptive/tiny.ts';

const tmp = await mkdtemp(join(tmpdir(), 'lorakit-eval-arrow-'));
after(async () => {
  await rm(tmp, { recursive: true, force: true });
  await shutdownRuntime();
});
const BASE = 'test/fixtures/models/llama';
const SEQ = 16;

function evalCli(...args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(process.execPath, ['bin/lorakit.mjs', 'eval', ...args], { encoding: 'utf8' }, (e, o, s) =>
      done({ status: e ? (typeof e.code === 'number' ? e.code : 1) : 0, stdout: o, stderr: s }),
    );
  });
}

async function writeRandom(name: string, seed: number, r: number): Promise<string> {
  const ad = randomLora(seed, r, 2, 0.3);
  const dir = join(tmp, name);
  const config = {
    peft_type: 'LORA',
    r,
    lora_alpha: 2 * r,
    target_modules: TARGETS.map(([p]) => p.split('.').pop()),
    base_model_name_or_path: BASE,
  };
  await compose.writeLora(dir, { config, modules: ad.modules }, 'random test adapter');
  return dir;
}

test('eval of an Arrow folder equals arrowLoss on the same windows', async () => {
  const dirs = [await writeRandom('e1', 31, 2), await writeRandom('e2', 32, 3), await writeRandom('e3', 33, 2)];
  const router = join(tmp, 'router');
  await writeArrowFolder(router, dirs, ['e1', 'e2', 'e3'], { topK: 2, temperature: 0.7 });
  const text = 'Arrow routes each token to the adapters whose prototype it is closest to. '.repeat(3);
  const data = join(tmp, 'text.txt');
  await writeFile(data, text);
  const r = await evalCli('--model', BASE, '--adapter', router, '--data', data, '--seq-len', String(SEQ), '--json');
  assert.equal(r.status, 0, r.stderr);
  const got = JSON.parse(r.stdout) as { loss: number; tokens: number };

  // the reference: the same windows as next-token batches of one window each, through arrowLoss
  const tokenizer = await HfTokenizer.fromDir(BASE);
  const windows = textWindows(tokenizer.encode(text, { addSpecialTokens: true }), SEQ);
  const batches: TokenBatch[] = windows.map((w) => {
    const inputIds = new BigInt64Array(SEQ);
    const labels = new BigInt64Array(SEQ).fill(-100n);
    w.forEach((id, t) => {
      inputIds[t] = BigInt(id);
      if (t + 1 < w.length) labels[t] = BigInt(w[t + 1]);
    });
    return { inputIds, labels };
  });
  assert.equal(
    got.tokens,
    windows.reduce((s, w) => s + w.length - 1, 0),
  );
  const { pool, options } = await readArrowFolder(router);
  assert.deepEqual(options, { topK: 2, temperature: 0.7 });
  const model = await loadModel(BASE);
  try {
    const [want] = await arrowLoss(model, pool, [batches], { batch: 1, seqLen: SEQ }, options);
    assert.ok(Math.abs(got.loss - want) < 1e-5 * want, `eval ${got.loss}, arrowLoss ${want}`);
    const base = await evalCli('--model', BASE, '--data', data, '--seq-len', String(SEQ), '--json');
    const baseLoss = (JSON.parse(base.stdout) as { loss: number }).loss;
    assert.ok(Math.abs(baseLoss - got.loss) > 1e-3, `routing changes the loss: base ${baseLoss}, Arrow ${got.loss}`);
  } finally {
    await model.close();
  }
});

test('a malformed Arrow folder is one clear error naming the file and field', async () => {
  const one = await writeRandom('m1', 41, 2);
  const cases: [string, string, RegExp][] = [
    ['bad-json', '{ "top_k": 2,', /arrow_config\.json: not valid JSON/],
    ['no-list', '{ "top_k": 2 }', /task_specific_adapters must be a non-empty list of subfolder names/],
    ['bad-topk', '{ "top_k": 0, "task_specific_adapters": ["m1"] }', /top_k must be a positive integer, got 0/],
    ['missing', '{ "task_specific_adapters": ["m1", "nope"] }', /task_specific_adapters "nope" is not a readable LoRA/],
    ['escape', '{ "task_specific_adapters": ["../m1"] }', /"..\/m1" is not a subfolder name/],
  ];
  for (const [name, config, re] of cases) {
    const dir = join(tmp, name);
    await mkdir(dir, { recursive: true });
    await writeArrowFolder(dir, [one], ['m1'], {});
    await writeFile(join(dir, 'arrow_config.json'), config);
    await assert.rejects(readArrowFolder(dir), re, name);
  }
  const r = await evalCli('--model', BASE, '--adapter', join(tmp, 'missing'), '--data', join(tmp, 'text.txt'));
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /LK_FILE_NOT_FOUND|task_specific_adapters "nope"/);
  assert.ok(r.stderr.trim().split('\n').length <= 3, r.stderr);
});
