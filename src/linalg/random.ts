// Seeded random numbers for initialisations: reproducible across runs and machines (not across PyTorch, whose
// streams cannot be reproduced in JS; adapters that depend on them store the tensors).

/** mulberry32's output for an (already advanced) 32-bit state: a uniform [0, 1) value. */
function mulberry32Mix(s: number): number {
  let t = s;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}

/** One mulberry32 step: the next 32-bit state and the uniform [0, 1) value it yields. */
export function mulberry32Step(state: number): [number, number] {
  const s = (state + 0x6d2b79f5) >>> 0;
  return [s, mulberry32Mix(s)];
}

/** A uniform [0, 1) generator (mulberry32) over a 32-bit state, as a closure. */
export function mulberry32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    let u: number;
    [s, u] = mulberry32Step(s);
    return u;
  };
}

/** A uniform [0, 1) generator (mulberry32) whose state can be saved and restored. */
export class Rng {
  constructor(public state: number) {
    this.state = state >>> 0;
  }
  next(): number {
    // the step without its tuple: adapter initialisation draws millions of these (SmolLM all-linear: 2.7 M)
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    return mulberry32Mix(this.state);
  }
  /** A standard normal draw (Box–Muller). */
  normal(): number {
    const u = 1 - this.next(),
      v = this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  /** n values from U(lo, hi). */
  uniformArray(n: number, lo: number, hi: number): Float32Array {
    const out = new Float32Array(n); // a loop, not Float32Array.from over an array-like: 3× faster
    for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * this.next();
    return out;
  }
  /** n values from N(mean, std²). */
  normalArray(n: number, std = 1, mean = 0): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = mean + std * this.normal();
    return out;
  }
  /** A permutation of 0..n−1 (Fisher–Yates from the last slot: swap i with ⌊next()·(i + 1)⌋). */
  permutation(n: number): Uint32Array {
    const p = Uint32Array.from({ length: n }, (_, i) => i);
    for (let i = n - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      [p[i], p[j]] = [p[j], p[i]];
    }
    return p;
  }
}

/** A stable 32-bit seed derived from a string (FNV-1a), so each adapter tensor gets its own stream. */
export function seedFrom(base: number, key: string): number {
  let h = 0x811c9dc5 ^ base;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** PyTorch's kaiming_uniform_(a=√5) bound for a weight with `fanIn` inputs: 1/√fanIn. */
export function kaimingUniformBound(fanIn: number, a = Math.sqrt(5)): number {
  const gain = Math.sqrt(2 / (1 + a * a));
  return gain * Math.sqrt(3 / fanIn);
}
