// numpy's default generator, bit for bit, for the index assignments PEFT draws with numpy and does not (by default)
// store: PEFT's Uni-LoRA regenerates every layer's indices from `proj_seed` with np.random.default_rng when it loads an
// adapter saved without them. default_rng(seed) is PCG64 (the 128-bit LCG with the XSL-RR output) seeded through
// SeedSequence's hash of the seed; Generator.choice(n, size, replace=False) and Generator.shuffle on an int64 array
// draw as numpy's _generator.pyx does (Floyd's algorithm or a tail shuffle, then Fisher–Yates with Lemire's bounded
// draws; shuffle with masked rejection), all on 32-bit draws that share PCG64's buffered half of a 64-bit output.
// Read from numpy's sources (bit_generator.pyx, _pcg64.pyx, pcg64.h, _generator.pyx, distributions.c); checked
// against numpy's own values (test/linalg/numpy-random.test.ts). Not here: torch's stream (torch-random.ts).

/** SeedSequence's hash constants (bit_generator.pyx). */
const INIT_A = 0x43b0d7e5;
const MULT_A = 0x931e8875;
const INIT_B = 0x8b51f9dd;
const MULT_B = 0x58f38ded;
const MIX_MULT_L = 0xca01f9dd;
const MIX_MULT_R = 0x4973f715;
const POOL_SIZE = 4;

/** PCG64's default 128-bit multiplier, 0x2360ed051fc65da44385df649fccf645, as 16-bit limbs, least significant first. */
const MULT = [0xf645, 0x9fcc, 0xdf64, 0x4385, 0x5da4, 0x1fc6, 0xed05, 0x2360];

/** SeedSequence(seed).generate_state(4, np.uint64) as 128-bit (seed, inc) BigInts, as PCG64.__init__ reads them. */
function seedSequenceState(seed: number): { state: bigint; inc: bigint } {
  // the entropy: the seed's 32-bit words, least significant first ([0] for 0)
  const entropy: number[] = [];
  for (let s = BigInt(seed); entropy.length === 0 || s > 0n; s >>= 32n) entropy.push(Number(s & 0xffffffffn));
  let hashConst = INIT_A;
  const hashmix = (value: number) => {
    value = (value ^ hashConst) >>> 0;
    hashConst = Math.imul(hashConst, MULT_A) >>> 0;
    value = Math.imul(value, hashConst) >>> 0;
    return (value ^ (value >>> 16)) >>> 0;
  };
  const mix = (x: number, y: number) => {
    const r = (Math.imul(MIX_MULT_L, x) - Math.imul(MIX_MULT_R, y)) >>> 0;
    return (r ^ (r >>> 16)) >>> 0;
  };
  const pool = Array.from({ length: POOL_SIZE }, (_, i) => hashmix(i < entropy.length ? entropy[i] : 0));
  for (let src = 0; src < POOL_SIZE; src++)
    for (let dst = 0; dst < POOL_SIZE; dst++) if (src !== dst) pool[dst] = mix(pool[dst], hashmix(pool[src]));
  for (let src = POOL_SIZE; src < entropy.length; src++)
    for (let dst = 0; dst < POOL_SIZE; dst++) pool[dst] = mix(pool[dst], hashmix(entropy[src]));
  // generate_state: 8 words cycling over the pool, read as four little-endian uint64
  let hb = INIT_B;
  const words = Array.from({ length: 8 }, (_, i) => {
    let v = (pool[i % POOL_SIZE] ^ hb) >>> 0;
    hb = Math.imul(hb, MULT_B) >>> 0;
    v = Math.imul(v, hb) >>> 0;
    return (v ^ (v >>> 16)) >>> 0;
  });
  const u64 = (i: number) => (BigInt(words[2 * i + 1]) << 32n) | BigInt(words[2 * i]);
  return { state: (u64(0) << 64n) | u64(1), inc: (u64(2) << 64n) | u64(3) };
}

/** numpy.random.default_rng(seed): PCG64 with its buffered 32-bit draws, and the Generator methods PEFT calls. */
export class NumpyGenerator {
  /** The 128-bit state and increment as 16-bit limbs, least significant first (exact in float64 arithmetic). */
  private readonly s = new Float64Array(8);
  private readonly inc = new Float64Array(8);
  private readonly next = new Float64Array(8); // step()'s scratch
  private buffered: number | null = null;

  /** As np.random.default_rng(seed) for a non-negative integer seed. */
  constructor(seed: number) {
    const { state, inc } = seedSequenceState(seed);
    const limbs = (x: bigint, out: Float64Array) => {
      for (let i = 0; i < 8; i++) out[i] = Number((x >> BigInt(16 * i)) & 0xffffn);
    };
    // pcg_setseq_128_srandom_r: state 0, inc = 2·initseq + 1, step, add the initial state, step
    limbs(((inc << 1n) | 1n) & ((1n << 128n) - 1n), this.inc);
    this.step();
    const st = new Float64Array(8);
    limbs(state, st);
    let carry = 0;
    for (let i = 0; i < 8; i++) {
      const t = this.s[i] + st[i] + carry;
      carry = t >= 65536 ? 1 : 0;
      this.s[i] = t - carry * 65536;
    }
    this.step();
  }

