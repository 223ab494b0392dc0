// The lorakit cache root: $LORAKIT_CACHE, else the platform's cache folder; every cache lives under it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { lorakitCacheDir, lorakitCacheRoot } from '../../src/io/index.ts';
import { defaultDatasetCache } from '../../src/train/data/index.ts';

test('the root is $LORAKIT_CACHE, else XDG_CACHE_HOME or ~/.cache (Unix), ~/Library/Caches (macOS), LOCALAPPDATA', () => {
  const home = '/home/u';
  const root = (env: Record<string, string>, platform: NodeJS.Platform = 'linux') =>
    lorakitCacheRoot({ env, platform, home });
  assert.equal(root({ LORAKIT_CACHE: '/c', XDG_CACHE_HOME: '/x' }), '/c');
  assert.equal(root({ XDG_CACHE_HOME: '/x' }), '/x/lorakit');
  assert.equal(root({ XDG_CACHE_HOME: 'relative' }), '/home/u/.cache/lorakit'); // the XDG spec ignores it
  assert.equal(root({}), '/home/u/.cache/lorakit');
  assert.equal(root({}, 'freebsd'), '/home/u/.cache/lorakit');
  assert.equal(root({ XDG_CACHE_HOME: '/x' }, 'darwin'), join(home, 'Library', 'Caches', 'lorakit'));
  assert.equal(
    root({ LOCALAPPDATA: 'C:/Users/u/AppData/Local' }, 'win32'),
    join('C:/Users/u/AppData/Local', 'lorakit', 'Cache'),
  );
  assert.equal(lorakitCacheDir('sessions', { env: { LORAKIT_CACHE: '/c' } }), join('/c', 'sessions'));
});

test('the dataset cache and the session cache share the root', () => {
  const saved = process.env.LORAKIT_CACHE;
  process.env.LORAKIT_CACHE = '/tmp/lk-root';
  try {
    assert.equal(defaultDatasetCache(), join('/tmp/lk-root', 'datasets'));
    assert.equal(lorakitCacheDir('sessions'), join('/tmp/lk-root', 'sessions'));
  } finally {
    if (saved === undefined) delete process.env.LORAKIT_CACHE;
    else process.env.LORAKIT_CACHE = saved;
  }
});
