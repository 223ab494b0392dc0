// What the tests of the base-replacing initialisations (pissa.test.ts, olora.test.ts) share: PEFT's fixtures
// (interop/make_init_fixtures.py → test/fixtures/peft_init/<case>/), lorakit's logits on a fixture model, a base
// with one layer of a chosen [out, in] matrix, and the checks that compare factors with PEFT's and with W0.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { SafetensorsFile } from '../../../src/io/index.ts';
import { type LoadedModel, loadModel } from '../../../src/models/index.ts';
import { type AdaptableBase, adaptable, loadAdapter, PeftModel, saveAdapter } from '../../../src/peft/index.ts';
import { assertAllclose } from '../../helpers.ts';
import { type FixtureInputs, logitsOf } from '../logits.ts';

export const ROOT = resolve(import.meta.dirname, '../../..');
export const INIT_DIR = join(ROOT, 'test/fixtures/peft_init');

/** Every tensor of a safetensors file, as f32. */
export async function readTensors(file: string): Promise<Record<string, Float32Array>> {
  const st = await SafetensorsFile.open(file);
  try {
    const out: Record<string, Float32Array> = {};
    for (const k of st.names()) out[k] = await st.readAs(k, 'f32');
    return out;
  } finally {
    await st.close();
  }
}

/** One PEFT fixture case: expected.json and the tensors of expected.safetensors. */
export interface InitFixture {
  dir: string;
  expected: { base_model: string; lora_config: Record<string, unknown>; input_ids: number[][] } & Record<string, any>;
  tensors: Record<string, Float32Array>;
}

export async function readInitFixture(name: string): Promise<InitFixture> {
  const dir = join(INIT_DIR, name);
  const expected = JSON.parse(await readFile(join(dir, 'expected.json'), 'utf8'));
  return { dir, expected, tensors: await readTensors(join(dir, 'expected.safetensors')) };
}

/** Runs `f` with the fixture model `baseRel` (a path under the repository) opened, and closes it. */
export async function withModel<T>(baseRel: string, f: (model: LoadedModel) => Promise<T>): Promise<T> {
  const model = await loadModel(join(ROOT, baseRel));
  try {
    return await f(model);
  } finally {
    await model.close();
  }
}

/** Logits of `model` on `inputs` with the active adapters of `peft` (replaced weights included), or of the base. */
export const adaptedLogits = (model: LoadedModel, inputs: FixtureInputs, peft: PeftModel | null) =>
  logitsOf(model, inputs, peft ? { hooks: peft.hooks(), overrides: peft.weightOverrides() } : {});

/** The logits of the adapter folder `dir` loaded on the untouched fixture model `baseRel`. */
export const folderLogits = (baseRel: string, inputs: FixtureInputs, dir: string) =>
  withModel(baseRel, async (model) => {
    const peft = new PeftModel(adaptable(model));
    const { unused } = await loadAdapter(peft, dir);
    assert.deepEqual(unused, [], `${dir}: every tensor is used`);
    return adaptedLogits(model, inputs, peft);
  });

/** Writes adapter "default" of `peft` with convertToBase into a fresh temporary folder; `f` reads it, then it goes. */
export async function withConverted<T>(peft: PeftModel, f: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'lk-convert-'));
  try {
    await saveAdapter(peft, 'default', dir, { convertToBase: true });
    return await f(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * A base with one layer `proj` whose [out, in] weight is `w` (a Linear, or a Conv1D storing the transpose), stored
 * in `dtype`.
 */
export function oneLayerBase(
  w: ArrayLike<number>,
  o: number,
  i: number,
  { kind = 'linear', dtype = 'F32' }: { kind?: 'linear' | 'conv1d'; dtype?: string } = {},
): AdaptableBase {
  const stored = new Float32Array(o * i);
  for (let p = 0; p < o; p++)
    for (let c = 0; c < i; c++) stored[kind === 'linear' ? p * i + c : c * o + p] = w[p * i + c];
  return {
    modules: [{ kind, path: 'proj', inFeatures: i, outFeatures: o, weightName: 'proj.weight', biasName: null }],
    outputHead: null,
    readWeight: async () => Float32Array.from(stored),
    weightDtype: () => dtype,
  };
}

/** The [out, in] matrix of a weight stored as `stored` (Conv1D: [in, out]). */
export function asMatrix(stored: Float32Array, o: number, i: number, kind: 'linear' | 'conv1d'): Float64Array {
  if (kind === 'linear') return Float64Array.from(stored);
  const m = new Float64Array(o * i);
  for (let p = 0; p < o; p++) for (let c = 0; c < i; c++) m[p * i + c] = stored[c * o + p];
  return m;
}

/** s·B·A [out, in] in float64 from B [out, r] and A [r, in]. */
export function scaledProduct(b: ArrayLike<number>, a: ArrayLike<number>, o: number, r: number, i: number, s: number) {
  const out = new Float64Array(o * i);
  for (let p = 0; p < o; p++)
    for (let c = 0; c < i; c++) {
      let t = 0;
      for (let j = 0; j < r; j++) t += b[p * r + j] * a[j * i + c];
      out[p * i + c] = s * t;
    }
  return out;
}

/**
 * Asserts that lorakit's factors equal PEFT's up to one sign per rank component (A's row j and B's column j flip
 * together, leaving B·A unchanged), or with the same signs when `exactSigns`.
 */
export function assertFactors(
  got: { a: Float32Array; b: Float32Array },
  want: { a: Float32Array; b: Float32Array },
  dims: { o: number; r: number; i: number },
  opts: { exactSigns?: boolean; atol: number; what: string },
): void {
  const { o, r, i } = dims;
  for (let j = 0; j < r; j++) {
    let dot = 0;
    for (let c = 0; c < i; c++) dot += got.a[j * i + c] * want.a[j * i + c];
    const sign = dot < 0 ? -1 : 1;
    if (opts.exactSigns) assert.equal(sign, 1, `${opts.what}: component ${j} has the opposite sign`);
    const rowA = Array.from({ length: i }, (_, c) => sign * got.a[j * i + c]);
    const colB = Array.from({ length: o }, (_, p) => sign * got.b[p * r + j]);
    assertAllclose(rowA, want.a.subarray(j * i, (j + 1) * i), {
      atol: opts.atol,
      rtol: 0,
      what: `${opts.what} A[${j}]`,
    });
    const wantB = Array.from({ length: o }, (_, p) => want.b[p * r + j]);
    assertAllclose(colB, wantB, { atol: opts.atol, rtol: 0, what: `${opts.what} B[:, ${j}]` });
  }
}
