// openWeights: single-file and sharded model folders, and the errors for broken or missing ones.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openWeights, ShardedWeights } from '../../src/io/sharded.ts';
import { SafetensorsFile, writeSafetensors } from '../../src/io/safetensors.ts';
import type { TensorToWrite } from '../../src/io/safetensors.ts';
import { LorakitError } from '../../src/errors.ts';
import type { ErrorCode } from '../../src/errors.ts';

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'lorakit-shard-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function rejectsLk(p: Promise<unknown>, code: ErrorCode, ...parts: string[]): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof LorakitError, `expected a LorakitError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    for (const s of parts)
      assert.ok(e.message.includes(s), `message ${JSON.stringify(e.message)} lacks ${JSON.stringify(s)}`);
    return true;
  });
}

const SHARD1 = 'model-00001-of-00002.safetensors';
const SHARD2 = 'model-00002-of-00002.safetensors';
const shard1: Record<string, TensorToWrite> = {
  'embed.weight': { dtype: 'F32', shape: [2, 2], data: new Float32Array([1, 2, 3, 4]) },
  'layer.0.weight': { dtype: 'BF16', shape: [2], data: new Uint16Array([0x3f80, 0xc000]) },
};
const shard2: Record<string, TensorToWrite> = {
  'layer.1.weight': { dtype: 'F16', shape: [1], data: new Uint16Array([0x3c00]) },
  position_ids: { dtype: 'I64', shape: [3], data: new BigInt64Array([0n, 1n, 2n]) },
};

async function writeSharded(dir: string, map?: Record<string, string>): Promise<void> {
  await writeSafetensors(join(dir, SHARD1), shard1, { format: 'pt' });
  await writeSafetensors(join(dir, SHARD2), shard2, { format: 'pt' });
  const weightMap =
    map ??
    Object.fromEntries([
      ...Object.keys(shard1).map((k) => [k, SHARD1]),
      ...Object.keys(shard2).map((k) => [k, SHARD2]),
    ]);
  await writeFile(
    join(dir, 'model.safetensors.index.json'),
    JSON.stringify({ metadata: { total_size: 42 }, weight_map: weightMap }),
  );
}

test('a sharded folder reads every tensor through the index', async () => {
  await withDir(async (dir) => {
    await writeSharded(dir);
    const w = await openWeights(dir);
    try {
      assert.ok(w instanceof ShardedWeights);
      assert.deepEqual(w.names().sort(), ['embed.weight', 'layer.0.weight', 'layer.1.weight', 'position_ids']);
      assert.deepEqual(w.metadata, { format: 'pt' });
      assert.deepEqual(w.indexMetadata, { total_size: 42 });
      assert.equal(w.shardOf('position_ids'), join(dir, SHARD2));
      assert.deepEqual([...(await w.readAs('embed.weight', 'f32'))], [1, 2, 3, 4]);
      assert.deepEqual([...(await w.readAs('layer.0.weight', 'f32'))], [1, -2]);
      assert.deepEqual([...(await w.readAs('layer.1.weight', 'f32'))], [1]);
      assert.deepEqual([...(await w.readAs('position_ids', 'i64'))], [0n, 1n, 2n]);
      assert.equal(w.info('layer.1.weight').dtype, 'F16');
      assert.equal((await w.read('embed.weight')).length, 16);
      assert.ok(w.has('embed.weight') && !w.has('nope'));
      await rejectsLk(
        Promise.resolve().then(() => w.info('layer.2.weight')),
        'LK_INVALID_ARGUMENT',
        "'layer.2.weight'",
        'model.safetensors.index.json',
        'layer.',
      );
    } finally {
      await w.close();
    }
  });
});

test('a single model.safetensors is preferred, and a file path can be given directly', async () => {
  await withDir(async (dir) => {
    await writeSharded(dir);
    await writeSafetensors(join(dir, 'model.safetensors'), {
      only: { dtype: 'U8', shape: [1], data: new Uint8Array([5]) },
    });
    const w = await openWeights(dir);
    assert.ok(w instanceof SafetensorsFile);
    assert.deepEqual(w.names(), ['only']);
    await w.close();
    const direct = await openWeights(join(dir, 'model.safetensors.index.json'));
    assert.ok(direct instanceof ShardedWeights);
    await direct.close();
    const one = await openWeights(join(dir, SHARD2));
    assert.deepEqual(one.names().sort(), ['layer.1.weight', 'position_ids']);
    await one.close();
  });
});

test('the stem option opens other weight names, such as adapter_model', async () => {
  await withDir(async (dir) => {
    await writeSafetensors(join(dir, 'adapter_model.safetensors'), {
      a: { dtype: 'U8', shape: [1], data: new Uint8Array([1]) },
    });
    const w = await openWeights(dir, { stem: 'adapter_model' });
    assert.deepEqual(w.names(), ['a']);
    await w.close();
  });
});

test('a folder without weights names the folder, the expected files and what is there', async () => {
  await withDir(async (dir) => {
    await writeFile(join(dir, 'config.json'), '{}');
    await writeFile(join(dir, 'pytorch_model.bin'), '');
    await rejectsLk(
      openWeights(dir),
      'LK_FILE_NOT_FOUND',
      dir,
      'model.safetensors',
      'model.safetensors.index.json',
      'config.json, pytorch_model.bin',
    );
    await rejectsLk(openWeights(join(dir, 'missing')), 'LK_FILE_NOT_FOUND', join(dir, 'missing'));
  });
});

test('a missing shard names the shard, the index and a tensor that needs it', async () => {
  await withDir(async (dir) => {
    await writeSharded(dir);
    await unlink(join(dir, SHARD2));
    await rejectsLk(openWeights(dir), 'LK_FILE_NOT_FOUND', SHARD2, 'model.safetensors.index.json', "'layer.1.weight'");
  });
});

test('a tensor missing from its shard is LK_FILE_INVALID naming both', async () => {
  await withDir(async (dir) => {
    await writeSharded(dir, { 'embed.weight': SHARD1, 'layer.1.weight': SHARD1 });
    await rejectsLk(openWeights(dir), 'LK_FILE_INVALID', "'layer.1.weight'", SHARD1, 'no such tensor');
  });
});

test('a malformed index is LK_FILE_INVALID', async () => {
  await withDir(async (dir) => {
    const index = join(dir, 'model.safetensors.index.json');
    await writeFile(index, '{"weight_map": ');
    await rejectsLk(openWeights(dir), 'LK_FILE_INVALID', index, 'JSON');
    await writeFile(index, '{"metadata": {}}');
    await rejectsLk(openWeights(dir), 'LK_FILE_INVALID', 'weight_map', 'found nothing');
    await writeFile(index, JSON.stringify({ weight_map: { a: 3 } }));
    await rejectsLk(openWeights(dir), 'LK_FILE_INVALID', "weight_map['a']", 'found 3');
    await writeFile(index, JSON.stringify({ weight_map: { a: '../elsewhere.safetensors' } }));
    await rejectsLk(openWeights(dir), 'LK_FILE_INVALID', "weight_map['a']", 'same folder');
  });
});

test('a corrupt shard reports the shard file', async () => {
  await withDir(async (dir) => {
    await writeSharded(dir);
    await writeFile(join(dir, SHARD1), new Uint8Array(4));
    await rejectsLk(openWeights(dir), 'LK_FILE_INVALID', SHARD1);
  });
});
