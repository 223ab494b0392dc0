/**
 * A minimal PNG encoder (8-bit greyscale, no filtering, one IDAT compressed with node:zlib) and the sample-grid
 * layout `lorakit sample` and scripts/diffusion-compose.ts write. In cli/ because the library's host seam
 * (io/host.ts) does not offer zlib. PNG: the signature, IHDR, IDAT, IEND chunks, each with its CRC-32 (ISO 3309).
 * Not here: the sampling (serve/diffusion-compose.ts).
 */
import { deflateSync } from 'node:zlib';

const CRC_TABLE = Uint32Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

/** CRC-32 of bytes (the PNG/zlib polynomial). */
export function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Uint8Array): Buffer {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, 'ascii');
  out.set(data, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

/** A greyscale PNG of `pixels` [height, width] (0..255, row-major). */
export function encodePngGray(pixels: Uint8Array, width: number, height: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 0, 0, 0, 0], 8); // bit depth 8, colour type 0 (grey), deflate, no filter method, no interlace
  const raw = Buffer.alloc(height * (width + 1)); // each row: filter byte 0, then the row
  for (let y = 0; y < height; y++) raw.set(pixels.subarray(y * width, (y + 1) * width), y * (width + 1) + 1);
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return Buffer.concat([
    signature,
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw)),
    chunk('IEND', new Uint8Array()),
  ]);
}

/**
 * One PNG of sample rows: row r holds the images of rows[r] ([n, 1, height, width] in [−1, 1]) left to right, each
 * pixel enlarged `scale`× and a 1-pixel mid-grey gutter between images.
 */
export function canvasGridPng(
  rows: readonly Float32Array[],
  o: { height: number; width: number; scale?: number },
): Buffer {
  const s = o.scale ?? 4;
  const per = o.height * o.width;
  const cols = Math.max(...rows.map((r) => r.length / per));
  const [cw, ch] = [o.width * s + 1, o.height * s + 1];
  const [W, H] = [cols * cw + 1, rows.length * ch + 1];
  const px = new Uint8Array(W * H).fill(128);
  rows.forEach((row, r) => {
    for (let k = 0; k < row.length / per; k++)
      for (let y = 0; y < o.height * s; y++)
        for (let x = 0; x < o.width * s; x++) {
          const v = row[k * per + Math.floor(y / s) * o.width + Math.floor(x / s)];
          px[(r * ch + 1 + y) * W + k * cw + 1 + x] = Math.round(255 * Math.min(1, Math.max(0, (v + 1) / 2)));
        }
  });
  return encodePngGray(px, W, H);
}
