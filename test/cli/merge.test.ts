// `lorakit merge` run as a child process: the merged folder gives PEFT's merge_and_unload logits, an existing
// --out is refused without --force, and bad adapters fail with one line naming the file, tensor or field.
// `lorakit generate --adapter` generates through the adapter: unlike the base, and like the merged folder.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFile, cp, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SafetensorsFile } from '../../src/io/index.ts';
import { HfTokenizer } from '../../src/io/index.ts';
import { generate, loadModel } from '../../src/models/index.ts';
import { PeftModel, adaptable, loadAdapter } from '../../src/peft/index.ts';
import { shutdownRuntime } from '../../src/runtime/index.ts';
import { assertAllclose } from '../helpers.ts';
import { logitsOf } from '../peft/logits.ts';

const tmp = await mkdtemp(join(tmpdir(), 'lorakit-merge-cli-'));
after(async () => {
  await rm(tmp, { recursive: true, force: true });
  await shutdownRuntime();
});

/** Runs `lorakit <command> ...args`; resolves with the exit status and both streams. */
function run(command: string, ...args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(process.execPath, ['bin/lorakit.mjs', command, ...args], { encoding: 'utf8' }, (err, stdout, stderr) => {
      done({ status: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}
const lorakit = (...args: string[]) => run('merge', ...args);

const GPT2 = 'test/fixtures/models/gpt2',
  LORA = 'test/fixtures/peft/gpt2_lora';

test("merge writes a folder whose logits are PEFT's merge_and_unload logits", async () => {
  const out = join(tmp, 'gpt2-merged');
  const r = await lorakit('--model', GPT2, '--adapter', LORA, '--out', out);
  assert.equal(r.status, 0, r.stderr);
  assert.match(
    r.stdout,
    /^merged test\/fixtures\/peft\/gpt2_lora into test\/fixtures\/models\/gpt2: 8 of 28 tensors changed, written to .*gpt2-merged \(model.safetensors, config.json, /,
  );
  const expected = JSON.parse(await readFile(join(LORA, 'expected.json'), 'utf8'));
  const model = await loadModel(out);
  const got = await logitsOf(model, expected);
  await model.close();
  const st = await SafetensorsFile.open(join(LORA, 'expected.safetensors'));
  assertAllclose(got, await st.readAs('merged_logits', 'f32'), { atol: 1e-4, rtol: 0, what: 'merged folder logits' });
  await st.close();
});

test(
  'bad input fails with one line naming the problem: missing folder or file, shapes that do not fit, unknown ' +
    'peft_type, an existing --out, an --out holding the model (with --force)',
  async () => {
    const noWeights = join(tmp, 'no-weights'),
      loha = join(tmp, 'loha');
    await mkdir(noWeights, { recursive: true });
    await copyFile(join(LORA, 'adapter_config.json'), join(noWeights, 'adapter_config.json'));
    await mkdir(loha, { recursive: true });
    await copyFile(join(LORA, 'adapter_model.safetensors'), join(loha, 'adapter_model.safetensors'));
    const config = JSON.parse(await readFile(join(LORA, 'adapter_config.json'), 'utf8'));
    await writeFile(join(loha, 'adapter_config.json'), JSON.stringify({ ...config, peft_type: 'LOHA' }));
    const out = join(tmp, 'never'),
      taken = join(tmp, 'taken');
    await mkdir(taken, { recursive: true });
    await writeFile(join(taken, 'keep.txt'), 'mine');
    // the hostile case: --force with an --out that holds the base model (and a file of the user's)
    const proj = join(tmp, 'proj');
    await cp(GPT2, join(proj, 'gpt2'), { recursive: true });
    await writeFile(join(proj, 'notes.txt'), 'mine');
    const cases: [string[], RegExp][] = [
      [
        ['--model', join(proj, 'gpt2'), '--adapter', LORA, '--out', proj, '--force'],
        /^lorakit: the output folder .*proj contains the input folder .*proj\/gpt2; writing there could replace it, so choose a folder outside it \[LK_INVALID_ARGUMENT\]\n$/,
      ],
      [
        ['--model', GPT2, '--adapter', join(tmp, 'missing'), '--out', out],
        /^lorakit: adapter folder .*missing does not exist \[LK_FILE_NOT_FOUND\]\n$/,
      ],
      [
        ['--model', GPT2, '--adapter', noWeights, '--out', out],
        /^lorakit: .*no-weights\/adapter_model\.safetensors is missing .*\[LK_FILE_NOT_FOUND\]\n$/,
      ],
      [
        ['--model', 'test/fixtures/models/smollm', '--adapter', 'test/fixtures/peft/llama_dora', '--out', out],
        /^lorakit: .*adapter_model\.safetensors: tensor base_model\.model\.model\.layers\.0\.self_attn\.v_proj\.lora_B\.weight has shape \[32,4\], but the base model needs \[16,4\]; .*\[LK_SHAPE_MISMATCH\]\n$/,
      ],
      [
        ['--model', GPT2, '--adapter', loha, '--out', out],
        /^lorakit: .*loha\/adapter_config\.json: peft_type "LOHA" is not supported; lorakit supports LORA(, \w+)* \[LK_UNSUPPORTED\]\n$/,
      ],
      [['--model', GPT2, '--adapter', LORA], /^lorakit: --out <dir> is required: .*\[LK_INVALID_ARGUMENT\]\n$/],
      [
        ['--model', GPT2, '--adapter', LORA, '--out', taken],
        /^lorakit: the output folder .*taken exists and is not empty; remove it, or pass overwrite \(--force\) if lorakit exported it \[LK_INVALID_ARGUMENT\]\n$/,
      ],
    ];
    const results = await Promise.all(cases.map(([args]) => lorakit(...args)));
    results.forEach((r, i) => {
      assert.equal(r.status, 1, cases[i][0].join(' '));
      assert.equal(r.stdout, '');
      assert.match(r.stderr, cases[i][1]);
    });
    assert.ok(!(await readdir(tmp)).includes('never'));
    assert.deepEqual(await readdir(taken), ['keep.txt']);
    assert.deepEqual((await readdir(proj)).sort(), ['gpt2', 'notes.txt']);
    assert.deepEqual((await readdir(join(proj, 'gpt2'))).sort(), (await readdir(GPT2)).sort());
  },
);

test(
  'generate --adapter differs from the base model and equals generating with the merged folder (CLI and ' + 'library)',
  async () => {
    const LLAMA = 'test/fixtures/models/llama',
      PATTERNS = 'test/fixtures/peft/llama_lora_patterns';
    const merged = join(tmp, 'llama-merged');
    // an earlier merge (of another adapter) in --out is replaced by --force: the folder is lorakit's own
    const first = await lorakit('--model', LLAMA, '--adapter', 'test/fixtures/peft/llama_rslora', '--out', merged);
    assert.equal(first.status, 0, first.stderr);
    const m = await lorakit('--model', LLAMA, '--adapter', PATTERNS, '--out', merged, '--force');
    assert.equal(m.status, 0, m.stderr);
    const flags = ['--prompt', 'To be, or not to be', '--max-new-tokens', '16'];
    const [base, withAdapter, fromMerged] = await Promise.all([
      run('generate', '--model', LLAMA, ...flags),
      run('generate', '--model', LLAMA, '--adapter', PATTERNS, ...flags),
      run('generate', '--model', merged, ...flags),
    ]);
    for (const r of [base, withAdapter, fromMerged]) assert.equal(r.status, 0, r.stderr);
    assert.notEqual(withAdapter.stdout, base.stdout);
    assert.equal(withAdapter.stdout, fromMerged.stdout);

    // the same through the library, on token ids: hooks (unmerged) and PeftModel.merge() give the same greedy tokens
    const [model, tokenizer] = await Promise.all([loadModel(LLAMA), HfTokenizer.fromDir(LLAMA)]);
    const peft = new PeftModel(adaptable(model));
    await loadAdapter(peft, PATTERNS);
    const ids = async (adapter?: ReturnType<PeftModel['generationAdapter']>) =>
      (await generate(model, tokenizer, { prompt: 'To be, or not to be', maxNewTokens: 16, adapter })).rows[0].tokenIds;
    const plain = await ids(),
      hooked = await ids(peft.generationAdapter());
    await peft.merge();
    const mergedIds = await ids(peft.generationAdapter());
    await model.close();
    assert.notDeepEqual(hooked, plain);
    assert.deepEqual(hooked, mergedIds);
  },
);
