// LoRA-Squeeze against PEFT and torch: the squeezed folders scripts/make-squeeze-fixtures.ts writes from PEFT-made
// adapters are stable (regenerating gives the committed bytes); interop/check_squeeze.py found each module's
// squeezed ΔW equal to torch.linalg.svd's truncation of the source ΔW (recorded in peft.json) and PEFT's logits of the
// squeezed adapter (peft_logits.safetensors), which lorakit reproduces, with PEFT's rank and scale per layer.
// No Python here.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SafetensorsFile } from '../../src/io/index.ts';
import { loadModel } from '../../src/models/index.ts';
import { PeftModel, adaptable, loadAdapter } from '../../src/peft/index.ts';
import { CASES, OUT_REL, ROOT, makeCase } from '../../scripts/make-squeeze-fixtures.ts';
import { assertAllclose } from '../helpers.ts';
import { logitsOf } from './logits.ts';

const FIXTURES = join(ROOT, OUT_REL);
const tmp = await mkdtemp(join(tmpdir(), 'lorakit-squeeze-interop-'));
after(() => rm(tmp, { recursive: true, force: true }));

test('every squeeze case has a committed folder checked by PEFT', async () => {
  const folders = (await readdir(FIXTURES, { withFileTypes: true })).filter((d) => d.isDirectory()).map((d) => d.name);
  assert.deepEqual(folders.sort(), Object.keys(CASES).sort());
  for (const c of folders) {
    const files = (await readdir(join(FIXTURES, c))).sort();
    assert.deepEqual(files, [
      'README.md',
      'adapter_config.json',
      'adapter_model.safetensors',
      'inputs.json',
      'peft.json',
      'peft_logits.safetensors',
    ]);
  }
});

for (const name of Object.keys(CASES)) {
  test(`${name}: regenerating gives the committed bytes; lorakit computes PEFT's logits and ranks`, async () => {
    const fixture = join(FIXTURES, name);
    const fresh = await makeCase(name, tmp);
    for (const f of ['adapter_config.json', 'adapter_model.safetensors', 'inputs.json'])
      assert.ok((await readFile(join(fresh, f))).equals(await readFile(join(fixture, f))), `${name}/${f} is stable`);
    const inputs = JSON.parse(await readFile(join(fixture, 'inputs.json'), 'utf8'));
    const report = JSON.parse(await readFile(join(fixture, 'peft.json'), 'utf8'));
    const model = await loadModel(join(ROOT, inputs.base_model));
    try {
      const peft = new PeftModel(adaptable(model));
      await loadAdapter(peft, fixture);
      const a = peft.get('default');
      assert.deepEqual([...a.layers.keys()].sort(), Object.keys(report.layers).sort());
      for (const [path, l] of a.layers) {
        const p = report.layers[path];
        assert.equal(l.settings.r, p.r, `${path} rank`);
        assert.ok(Math.abs(l.settings.scaling - p.scaling) <= 1e-6 * p.scaling, `${path} scaling`);
        assert.ok(p.relative_error_vs_torch_svd < 1e-5, `${path} vs torch's SVD`);
      }
      const got = await logitsOf(model, inputs, { hooks: peft.hooks() });
      const st = await SafetensorsFile.open(join(fixture, 'peft_logits.safetensors'));
      const want = await st.readAs('logits', 'f32');
      await st.close();
      assertAllclose(got, want, { atol: 1e-4, rtol: 0, what: `${name} logits vs PEFT` });
    } finally {
      await model.close();
    }
  });
}