  /** state ← state·MULT + inc (mod 2^128), column by column: every partial sum stays below 2^36. */
  private step(): void {
    const [s, next] = [this.s, this.next];
    let carry = 0;
    for (let k = 0; k < 8; k++) {
      let acc = this.inc[k] + carry;
      for (let i = 0; i <= k; i++) acc += s[i] * MULT[k - i];
      carry = Math.floor(acc / 65536);
      next[k] = acc - carry * 65536;
    }
    s.set(next);
  }

  /** The next 64-bit output as [high, low] uint32 halves: XSL-RR of the stepped state. */
  private next64(): [number, number] {
    this.step();
    const s = this.s;
    const hi = ((s[7] * 65536 + s[6]) ^ (s[3] * 65536 + s[2])) >>> 0; // (state >> 64) ^ state, high word
    const lo = ((s[5] * 65536 + s[4]) ^ (s[1] * 65536 + s[0])) >>> 0;
    const rot = s[7] >>> 10; // the state's top 6 bits
    if (rot === 0) return [hi, lo];
    if (rot === 32) return [lo, hi];
    const [a, b, r] = rot < 32 ? [hi, lo, rot] : [lo, hi, rot - 32];
    return [((a >>> r) | (b << (32 - r))) >>> 0, ((b >>> r) | (a << (32 - r))) >>> 0];
  }

  /** pcg64_next32: the low half of a 64-bit output, then its high half. */
  nextUint32(): number {
    if (this.buffered !== null) {
      const v = this.buffered;
      this.buffered = null;
      return v;
    }
    const [hi, lo] = this.next64();
    this.buffered = hi;
    return lo;
  }

  /** random_bounded_uint64(0, rng) for rng < 2^32 − 1: Lemire's multiply-and-reject on 32-bit draws. */
  private bounded(rng: number): number {
    if (rng === 0) return 0;
    const excl = rng + 1;
    const threshold = (0xffffffff - rng) % excl;
    for (;;) {
      const u = this.nextUint32();
      const leftover = Math.imul(u, excl) >>> 0; // the low 32 bits of u·excl
      if (leftover >= excl || leftover >= threshold) {
        const hi = Math.floor(u / 65536) * excl; // u·excl's high 32 bits, from exact partial products
        const lo = (u % 65536) * excl;
        return Math.floor(hi / 65536) + Math.floor(((hi % 65536) * 65536 + lo) / 4294967296);
      }
    }
  }

  /** random_interval(max): masked rejection on 32-bit draws (max < 2^32). */
  private interval(max: number): number {
    if (max === 0) return 0;
    let mask = max;
    for (const sh of [1, 2, 4, 8, 16]) mask |= mask >>> sh;
    mask >>>= 0;
    for (;;) {
      const v = (this.nextUint32() & mask) >>> 0;
      if (v <= max) return v;
    }
  }

  /** Generator.choice(n, size, replace=False) (shuffle=True): `size` distinct values of [0, n) in numpy's order. */
  choiceWithoutReplacement(n: number, size: number): number[] {
    if (size > n || size < 0 || n >= 0xffffffff) throw new RangeError(`choice: cannot take ${size} of ${n}`);
    if (n > 10000 && size > Math.floor(n / 50)) {
      // tail shuffle: the last `size` slots of a partial Fisher–Yates over arange(n)
      const idx = Array.from({ length: n }, (_, i) => i);
      for (let i = n - 1; i >= Math.max(n - size, 1); i--) {
        const j = this.bounded(i);
        [idx[i], idx[j]] = [idx[j], idx[i]];
      }
      return idx.slice(n - size);
    }
    // Floyd's algorithm (numpy keeps the set in a hash table; membership is all that matters), then a shuffle
    const seen = new Set<number>();
    const out: number[] = [];
    for (let j = n - size; j < n; j++) {
      const v = this.bounded(j);
      const pick = seen.has(v) ? j : v;
      seen.add(pick);
      out.push(pick);
    }
    for (let i = size - 1; i >= 1; i--) {
      const j = this.bounded(i);
      [out[i], out[j]] = [out[j], out[i]];
    }
    return out;
  }

  /** Generator.shuffle(x) in place for a 1-D int64 array (here any array): Fisher–Yates with random_interval. */
  shuffle<T>(x: T[] | Int32Array | Float64Array): void {
    for (let i = x.length - 1; i >= 1; i--) {
      const j = this.interval(i);
      const t = x[i];
      x[i] = x[j];
      x[j] = t;
    }
  }
}
