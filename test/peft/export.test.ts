// exportMerged: a merged Hugging Face folder, loaded back with loadModel, gives the logits of base + adapter (and
// PEFT's merge_and_unload logits); tied weights stay tied, untouched tensors keep their bytes and dtype, the folder
// appears whole or not at all.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { cp, mkdtemp, mkdir, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SafetensorsFile } from '../../src/io/index.ts';
import { loadModel } from '../../src/models/index.ts';
import { EXPORT_MARKER, PeftModel, adaptable, exportMerged, loadAdapter } from '../../src/peft/index.ts';
import { assertAllclose } from '../helpers.ts';
import { logitsOf } from './logits.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const tmp = await mkdtemp(join(tmpdir(), 'lorakit-export-'));
after(() => rm(tmp, { recursive: true, force: true }));

async function tensorsOf(path: string): Promise<Map<string, { dtype: string; shape: number[]; bytes: Buffer }>> {
  const f = await SafetensorsFile.open(path);
  const out = new Map<string, { dtype: string; shape: number[]; bytes: Buffer }>();
  for (const n of f.names())
    out.set(n, { dtype: f.info(n).dtype, shape: f.info(n).shape, bytes: Buffer.from(await f.read(n)) });
  await f.close();
  return out;
}

for (const c of ['llama_dora', 'llama_embed', 'gpt2_lora', 'smollm_regex', 'bert_seqcls']) {
  test(`PEFT fixture ${c}: the exported merged folder gives base + adapter logits and PEFT's merged logits (1e-4)`, async () => {
    const dir = join(ROOT, 'test/fixtures/peft', c);
    const expected = JSON.parse(await readFile(join(dir, 'expected.json'), 'utf8'));
    const baseDir = join(ROOT, expected.base_model);
    const model = await loadModel(baseDir);
    const peft = new PeftModel(adaptable(model));
    await loadAdapter(peft, dir);
    const unmerged = await logitsOf(model, expected, { hooks: peft.hooks(), overrides: peft.weightOverrides() });
    const out = join(tmp, c);
    const res = await exportMerged(model, peft, out);
    await model.close();
    assert.deepEqual(res.adapters, ['default']);

    const merged = await loadModel(out);
    const got = await logitsOf(merged, expected);
    await merged.close();
    assertAllclose(got, unmerged, { atol: 1e-4, rtol: 0, what: `${c} merged export vs unmerged adapter` });
    const st = await SafetensorsFile.open(join(dir, 'expected.safetensors'));
    assertAllclose(got, await st.readAs('merged_logits', 'f32'), {
      atol: 1e-4,
      rtol: 0,
      what: `${c} merged export vs PEFT merge_and_unload`,
    });
    await st.close();

    // the same tensor names as the base (a tied head stays unstored); untouched tensors are the base's bytes
    const [base, mine] = await Promise.all([
      tensorsOf(join(baseDir, 'model.safetensors')),
      tensorsOf(join(out, 'model.safetensors')),
    ]);
    assert.deepEqual([...mine.keys()].sort(), [...base.keys()].sort());
    for (const [n, t] of mine) {
      if (res.merged.includes(n)) assert.equal(t.dtype, 'F32', n);
      else assert.ok(t.bytes.equals(base.get(n)!.bytes) && t.dtype === base.get(n)!.dtype, `${n} was copied unchanged`);
    }
    assert.ok(res.merged.length > 0);
    assert.ok(!mine.has('lm_head.weight') || base.has('lm_head.weight'));
    const files = (await readdir(out)).sort();
    const copied = (await readdir(baseDir)).filter((f) => !f.startsWith('expected')).sort();
    assert.deepEqual(files, [EXPORT_MARKER, ...copied].sort());
    // the marker lists every file the export wrote, and nothing else
    const marker = JSON.parse(await readFile(join(out, EXPORT_MARKER), 'utf8'));
    assert.deepEqual([...marker.files].sort(), copied);
    assert.equal(
      await readFile(join(out, 'config.json'), 'utf8'),
      await readFile(join(baseDir, 'config.json'), 'utf8'),
    );
  });
}

test(
  'a bf16 base keeps its untouched tensors in BF16; merged ones are F32 and the folder reloads with the ' +
    "adapter's logits",
  async () => {
    const baseDir = join(ROOT, 'test/fixtures/models/qwen2');
    const expected = JSON.parse(await readFile(join(baseDir, 'expected.json'), 'utf8'));
    const model = await loadModel(baseDir);
    const peft = new PeftModel(adaptable(model));
    await peft.addAdapter(
      'a',
      { target_modules: ['q_proj', 'down_proj'], r: 4, init_lora_weights: false },
      { seed: 7 },
    );
    const want = await logitsOf(model, expected, { hooks: peft.hooks() });
    const out = join(tmp, 'qwen2-merged');
    const res = await exportMerged(model, peft, out);
    await model.close();
    const tensors = await tensorsOf(join(out, 'model.safetensors'));
    assert.equal(res.merged.length, 4);
    for (const [n, t] of tensors) assert.equal(t.dtype, res.merged.includes(n) ? 'F32' : 'BF16', n);
    const merged = await loadModel(out);
    assertAllclose(await logitsOf(merged, expected), want, { atol: 1e-4, rtol: 0, what: 'qwen2 merged export' });
    await merged.close();
  },
);

