// lorakit → PEFT: the adapters scripts/make-lorakit-adapters.ts writes are stable (regenerating gives the committed
// bytes), and with the committed folders lorakit computes the logits PEFT computed after `PeftModel.from_pretrained`
// (interop/check_lorakit_adapters.py: peft_logits.safetensors, peft.json), unmerged and merged, and resolves the same
// r / alpha / scaling per layer (VeRA: r). The same holds for today's PEFT (the "current" version set, `--versions
// current`:
// peft_current_logits.safetensors, peft_current.json); a folder it has not checked yet is skipped with a note.
// No Python here.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
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

/** What interop/check_lorakit_adapters.py writes into a case folder under each version set. */
const SETS = {
  pinned: { logits: 'peft_logits.safetensors', report: 'peft.json' },
  current: { logits: 'peft_current_logits.safetensors', report: 'peft_current.json' },
} as const;
type VersionSet = keyof typeof SETS;
/** Whether PEFT of `set` checks case `name` (BD-LoRA's cases only today's PEFT can). */
const checkedBy = (name: string, set: VersionSet) => CASES[name].peftSets?.includes(set) ?? true;

type LorakitResult = { logits: Float32Array; peft: PeftModel; unused: string[] };
/** lorakitLogits results by folder and merge flag: both version sets compare against one lorakit computation. */
const computed = new Map<string, Promise<LorakitResult>>();
const lorakitLogitsOnce = (dir: string, merge: boolean): Promise<LorakitResult> => {
  const key = `${dir}#${merge}`;
  if (!computed.has(key)) computed.set(key, lorakitLogits(dir, merge));
  return computed.get(key)!;
};

/** lorakit's logits for a case folder's inputs with its adapter loaded (optionally merged), and the PeftModel. */
async function lorakitLogits(dir: string, merge: boolean): Promise<LorakitResult> {
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

async function peftLogits(dir: string, name: 'logits' | 'merged_logits', set: VersionSet): Promise<Float32Array> {
  const st = await SafetensorsFile.open(join(dir, SETS[set].logits));
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
    // the current set's two files come together or not at all (a case it has not checked yet); a method the pinned
    // PEFT lacks (peftSets) has no pinned files
    const files = (await readdir(join(FIXTURES, c))).filter(
      (f) => f !== SETS.current.logits && f !== SETS.current.report,
    );
    const pinned = checkedBy(c, 'pinned') ? [SETS.pinned.report, SETS.pinned.logits] : [];
    assert.deepEqual(
      files.sort(),
      ['README.md', 'adapter_config.json', 'adapter_model.safetensors', 'inputs.json', ...pinned].sort(),
      c,
    );
    assert.equal(
      existsSync(join(FIXTURES, c, SETS.current.logits)),
      existsSync(join(FIXTURES, c, SETS.current.report)),
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

  for (const set of Object.keys(SETS) as VersionSet[]) {
    const which = set === 'pinned' ? "PEFT's" : "today's PEFT's";
    const skip = !checkedBy(name, set)
      ? (CASES[name].peftLacks ?? `the ${set} set's PEFT does not have this method`)
      : set === 'pinned' || existsSync(join(FIXTURES, name, SETS[set].logits))
        ? false
        : `no ${SETS[set].logits} yet: run interop/check_lorakit_adapters.py --versions ${set}`;
    test(`${name}: lorakit's logits with the adapter equal ${which}, unmerged and merged (1e-4)`, { skip }, () =>
      compareWithPeft(name, set),
    );
  }
}

/** lorakit's logits for a case (unmerged, merged) and resolved layers against what PEFT of `set` wrote. */
async function compareWithPeft(name: string, set: VersionSet): Promise<void> {
  const dir = join(FIXTURES, name);
  const what = `${name} (${set} PEFT)`;
  const unmerged = await lorakitLogitsOnce(dir, false);
  assert.deepEqual(unmerged.unused, []);
  assertAllclose(unmerged.logits, await peftLogits(dir, 'logits', set), {
    atol: 1e-4,
    rtol: 0,
    what: `${what} logits`,
  });
  if (CASES[name].mergeRefused) {
    await assert.rejects(
      lorakitLogitsOnce(dir, true),
      (e: unknown) => e instanceof LorakitError && e.code === 'LK_UNSUPPORTED',
    );
  } else {
    const merged = await lorakitLogitsOnce(dir, true);
    assertAllclose(merged.logits, await peftLogits(dir, 'merged_logits', set), {
      atol: 1e-4,
      rtol: 0,
      what: `${what} merged logits`,
    });
  }
  // PEFT wrapped the same layers with the same r, and for LoRA the same alpha and scaling (patterns, rsLoRA, DoRA
  // resolved alike); VeRA has one r for every layer and no per-layer settings
  const report = JSON.parse(await readFile(join(dir, SETS[set].report), 'utf8'));
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
}
