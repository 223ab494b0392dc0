// The CLI shell as a new user and a hostile tester meet it, run as child processes: every failure is one line
// `lorakit: <message> [LK_…]` naming the path or the flag as typed, never a stack trace. Negative numbers work as
// `--flag -5`; library option names come back as flags; the operating system's refusals (a read-only folder, a full
// disk, a symbolic link loop) and a config.json that claims a billion layers are lorakit errors.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { asUnprivileged, inNamespace, noMounts, type Finished } from '../sandbox.ts';

const root = new URL('../../', import.meta.url).pathname;
const BIN = join(root, 'bin/lorakit.mjs');
const LLAMA = join(root, 'test/fixtures/models/llama');
const tmp = mkdtempSync(join(tmpdir(), 'lorakit-main-'));
chmodSync(tmp, 0o755); // the unprivileged user of some tests reads the model and data copied here
after(() => rmSync(tmp, { recursive: true, force: true }));

function lorakit(args: string[], env: Record<string, string> = {}): Promise<Finished> {
  return new Promise((done) =>
    execFile(
      process.execPath,
      [BIN, ...args],
      { encoding: 'utf8', env: { ...process.env, LORAKIT_CACHE: join(tmp, 'cache'), ...env } },
      (err, stdout, stderr) =>
        done({ status: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
    ),
  );
}

/** Asserts a failure printed as exactly one lorakit line with `code` matching `message`, and no stack trace. */
function oneLine(r: Finished, code: string, message: RegExp): void {
  assert.equal(r.status, 1, `exit status (stderr: ${r.stderr})`);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  const lines = r.stderr.split('\n').filter((l) => l.startsWith('lorakit:'));
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], new RegExp(`^lorakit: .* \\[${code}\\]$`));
  assert.match(lines[0], message);
}

test('negative numbers work as --flag -5; a value cac cannot take says how to write it', async () => {
  const gen = ['generate', '--model', LLAMA, '--prompt', 'To be', '--temperature', '1'];
  const [spaced, joined, negative, info] = await Promise.all([
    lorakit([...gen, '--max-new-tokens', '4', '--seed', '-5']),
    lorakit([...gen, '--max-new-tokens', '4', '--seed=-5']),
    lorakit(['generate', '--model', LLAMA, '--prompt', 'To be', '--temperature', '-0.5']),
    lorakit(['info', '-3']),
  ]);
  assert.equal(spaced.status, 0, spaced.stderr);
  assert.equal(spaced.stdout, joined.stdout, 'the same seed either way');
  oneLine(negative, 'LK_INVALID_ARGUMENT', /^lorakit: --temperature must be a finite number >= 0, got -0.5/);
  assert.equal(info.status, 1);
  assert.match(info.stderr, /Unknown option `-3` \(a negative value goes as --flag=-3\)/);
});

test(
  'library errors name the flag the user typed, not the option of the library call; a file given as --model is ' +
    '"a file, not a folder"',
  async () => {
    writeFileSync(join(tmp, 'text.txt'), readFileSync(join(root, 'test/fixtures/eval/shakespeare.txt')));
    const gen = ['generate', '--model', LLAMA, '--prompt', 'To be'];
    const [topP, tooMany, seqLen, file] = await Promise.all([
      lorakit([...gen, '--top-p', '2']),
      lorakit([...gen, '--max-new-tokens', '1000']),
      lorakit(['eval', '--model', LLAMA, '--data', join(tmp, 'text.txt'), '--seq-len', '999']),
      lorakit(['eval', '--model', join(LLAMA, 'config.json'), '--data', join(tmp, 'text.txt')]),
    ]);
    oneLine(topP, 'LK_INVALID_ARGUMENT', /^lorakit: --top-p must be a number in \(0, 1\]/);
    oneLine(
      tooMany,
      'LK_INVALID_ARGUMENT',
      /plus --max-new-tokens \(1000\) exceeds the model's 128 positions; use at most/,
    );
    oneLine(
      seqLen,
      'LK_INVALID_ARGUMENT',
      /^lorakit: --seq-len 999 exceeds the model's 128 positions; use at most 128/,
    );
    oneLine(file, 'LK_FILE_NOT_FOUND', /model folder .*llama\/config\.json is a file, not a folder/);
  },
);

test('a model.safetensors that is a symbolic link loop is LK_IO naming the file', async () => {
  const dir = join(tmp, 'loop');
  cpSync(LLAMA, dir, { recursive: true });
  rmSync(join(dir, 'model.safetensors'));
  symlinkSync('model.safetensors', join(dir, 'model.safetensors'));
  oneLine(
    await lorakit(['generate', '--model', dir, '--prompt', 'x']),
    'LK_IO',
    /cannot read .*loop\/model\.safetensors: its symbolic links form a loop \(ELOOP\); fix or remove the link/,
  );
});

