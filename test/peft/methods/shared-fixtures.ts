// Shared by the tests of the methods with model-level shared tensors (vblora, randlora, unilora): the two directions
// of PEFT compatibility with their committed fixtures under test/fixtures/shared/.
//  - PEFT → lorakit: interop/make_shared_fixtures.py's folders (PEFT's save_pretrained), loaded by lorakit and run on
//    the fixture model's inputs: PEFT's logits unmerged and merged (expected.safetensors), no unused tensor.
//  - lorakit → PEFT: scripts/make-shared-adapters.ts's folders, which interop/check_shared_adapters.py loaded with
//    PEFT (no warning, its state dict equal to the file) and ran: lorakit's logits equal PEFT's, unmerged and merged.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SafetensorsFile } from '../../../src/io/index.ts';
import { loadModel } from '../../../src/models/index.ts';
import { adaptable, loadAdapter, PeftModel } from '../../../src/peft/index.ts';
import { assertAllclose } from '../../helpers.ts';
import { logitsOf } from '../logits.ts';

export const ROOT = new URL('../../../', import.meta.url).pathname;
export const PEFT_DIR = join(ROOT, 'test/fixtures/shared/peft');
export const LORAKIT_DIR = join(ROOT, 'test/fixtures/shared/lorakit');

/** Named float tensors of a fixture's safetensors file. */
export async function readTensors(file: string, names: string[]): Promise<Record<string, Float32Array>> {
  const st = await SafetensorsFile.open(file);
  try {
    const out: Record<string, Float32Array> = {};
    for (const n of names) out[n] = await st.readAs(n, 'f32');
    return out;
  } finally {
    await st.close();
  }
}

/**
 * Loads PEFT's folder `c` into the model it was made on and checks PEFT's logits unmerged and merged (1e-4); `more`
 * then sees the loaded adapter and expected.json.
 */
export async function peftCase(c: string, more: (peft: PeftModel, expected: any) => Promise<void> = async () => {}) {
  const dir = join(PEFT_DIR, c);
  const expected = JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8'));
  const model = await loadModel(join(ROOT, expected.base_model));
  try {
    const peft = new PeftModel(adaptable(model));
    const { unused } = await loadAdapter(peft, dir);
    assert.deepEqual(unused, [], 'every tensor of the file is used');
    assert.deepEqual(
      [...peft.get('default').layers.keys()],
      Object.keys(expected.peft_layers),
      'the layers PEFT wrapped',
    );
    const want = await readTensors(join(dir, 'expected.safetensors'), ['logits', 'merged_logits']);
    const run = () => logitsOf(model, expected, { hooks: peft.hooks(), overrides: peft.weightOverrides() });
    assertAllclose(await run(), want.logits, { atol: 1e-4, rtol: 0, what: `${c} logits` });
    await peft.merge();
    assertAllclose(await run(), want.merged_logits, { atol: 1e-4, rtol: 0, what: `${c} merged logits` });
    peft.unmerge();
    await more(peft, expected);
  } finally {
    await model.close();
  }
}

/** What check_shared_adapters.py writes into a lorakit case folder under each version set. */
export const CHECKED_BY = {
  pinned: { logits: 'peft_logits.safetensors', report: 'peft.json' },
  current: { logits: 'peft_current_logits.safetensors', report: 'peft_current.json' },
} as const;

/**
 * lorakit's folder `c` (committed) loaded by lorakit gives the logits PEFT of version set `set` computed for it,
 * unmerged and merged (1e-4); PEFT loaded it with its tensors bit for bit (its report) and without warnings, but for
 * RandLoRA's by-design advice to save the bases when a folder leaves them out.
 */
export async function lorakitCase(c: string, set: keyof typeof CHECKED_BY): Promise<void> {
  const dir = join(LORAKIT_DIR, c);
  const inputs = JSON.parse(readFileSync(join(dir, 'inputs.json'), 'utf8'));
  const report = JSON.parse(readFileSync(join(dir, CHECKED_BY[set].report), 'utf8'));
  for (const w of report.peft_warnings) assert.match(w, /save_projection/, `${c}: PEFT warned: ${w}`); // RandLoRA's advice
  // PEFT decodes a top-k-only file to logits and encodes them again: the weights may move by an ulp
  assert.ok(
    report.tensors_equal_to_file || report.topk_weights_max_abs_diff <= 1e-6,
    `${c}: PEFT's loaded tensors equal the file's`,
  );
  const model = await loadModel(join(ROOT, inputs.base_model));
  try {
    const peft = new PeftModel(adaptable(model));
    const { unused } = await loadAdapter(peft, dir);
    assert.deepEqual(unused, []);
    const want = await readTensors(join(dir, CHECKED_BY[set].logits), ['logits', 'merged_logits']);
    const run = () => logitsOf(model, inputs, { hooks: peft.hooks(), overrides: peft.weightOverrides() });
    assertAllclose(await run(), want.logits, { atol: 1e-4, rtol: 0, what: `${c}: PEFT's logits` });
    await peft.merge();
    assertAllclose(await run(), want.merged_logits, { atol: 1e-4, rtol: 0, what: `${c}: PEFT's merged logits` });
  } finally {
    await model.close();
  }
}

/** Regenerating lorakit's case `c` (scripts/make-shared-adapters.ts) gives the committed adapter bytes. */
export async function regeneratesIdentically(c: string, makeCase: (name: string, dir: string) => Promise<void>) {
  const dir = mkdtempSync(join(tmpdir(), 'lk-shared-'));
  await makeCase(c, dir);
  for (const f of ['adapter_config.json', 'adapter_model.safetensors', 'inputs.json'])
    assert.ok(readFileSync(join(dir, f)).equals(readFileSync(join(LORAKIT_DIR, c, f))), `${c}/${f} is as committed`);
}
