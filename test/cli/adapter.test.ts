// `--adapter <dir>` in generate, eval and merge: an adapter folder holding tensors lorakit does not use (here an
// extra one added to a PEFT fixture) loads, and every command prints the same note naming them on stderr.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from '../../src/io/index.ts';

const root = new URL('../../', import.meta.url).pathname;
const LLAMA = join(root, 'test/fixtures/models/llama');
const tmp = mkdtempSync(join(tmpdir(), 'lorakit-cli-adapter-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

function lorakit(...args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((done) =>
    execFile(process.execPath, [join(root, 'bin/lorakit.mjs'), ...args], { encoding: 'utf8' }, (err, stdout, stderr) =>
      done({ status: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
    ),
  );
}

test('generate, eval and merge all note the unused tensors of an adapter folder', async () => {
  const adapter = join(tmp, 'with-extra');
  cpSync(join(root, 'test/fixtures/peft/llama_rslora'), adapter, { recursive: true });
  const file = join(adapter, 'adapter_model.safetensors');
  const st = await SafetensorsFile.open(file);
  const tensors: Record<string, TensorToWrite> = {};
  for (const n of st.names()) tensors[n] = { dtype: st.info(n).dtype, shape: st.info(n).shape, data: await st.read(n) };
  await st.close();
  tensors['base_model.model.model.norm.extra_scale'] = { dtype: 'F32', shape: [2], data: new Float32Array([1, 2]) };
  await writeSafetensors(file, tensors);
  const runs = await Promise.all([
    lorakit('generate', '--model', LLAMA, '--adapter', adapter, '--prompt', 'To be', '--max-new-tokens', '2'),
    lorakit('eval', '--model', LLAMA, '--adapter', adapter, '--data', join(root, 'test/fixtures/eval/shakespeare.txt')),
    lorakit('merge', '--model', LLAMA, '--adapter', adapter, '--out', join(tmp, 'merged')),
  ]);
  for (const r of runs) {
    assert.equal(r.status, 0, r.stderr);
    assert.equal(
      r.stderr,
      `lorakit: note: 1 tensor(s) of ${adapter} are not used by lorakit and were ignored: ` +
        'base_model.model.model.norm.extra_scale\n',
    );
  }
});
