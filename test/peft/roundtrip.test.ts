// lorakit → PEFT: the adapters scripts/make-lorakit-adapters.ts writes are stable (regenerating gives the committed
// bytes), and with the committed folders lorakit computes the logits PEFT computed after `PeftModel.from_pretrained`
// (interop/check_lorakit_adapters.py: peft_logits.safetensors, peft.json), unmerged and merged, and resolves the same
// r / alpha / scaling per layer (VeRA: r). No Python here.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LorakitError } from '../../src/errors.ts';
import { SafetensorsFile } from '../../src/io/index.ts';
import { loadModel } from '../../src/models/index.ts';
import { PeftModel, adaptable, loadAdapter } from '../../src/peft/index.ts';
import { CASES, OUT_REL, ROOT, makeCase } from '../../scripts/make-lorakit-adapters.ts';
import { assertAllclose } from '../helpers.ts';
import { logitsOf } from './logits.ts';

const FIXTURES = join(ROOT, OUT_REL);
const tmp = await mkdtemp(join(tmpdir(), 'lorakit-roundtrip-'));
after(() => rm(tmp, { recursive: true, force: true }));

/** lorakit's logits for a case folder's inputs with its adapter loaded (optionally merged), and the PeftModel. */
async function lorakitLogits(
  dir: string,
  merge: boolean,
): Promise<{ logits: Float32Array; peft: PeftModel; unused: string[] }> {
  const inputs = JSON.parse(await readFile(join(dir, 'inputs.json'), 'utf8'));
  const model = await loadModel(join(ROOT, inputs.base_model));
  try {
    const peft = new PeftModel(adaptable(model));
    const { unused } = await loadAdapter(peft, dir);
    if (merge) await peft.merge();
    return {
      logits: await logitsOf(model, inputs, { hooks: peft.hooks(), overrides: peft.weightOverrides() }),
      peft,
      unused,
    };
  } finally {
    await model.close();
  }
}

async function peftLogits(dir: string, name: 'logits' | 'merged_logits'): Promise<Float32Array> {
  const st = await SafetensorsFile.open(join(dir, 'peft_logits.safetensors'));
  try {
    return await st.readAs(name, 'f32');
  } finally {
    await st.close();
  }
}

test("every case has a committed folder with PEFT's logits", async () => {
  const folders = (await readdir(FIXTURES, { withFileTypes: true }))
    .filter((d) => d.isDirectory())
    .map((d) => d.name)
    .sort();
  assert.deepEqual(folders, Object.keys(CASES).sort());
  for (const c of folders) {
    const files = (await readdir(join(FIXTURES, c))).sort();
    assert.deepEqual(
      files,
      [
        'README.md',
        'adapter_config.json',
        'adapter_model.safetensors',
        'inputs.json',
        'peft.json',
        'peft_logits.safetensors',
      ],
      c,
    );
  }
});

for (const name of Object.keys(CASES)) {
  test(`${name}: regenerating the adapter gives the committed bytes`, async () => {
    const dir = join(tmp, name);
    await makeCase(name, dir);
    for (const f of ['adapter_config.json', 'adapter_model.safetensors', 'README.md', 'inputs.json']) {
      const [got, want] = await Promise.all([readFile(join(dir, f)), readFile(join(FIXTURES, name, f))]);
      assert.ok(
        got.equals(want),
        `${name}/${f} differs from the committed file; rerun the script and interop/check_lorakit_adapters.py if ` +
          `the change is intended`,
      );
    }
  });

  test(`${name}: lorakit's logits with the adapter equal PEFT's, unmerged and merged (1e-4)`, async () => {
    const dir = join(FIXTURES, name);
    const unmerged = await lorakitLogits(dir, false);
    assert.deepEqual(unmerged.unused, []);
    assertAllclose(unmerged.logits, await peftLogits(dir, 'logits'), { atol: 1e-4, rtol: 0, what: `${name} logits` });
    if (CASES[name].mergeRefused) {
      await assert.rejects(
        lorakitLogits(dir, true),
        (e: unknown) => e instanceof LorakitError && e.code === 'LK_UNSUPPORTED',
      );
    } else {
      const merged = await lorakitLogits(dir, true);
      assertAllclose(merged.logits, await peftLogits(dir, 'merged_logits'), {
        atol: 1e-4,
        rtol: 0,
        what: `${name} merged logits`,
      });
    }
    // PEFT wrapped the same layers with the same r, and for LoRA the same alpha and scaling (patterns, rsLoRA, DoRA
    // resolved alike); VeRA has one r for every layer and no per-layer settings
    const report = JSON.parse(await readFile(join(dir, 'peft.json'), 'utf8'));
    const adapter = unmerged.peft.get('default');
    const ours = Object.fromEntries(
      [...adapter.layers].map(([path, l]) => [path, l.settings ?? { r: adapter.config.r as number }]),
    );
    assert.deepEqual(Object.keys(ours).sort(), Object.keys(report.peft_layers).sort());
    for (const [path, p] of Object.entries<{ r: number; lora_alpha?: number; scaling?: number }>(report.peft_layers)) {
      assert.equal(ours[path].r, p.r, `${path} r`);
      if (p.lora_alpha === undefined) continue;
      assert.equal(ours[path].alpha, p.lora_alpha, `${path} alpha`);
      assertAllclose([ours[path].scaling], [p.scaling!], { rtol: 1e-6, atol: 0, what: `${path} scaling` });
    }
  });
}
