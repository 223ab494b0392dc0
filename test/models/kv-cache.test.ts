// The host KV cache of generate(): where appended keys/values land, the widened mask, the compact copy, and the
// compact path (taken when a sliding window could reach the unfilled positions) giving generate's usual tokens.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KvCache, newName, pastName } from '../../src/models/kv-cache.ts';
import { loadModel } from '../../src/models/index.ts';
import { generate } from '../../src/models/generate.ts';
import { HfTokenizer } from '../../src/io/tokenizer.ts';
import { shutdownRuntime } from '../../src/runtime/index.ts';

after(() => shutdownRuntime());

test(
  'append writes each row and head at the next free positions; the mask is widened with zeros; compact ' + 'copies',
  () => {
    const cache = new KvCache({ layers: 1, kvHeads: 2, headDim: 1 }, 2, 4, 'f32');
    const out = (T: number, base: number) =>
      Object.fromEntries(
        (['key', 'value'] as const).map((kv, j) => [
          newName(0, kv),
          {
            dtype: 'f32' as const,
            shape: [2, 2, T, 1],
            data: Float32Array.from({ length: 4 * T }, (_, i) => base + 100 * j + i),
          },
        ]),
      );
    cache.append(out(2, 1), 2); // [B=2, H=2, T=2, 1]: values 1…8
    cache.append(out(1, 20), 1); // values 20…23
    assert.deepEqual(
      Array.from(cache.feeds[pastName(0, 'key')].data),
      [1, 2, 20, 0, 3, 4, 21, 0, 5, 6, 22, 0, 7, 8, 23, 0],
    );
    assert.deepEqual(cache.feeds[pastName(0, 'value')].shape, [2, 2, 4, 1]);
    assert.deepEqual(
      Array.from(
        cache.paddedMask(
          [
            [0, 1, 1, 1],
            [1, 1, 1, 0],
          ],
          1,
        ),
        Number,
      ),
      [0, 1, 1, 0, 1, 1, 1, 1, 0, 0],
    );
    const c = cache.compact()[pastName(0, 'key')] as { data: Float32Array; shape: number[] };
    assert.deepEqual(c.shape, [2, 2, 3, 1]);
    assert.deepEqual(Array.from(c.data), [1, 2, 20, 3, 4, 21, 5, 6, 22, 7, 8, 23]);
  },
);

test(
  'a sliding window that could reach unfilled positions takes the compact path, with the same greedy ' + 'tokens',
  async () => {
    const src = 'test/fixtures/models/mistral';
    const e = JSON.parse(readFileSync(join(src, 'expected.json'), 'utf8'));
    const dir = mkdtempSync(join(tmpdir(), 'lk-window-'));
    cpSync(src, dir, { recursive: true });
    const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    // the window equals the cache capacity: it reaches unfilled positions but never hides a real token
    const window = e.greedy_prompt_ids.length + e.greedy_max_new_tokens;
    writeFileSync(
      join(dir, 'config.json'),
      JSON.stringify({ ...config, sliding_window: window, use_sliding_window: true }),
    );
    const [model, tokenizer] = await Promise.all([loadModel(dir), HfTokenizer.fromDir(dir)]);
    assert.equal((model.config as { sliding_window: number | null }).sliding_window, window);
    const r = await generate(model, tokenizer, {
      inputIds: e.greedy_prompt_ids,
      maxNewTokens: e.greedy_max_new_tokens,
    });
    assert.deepEqual(r.rows[0].tokenIds, e.greedy);
    await model.close();
  },
);
