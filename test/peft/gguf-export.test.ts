// GGUF export: a PEFT rsLoRA adapter written as a llama.cpp adapter whose delta (alpha / r) · B · A, with lora_b's
// q/k rows put back in HF order, equals lorakit's merge of the PEFT adapter; the GGUF writer's files read back; the
// `lorakit export` command. llama.cpp itself loads these files in interop/check_gguf_llamacpp.py.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GgufFile, encodeGguf, ggmlTypeByName, parseGguf, permuteRotaryRows } from '../../src/io/index.ts';
import { loadModel } from '../../src/models/index.ts';
import { PeftModel, adaptable, loadAdapter } from '../../src/peft/index.ts';
import { exportAdapterGguf, exportMergedGguf } from '../../src/peft/gguf-export.ts';
import { LorakitError } from '../../src/errors.ts';

const MODEL = join(import.meta.dirname, '..', 'fixtures', 'models', 'llama');
const ADAPTER = join(import.meta.dirname, '..', 'fixtures', 'peft', 'llama_rslora');

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'lorakit-gguf-export-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('gguf export: the adapter delta alpha/r · B·A (q/k rows back in HF order) is lorakit merge delta', async () => {
  await withDir(async (dir) => {
    const model = await loadModel(MODEL);
    try {
      const out = join(dir, 'a.gguf');
      const r = await exportAdapterGguf(model, ADAPTER, out);
      assert.ok(Math.abs(r.alpha - 8 * Math.sqrt(8)) < 1e-9); // rsLoRA: alpha / r = 8 / sqrt(8)
      const f = await GgufFile.open(out);
      const peft = new PeftModel(adaptable(model));
      await loadAdapter(peft, ADAPTER);
      await peft.merge();
      const merged = peft.weightOverrides();
      assert.equal(f.get('general.type'), 'adapter');
      assert.equal(f.get('adapter.type'), 'lora');
      assert.equal(f.get('general.architecture'), 'llama');
      const alpha = f.get('adapter.lora.alpha') as number;
      assert.deepEqual([...merged.keys()].sort(), [
        'model.layers.1.self_attn.q_proj.weight',
        'model.layers.1.self_attn.v_proj.weight',
      ]);
      for (const [name, w] of merged) {
        const gg = name
          .replace('model.layers.1.self_attn.q_proj', 'blk.1.attn_q')
          .replace('model.layers.1.self_attn.v_proj', 'blk.1.attn_v');
        const a = await f.read(`${gg}.lora_a`); // [r, in]
        const b = await f.read(`${gg}.lora_b`); // [out, r] in GGUF row order
        const [rank, inF] = f.info(`${gg}.lora_a`).shape as [number, number];
        const outF = f.info(`${gg}.lora_b`).shape[0]!;
        assert.equal(f.info(`${gg}.lora_b`).shape[1], rank);
        const delta = new Float32Array(outF * inF);
        for (let o = 0; o < outF; o++)
          for (let i = 0; i < inF; i++) {
            let s = 0;
            for (let k = 0; k < rank; k++) s += b[o * rank + k]! * a[k * inF + i]!;
            delta[o * inF + i] = (alpha / rank) * s;
          }
        const hfDelta = name.includes('q_proj') ? permuteRotaryRows(delta, 4, inF, true) : delta;
        const w0 = await model.read(name);
        let err = 0,
          size = 0;
        for (let j = 0; j < w.length; j++) {
          err = Math.max(err, Math.abs(w0[j]! + hfDelta[j]! - w[j]!));
          size = Math.max(size, Math.abs(hfDelta[j]!));
        }
        assert.ok(size > 1e-3, `${name}: the adapter changes nothing (${size})`);
        assert.ok(err <= 1e-6, `${name}: GGUF delta differs from the merge by ${err}`);
      }
      await f.close();
    } finally {
      await model.close();
    }
  });
});

test('gguf export: a merged model needs a GGUF base; unsupported adapters are refused naming the field', async () => {
  await withDir(async (dir) => {
    const model = await loadModel(MODEL);
    try {
      await assert.rejects(exportMergedGguf(model, undefined, join(dir, 'm.gguf')), (e: unknown) => {
        return e instanceof LorakitError && e.code === 'LK_UNSUPPORTED' && e.message.includes('GGUF base');
      });
      const dora = join(import.meta.dirname, '..', 'fixtures', 'peft', 'llama_dora');
      await assert.rejects(exportAdapterGguf(model, dora, join(dir, 'd.gguf')), (e: unknown) => {
        return e instanceof LorakitError && e.code === 'LK_UNSUPPORTED' && e.message.includes('use_dora');
      });
    } finally {
      await model.close();
    }
  });
});

test('gguf writer: metadata of each type, alignment and Q8_0/F16 tensors read back', () => {
  const q8 = ggmlTypeByName('Q8_0');
  const md = new Map([
    ['general.architecture', { type: 'string' as const, value: 'llama' }],
    ['general.alignment', { type: 'u32' as const, value: 64 }],
    ['x.list', { type: 'array' as const, itemType: 'i32' as const, value: [1, -2] }],
    ['x.big', { type: 'u64' as const, value: 2n ** 60n }],
  ]);
  const chunks = encodeGguf(md, [
    { name: 'a', type: q8, dims: [32, 2], data: new Uint8Array(68) },
    { name: 'b', type: ggmlTypeByName('F16'), dims: [3], data: new Uint8Array(6) },
  ]);
  const bytes = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let p = 0;
  for (const c of chunks) {
    bytes.set(c, p);
    p += c.length;
  }
  const h = parseGguf(bytes);
  assert.equal(h.alignment, 64);
  assert.deepEqual(h.metadata.get('x.list')?.value, [1, -2]);
  assert.equal(h.metadata.get('x.big')?.value, 2n ** 60n);
  assert.deepEqual(h.tensors.get('a')?.shape, [2, 32]);
  assert.equal(h.tensors.get('b')!.offset % 64, 0);
  assert.throws(
    () => encodeGguf(md, [{ name: 'c', type: q8, dims: [32], data: new Uint8Array(3) }]),
    /"c": 32 values of Q8_0 take 34 bytes, found 3/,
  );
});

test('lorakit export --format gguf writes the adapter; bad flags fail with one line', async () => {
  await withDir(async (dir) => {
    const run = (...args: string[]) =>
      spawnSync(process.execPath, ['bin/lorakit.mjs', 'export', ...args], { encoding: 'utf8' });
    const out = join(dir, 'x.gguf');
    const ok = run('--format', 'gguf', '--model', MODEL, '--adapter', ADAPTER, '--out', out);
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /llama\.cpp LoRA adapter, 2 weights/);
    const f = await GgufFile.open(out);
    assert.equal(f.names().length, 4);
    await f.close();
    const again = run('--format', 'gguf', '--model', MODEL, '--adapter', ADAPTER, '--out', out);
    assert.equal(again.status, 1);
    assert.match(again.stderr, /--out .* exists; pass --force/);
    const fmt = run('--format', 'onnx', '--model', MODEL, '--adapter', ADAPTER, '--out', out);
    assert.match(fmt.stderr, /--format expects gguf/);
  });
});
