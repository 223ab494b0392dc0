import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { ERROR_CODES, LorakitError, respell } from '../src/errors.ts';

test('every error code is documented in docs/errors.md', () => {
  const doc = readFileSync(new URL('../docs/errors.md', import.meta.url), 'utf8');
  for (const code of Object.keys(ERROR_CODES))
    assert.ok(doc.includes(`\`${code}\``), `${code} missing from docs/errors.md`);
});

test('LorakitError carries its code', () => {
  const e = new LorakitError('LK_SHAPE_MISMATCH', 'x');
  assert.equal(e.code, 'LK_SHAPE_MISMATCH');
  assert.ok(e instanceof Error);
});

test('respell renames camelCase option names everywhere, and a one-word name only as the error option', () => {
  const flags = { maxNewTokens: '--max-new-tokens', seed: '--seed', model: '--model', topP: '--top-p' };
  const e = new LorakitError(
    'LK_INVALID_ARGUMENT',
    'maxNewTokens: the prompt plus maxNewTokens (99) exceeds the model positions; topP is fine',
    { option: 'maxNewTokens' },
  );
  const r = respell(e, flags);
  assert.equal(
    r.message,
    '--max-new-tokens: the prompt plus --max-new-tokens (99) exceeds the model positions; --top-p is fine',
  );
  assert.equal(r.code, 'LK_INVALID_ARGUMENT');
  assert.deepEqual(r.details, { option: '--max-new-tokens', libraryOption: 'maxNewTokens' });
  // "model" is English here, and not the error's option: it stays
  assert.match(r.message, /the model positions/);
  const seed = respell(
    new LorakitError('LK_INVALID_ARGUMENT', 'seed must be a safe integer, got 1.5', { option: 'seed' }),
    flags,
  );
  assert.equal(seed.message, '--seed must be a safe integer, got 1.5');
  // a shell's own message already spells its flag: nothing doubles
  const own = new LorakitError('LK_INVALID_ARGUMENT', '--model <dir> is required: a Hugging Face model folder', {
    option: 'model',
  });
  assert.equal(respell(own, flags).message, own.message);
  // dotted YAML keys, quoted names
  const yaml = { heldOut: 'data.held_out', seqLen: 'data.seq_len' };
  const held = new LorakitError('LK_INVALID_ARGUMENT', 'loadDataset: option "heldOut" 9 leaves no training example');
  assert.equal(respell(held, yaml).message, 'loadDataset: option "data.held_out" 9 leaves no training example');
  const other = new LorakitError('LK_FILE_INVALID', 'nothing to rename');
  assert.equal(respell(other, yaml), other);
});
