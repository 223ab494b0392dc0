// The minimal PNG encoder: chunk layout and CRCs against known values, and the pixels read back through zlib.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { inflateSync } from 'node:zlib';
import { canvasGridPng, crc32, encodePngGray } from '../../src/cli/png.ts';

test('crc32 matches the PNG/zlib CRC-32 of known strings', () => {
  assert.equal(crc32(Buffer.from('IEND')), 0xae426082); // every PNG's last four bytes
  assert.equal(crc32(Buffer.from('123456789')), 0xcbf43926); // the CRC-32 check value
});

test('a 3×2 greyscale PNG: signature, IHDR fields, IDAT rows with filter byte 0, IEND', () => {
  const px = Uint8Array.from([0, 128, 255, 10, 20, 30]);
  const png = encodePngGray(px, 3, 2);
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  assert.equal(png.toString('ascii', 12, 16), 'IHDR');
  assert.equal(png.readUInt32BE(16), 3);
  assert.equal(png.readUInt32BE(20), 2);
  assert.deepEqual([...png.subarray(24, 29)], [8, 0, 0, 0, 0]);
  assert.equal(png.readUInt32BE(29), crc32(png.subarray(12, 29)));
  const idatLen = png.readUInt32BE(33);
  assert.equal(png.toString('ascii', 37, 41), 'IDAT');
  const raw = inflateSync(png.subarray(41, 41 + idatLen));
  assert.deepEqual([...raw], [0, 0, 128, 255, 0, 10, 20, 30]);
  assert.equal(png.toString('ascii', png.length - 8, png.length - 4), 'IEND');
});

test('the grid maps −1 → 0 and 1 → 255, enlarges pixels and separates images by a grey gutter', () => {
  const img = Float32Array.from([-1, 1, 1, -1]); // one 2×2 image
  const png = canvasGridPng([img], { height: 2, width: 2, scale: 2 });
  const W = 2 * 2 + 1 + 1;
  const raw = inflateSync(png.subarray(41, 41 + png.readUInt32BE(33)));
  const row = (y: number) => [...raw.subarray(y * (W + 1) + 1, (y + 1) * (W + 1))];
  assert.deepEqual(row(0), [128, 128, 128, 128, 128, 128]);
  assert.deepEqual(row(1), [128, 0, 0, 255, 255, 128]);
  assert.deepEqual(row(3), [128, 255, 255, 0, 0, 128]);
});
