import { test } from 'node:test';
import assert from 'node:assert/strict';

test('the package entry exposes one namespace per layer', async () => {
  const lk = await import('../src/index.ts');
  for (const ns of ['graph', 'runtime', 'optim', 'io', 'linalg', 'nn', 'models', 'peft', 'train'])
    assert.equal(typeof (lk as Record<string, unknown>)[ns], 'object', ns);
  assert.equal(typeof lk.graph.Graph, 'function');
  assert.equal(typeof lk.peft.PeftModel, 'function');
});