test('num_hidden_layers: 1e9 is refused against the weights at once, not by running out of memory', async () => {
  const dir = join(tmp, 'billion');
  cpSync(LLAMA, dir, { recursive: true });
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...config, num_hidden_layers: 1e9 }));
  const t0 = Date.now();
  // a small heap makes the old behaviour (a V8 out-of-memory abort) quick to show
  const r = await lorakit(['generate', '--model', dir, '--prompt', 'x'], { NODE_OPTIONS: '--max-old-space-size=400' });
  oneLine(r, 'LK_CONFIG_INVALID', /config\.json: num_hidden_layers is 1000000000, but the weights in .* hold 2 blocks/);
  assert.ok(Date.now() - t0 < 20000, `refused in ${Date.now() - t0} ms`);
});

/** A run config training the fixture Llama for `steps` steps into `out`. */
function runYaml(out: string, steps = 2): string {
  const file = join(tmp, `run-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(
    file,
    `model: ${LLAMA}\noutput_dir: ${out}\ndata: {path: ${join(tmp, 'text.txt')}, seq_len: 32}\n` +
      'adapter: {target_modules: [q_proj, v_proj], r: 2}\n' +
      `training: {max_steps: ${steps}, per_device_train_batch_size: 2}\n`,
  );
  chmodSync(file, 0o644);
  return file;
}

test('train and merge into a folder the user may not write: LK_PERMISSION_DENIED naming it (EACCES)', async () => {
  writeFileSync(join(tmp, 'text.txt'), readFileSync(join(root, 'test/fixtures/eval/shakespeare.txt')));
  const locked = join(tmp, 'no-write');
  mkdirSync(locked, { mode: 0o555 });
  chmodSync(locked, 0o555);
  const train = await asUnprivileged([BIN, 'train', '--config', runYaml(join(locked, 'run'))]);
  oneLine(
    train,
    'LK_PERMISSION_DENIED',
    /cannot write .*no-write \(to create .*no-write\/run in it\): permission denied/,
  );
  const adapter = join(root, 'test/fixtures/peft/llama_rslora');
  const merge = await asUnprivileged([
    BIN,
    'merge',
    '--model',
    LLAMA,
    '--adapter',
    adapter,
    '--out',
    join(locked, 'm'),
  ]);
  oneLine(merge, 'LK_PERMISSION_DENIED', /cannot write .*no-write.*permission denied \(EACCES\)/);
  assert.ok(!existsSync(join(locked, 'run')) && !existsSync(join(locked, 'm')));
});

test('train and merge on a read-only file system: LK_PERMISSION_DENIED (EROFS), not ENOENT', {
  skip: noMounts ?? false,
}, async () => {
  writeFileSync(join(tmp, 'text.txt'), readFileSync(join(root, 'test/fixtures/eval/shakespeare.txt')));
  const ro = join(tmp, 'ro');
  mkdirSync(join(ro, 'existing'), { recursive: true });
  const mounts = [{ readOnly: ro }];
  const adapter = join(root, 'test/fixtures/peft/llama_rslora');
  const runs = await Promise.all([
    inNamespace(mounts, [BIN, 'train', '--config', runYaml(join(ro, 'run'))]),
    inNamespace(mounts, [BIN, 'train', '--config', runYaml(join(ro, 'existing'))]),
    inNamespace(mounts, [BIN, 'merge', '--model', LLAMA, '--adapter', adapter, '--out', join(ro, 'merged')]),
  ]);
  for (const r of runs)
    oneLine(
      r,
      'LK_PERMISSION_DENIED',
      /cannot write .*ro.*: the file system is read-only \(EROFS\); choose a folder on/,
    );
});

test('a full disk while training or merging is LK_DISK_FULL naming the folder (a small tmpfs)', {
  skip: noMounts ?? false,
}, async () => {
  writeFileSync(join(tmp, 'text.txt'), readFileSync(join(root, 'test/fixtures/eval/shakespeare.txt')));
  // sizes that fill up at different writes: a checkpoint's tensors, and the first files of the run
  const disks = ['24k', '4k', 'merge'].map((d) => join(tmp, `disk-${d}`));
  for (const d of disks) mkdirSync(d);
  const adapter = join(root, 'test/fixtures/peft/llama_rslora');
  const runs = await Promise.all([
    inNamespace([{ tmpfs: disks[0], size: '24k' }], [BIN, 'train', '--config', runYaml(join(disks[0], 'run'))]),
    inNamespace([{ tmpfs: disks[1], size: '4k' }], [BIN, 'train', '--config', runYaml(join(disks[1], 'run'))]),
    inNamespace(
      [{ tmpfs: disks[2], size: '40k' }],
      [BIN, 'merge', '--model', LLAMA, '--adapter', adapter, '--out', join(disks[2], 'merged')],
    ),
  ]);
  runs.forEach((r, i) =>
    oneLine(r, 'LK_DISK_FULL', new RegExp(`cannot write .*${disks[i]}/.*: no space left on the device \\(ENOSPC\\)`)),
  );
});
