// A two-step run of the CLI's run config (YAML text, as a user writes it) on the fixture Llama, for method tests that
// show a training-only variant is usable from YAML: the run config is loaded with loadRunConfig and trained with
// runTraining; the caller gets the run's output (adapter folder, result) and removes nothing (the temp folder is its).
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadRunConfig, type RunOutput, runTraining } from '../../../src/train/index.ts';

const root = new URL('../../../', import.meta.url).pathname;

/** Trains the fixture Llama for `steps` steps with the YAML `adapter` block (indented two spaces under adapter:). */
export async function trainFromYaml(adapterYaml: string, steps = 2): Promise<RunOutput & { dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'lorakit-rule-yaml-'));
  const text = join(dir, 'text.txt');
  writeFileSync(text, readFileSync(join(root, 'test/fixtures/eval/shakespeare.txt')));
  const file = join(dir, 'run.yaml');
  writeFileSync(
    file,
    [
      `model: ${join(root, 'test/fixtures/models/llama')}`,
      `output_dir: ${join(dir, 'out')}`,
      'data:',
      `  path: ${text}`,
      '  seq_len: 32',
      'adapter:',
      '  r: 2',
      '  target_modules: [q_proj, v_proj]',
      adapterYaml,
      'training:',
      `  max_steps: ${steps}`,
      '  per_device_train_batch_size: 2',
      '',
    ].join('\n'),
  );
  const out = await runTraining(loadRunConfig(file), { progress: 'none' });
  return { ...out, dir };
}