test(
  'the output folder is written whole: an existing folder is refused unless overwrite, and no temp folder ' + 'is left',
  async () => {
    const baseDir = join(ROOT, 'test/fixtures/models/llama');
    const model = await loadModel(baseDir);
    const peft = new PeftModel(adaptable(model));
    await loadAdapter(peft, join(ROOT, 'test/fixtures/peft/llama_rslora'));
    const parent = join(tmp, 'atomic');
    const out = join(parent, 'merged');
    await mkdir(out, { recursive: true });
    await writeFile(join(out, 'keep.txt'), 'mine');
    await assert.rejects(
      exportMerged(model, peft, out),
      (e: any) =>
        e.code === 'LK_INVALID_ARGUMENT' &&
        /merged exists and is not empty; remove it, or pass overwrite/.test(e.message),
    );
    assert.deepEqual(await readdir(out), ['keep.txt']);
    await assert.rejects(
      exportMerged(model, peft, baseDir),
      (e: any) => e.code === 'LK_INVALID_ARGUMENT' && /is the input folder/.test(e.message),
    );
    await rm(out, { recursive: true });
    await exportMerged(model, peft, out);
    await exportMerged(model, peft, out, { overwrite: true }); // a folder lorakit exported is replaced
    assert.ok((await readdir(out)).includes('model.safetensors'));
    assert.deepEqual(await readdir(parent), ['merged']); // no .merged.*.tmp / .old left behind
    await model.close();
  },
);

test(
  'overwrite never deletes what lorakit did not write: an output that is or holds an input (also through a ' +
    'symlink), a folder without the export marker, or one with a foreign file is refused and left as it was',
  async () => {
    const proj = join(tmp, 'proj'),
      base = join(proj, 'base'),
      adapterDir = join(proj, 'adapter');
    await cp(join(ROOT, 'test/fixtures/models/llama'), base, { recursive: true });
    await cp(join(ROOT, 'test/fixtures/peft/llama_rslora'), adapterDir, { recursive: true });
    await writeFile(join(proj, 'notes.txt'), 'my notes');
    await symlink(base, join(proj, 'link-to-base'));
    const other = join(tmp, 'someone-elses');
    await mkdir(other);
    await writeFile(join(other, 'data.bin'), 'precious');
    const snapshot = async () => JSON.stringify(await listTree(proj)) + JSON.stringify(await listTree(other));
    const before = await snapshot();
    const model = await loadModel(base);
    const peft = new PeftModel(adaptable(model));
    await loadAdapter(peft, adapterDir);
    const refused: [string, RegExp][] = [
      [proj, /output folder .*proj contains the input folder .*base; writing there could replace it/],
      [tmp, /contains the input folder/],
      [base, /is the input folder/],
      [join(proj, 'link-to-base'), /link-to-base is the input folder .*base/],
      [adapterDir, /is the input folder .*adapter/],
      [other, /was not exported by lorakit \(it has no \.lorakit-export\.json\), so overwrite \(--force\) does not/],
    ];
    for (const [out, message] of refused)
      await assert.rejects(
        exportMerged(model, peft, out, { overwrite: true, inputs: [adapterDir] }),
        (e: any) => e.code === 'LK_INVALID_ARGUMENT' && e.details.option === 'out' && message.test(e.message),
        out,
      );
    assert.equal(await snapshot(), before, 'nothing was touched');
    // a folder lorakit exported, but with a file added since, is not replaced either
    const merged = join(tmp, 'merged-once');
    await exportMerged(model, peft, merged);
    await writeFile(join(merged, 'README.md'), 'added by hand');
    await assert.rejects(exportMerged(model, peft, merged, { overwrite: true }), (e: any) =>
      /holds files lorakit did not write there \(README\.md\)/.test(e.message),
    );
    assert.ok((await readdir(merged)).includes('README.md'));
    await model.close();
  },
);

/** Every path under `dir` with its size (symlinks as links), sorted: a fingerprint of a folder tree. */
async function listTree(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(`${p}/`, ...(await listTree(p)));
    else out.push(`${p} ${e.isSymbolicLink() ? 'link' : (await readFile(p)).length}`);
  }
  return out.sort();
}
