// PyTorch's CPU random generator, bit for bit, for the initialisations PEFT draws from a seeded torch.Generator and
// does not (reliably) store: VeRA's shared projections are regenerated from `projection_prng_key` by every released
// PEFT when an adapter is loaded, whatever the file holds. torch.Generator(device="cpu").manual_seed(seed) is a
// 32-bit Mersenne Twister (MT19937) seeded with the low 32 bits of the seed, and `uniform_` on a float32 tensor
// takes one 32-bit draw per element, in memory order (ATen's cpu_serial_kernel with uniform_real_distribution).
// bfloat16 `uniform_` (RandLoRA's shared bases) draws one 32-bit value per element too, keeping 8 bits.
// Not here: lorakit's own generator (random.ts), torch's normal_ (its vectorised path consumes draws differently).

const N = 624;
const M = 397;

/** torch.Generator(device="cpu") after manual_seed(seed): an MT19937 stream of uint32 draws. */
export class TorchGenerator {
  private readonly mt = new Uint32Array(N);
  private index = N;

  /** Seeds as Generator.manual_seed: the seed as a uint64 (two's complement for negative seeds), its low 32 bits. */
  constructor(seed: number | bigint) {
    this.mt[0] = Number(BigInt.asUintN(32, BigInt(seed)));
    for (let i = 1; i < N; i++) {
      const prev = this.mt[i - 1] ^ (this.mt[i - 1] >>> 30);
      this.mt[i] = (Math.imul(1812433253, prev) + i) >>> 0; // mod 2^32
    }
  }

  /** The next uint32 of the stream (std::mt19937's tempered output). */
  nextUint32(): number {
    if (this.index >= N) this.twist();
    let y = this.mt[this.index++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    return (y ^ (y >>> 18)) >>> 0;
  }

  private twist(): void {
    const mt = this.mt;
    for (let i = 0; i < N; i++) {
      const y = (mt[i] & 0x80000000) | (mt[(i + 1) % N] & 0x7fffffff);
      mt[i] = mt[(i + M) % N] ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
    }
    this.index = 0;
  }

  /**
   * n values of torch.empty(n).uniform_(lo, hi, generator=g) in float32: x = (u & (2^24 − 1))·2^-24 from one draw
   * u, then x·(hi − lo) + lo with hi − lo in float32 and the product and sum in float64, rounded once to float32
   * (ATen's CPU uniform_real; rounding the product to float32 first differs in the last bit for some values).
   */
  uniformFloat32(n: number, lo: number, hi: number): Float32Array {
    const from = Math.fround(lo);
    const range = Math.fround(Math.fround(hi) - from);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const x = (this.nextUint32() & 0xffffff) / 16777216; // exact in float32
      out[i] = Math.fround(x * range + from);
    }
    return out;
  }

  /**
   * n draws of torch.bernoulli(torch.full((n,), p)) on float32 (ATen's serial CPU kernel for a tensor of
   * probabilities): element i is kept (1) when x < p, x = (u & (2^24 − 1))·2^-24 from one 32-bit draw u, p rounded to
   * float32; draws go in memory order. (`bernoulli_(p)` with a scalar p takes another path, MKL's where built in.)
   */
  bernoulliFloat32(n: number, p: number): Uint8Array {
    const pf = Math.fround(p);
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = (this.nextUint32() & 0xffffff) / 16777216 < pf ? 1 : 0;
    return out;
  }

  /** Advances the stream by n draws (what `uniform_` on n float32 values consumes, e.g. kaiming_uniform_). */
  skip(n: number): void {
    for (let i = 0; i < n; i++) this.nextUint32();
  }

  /**
   * n values of torch.empty(n, dtype=torch.bfloat16).uniform_(lo, hi, generator=g), as float32: x = (u & 255)/256
   * from one 32-bit draw (bfloat16 keeps 8 significant bits), lo and hi rounded to bfloat16 (through float32, as
   * c10's conversion from double), x·(hi − lo) + lo in float32 (exact here), rounded to bfloat16 to nearest-even.
   */
  uniformBfloat16(n: number, lo: number, hi: number): Float32Array {
    const from = roundBf16(lo);
    const range = roundBf16(roundBf16(hi) - from);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = ((this.nextUint32() & 0xff) / 256) * range + from;
    return roundBf16Array(out);
  }
}

/** `x` rounded to the nearest bfloat16 (ties to even), through float32 as c10 converts. */
export function roundBf16(x: number): number {
  return roundBf16Array(Float32Array.of(x))[0];
}

/** Rounds every float32 of `a` to the nearest bfloat16 in place (ties to even; no NaN expected) and returns it. */
export function roundBf16Array(a: Float32Array): Float32Array {
  const bits = new Uint32Array(a.buffer, a.byteOffset, a.length);
  for (let i = 0; i < bits.length; i++) {
    const u = bits[i];
    bits[i] = (u + 0x7fff + ((u >>> 16) & 1)) & 0xffff0000;
  }
  return a;
}
