/**
 * SHA-256 (FIPS 180-4), synchronous, for the browser host: lorakit keys its session and data caches by
 * `createHash('sha256')` inside synchronous code, and WebCrypto's digest is async only. Exposes the slice of
 * node:crypto's Hash that lorakit uses (update with bytes or UTF-8 text, digest as hex). Checked against
 * node:crypto on random inputs (test/io/host-browser.test.ts). Not here: Node (host.ts uses node:crypto).
 */

// The first 32 bits of the fractional parts of the cube roots of the first 64 primes (FIPS 180-4 §4.2.2).
const K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
  0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
  0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
  0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
  0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
  0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
  0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
  0xc67178f2,
]);

const rotr = (x: number, n: number) => (x >>> n) | (x << (32 - n));

/** An incremental SHA-256; `update` takes bytes or a string (hashed as UTF-8), `digest('hex')` ends it. */
export class Sha256 {
  private h = new Uint32Array([
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
  ]);
  private block = new Uint8Array(64);
  private fill = 0;
  private length = 0; // bytes hashed so far
  private w = new Uint32Array(64);

  /** Adds `data` to the hash. */
  update(data: Uint8Array | string): this {
    const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
    this.length += bytes.length;
    let i = 0;
    while (i < bytes.length) {
      const n = Math.min(64 - this.fill, bytes.length - i);
      this.block.set(bytes.subarray(i, i + n), this.fill);
      this.fill += n;
      i += n;
      if (this.fill === 64) {
        this.compress();
        this.fill = 0;
      }
    }
    return this;
  }

  /** The hash as 64 lowercase hex digits (the only encoding lorakit asks for). */
  digest(_encoding: 'hex'): string {
    const bits = this.length * 8;
    this.block[this.fill++] = 0x80;
    if (this.fill > 56) {
      this.block.fill(0, this.fill);
      this.compress();
      this.fill = 0;
    }
    this.block.fill(0, this.fill, 56);
    const v = new DataView(this.block.buffer);
    v.setUint32(56, Math.floor(bits / 2 ** 32));
    v.setUint32(60, bits >>> 0);
    this.compress();
    return [...this.h].map((x) => x.toString(16).padStart(8, '0')).join('');
  }

  private compress(): void {
    const w = this.w,
      v = new DataView(this.block.buffer);
    for (let t = 0; t < 16; t++) w[t] = v.getUint32(4 * t);
    for (let t = 16; t < 64; t++) {
      const s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >>> 3);
      const s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >>> 10);
      w[t] = (w[t - 16] + s0 + w[t - 7] + s1) >>> 0;
    }
    let [a, b, c, d, e, f, g, h] = this.h;
    for (let t = 0; t < 64; t++) {
      const t1 = (h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[t] + w[t]) >>> 0;
      const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) >>> 0;
      h = g;
      g = f;
      f = e;
      e = (d + t1) >>> 0;
      d = c;
      c = b;
      b = a;
      a = (t1 + t2) >>> 0;
    }
    const s = [a, b, c, d, e, f, g, h];
    for (let i = 0; i < 8; i++) this.h[i] = (this.h[i] + s[i]) >>> 0;
  }
}
