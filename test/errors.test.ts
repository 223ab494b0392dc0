import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { ERROR_CODES, LorakitError } from '../src/errors.ts';

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
