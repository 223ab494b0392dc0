// A minimal protobuf writer: just what ONNX's ModelProto needs. Large byte fields (weights) are kept as
// references until finish(), so a model is copied once.

export class ProtoWriter {
  private chunks: Uint8Array[] = [];
  private scratch: number[] = [];
  length = 0;

  private flush(): void {
    if (this.scratch.length) {
      this.chunks.push(Uint8Array.from(this.scratch));
      this.length += this.scratch.length;
      this.scratch = [];
    }
  }
  private rawVarint(n: number | bigint): void {
    if (typeof n === 'number' && n >= 0 && Number.isSafeInteger(n)) {
      while (n >= 128) {
        this.scratch.push((n % 128) | 128);
        n = Math.floor(n / 128);
      }
      this.scratch.push(n);
      return;
    }
    let b = BigInt.asUintN(64, BigInt(n)); // negatives as 64-bit two's complement (10 bytes)
    while (b >= 128n) {
      this.scratch.push(Number(b & 127n) | 128);
      b >>= 7n;
    }
    this.scratch.push(Number(b));
  }
  private tag(field: number, wire: number): void {
    this.rawVarint(field * 8 + wire);
  }
  private rawBytes(b: Uint8Array): void {
    this.rawVarint(b.length);
    if (b.length < 64) {
      for (const x of b) this.scratch.push(x);
      return;
    }
    this.flush();
    this.chunks.push(b);
    this.length += b.length;
  }

  /** int32/int64/enum/bool field. */
  int(field: number, n: number | bigint): this {
    this.tag(field, 0);
    this.rawVarint(n);
    return this;
  }
  float(field: number, f: number): this {
    this.tag(field, 5);
    const b = new Uint8Array(new Float32Array([f]).buffer);
    for (const x of b) this.scratch.push(x);
    return this;
  }
  string(field: number, s: string): this {
    this.tag(field, 2);
    // ASCII (every name the graph builder makes) goes straight to the scratch bytes: a step graph has ~100,000
    // strings, and a TextEncoder call each cost ~60 ms of SmolLM all-linear's 210 ms serialisation
    let ascii = true;
    for (let i = 0; i < s.length && ascii; i++) ascii = s.charCodeAt(i) < 128;
    if (!ascii) {
      this.rawBytes(new TextEncoder().encode(s));
      return this;
    }
    this.rawVarint(s.length);
    for (let i = 0; i < s.length; i++) this.scratch.push(s.charCodeAt(i));
    return this;
  }
  bytes(field: number, b: Uint8Array): this {
    this.tag(field, 2);
    this.rawBytes(b);
    return this;
  }
  /** Packed repeated int64. */
  ints(field: number, xs: readonly (number | bigint)[]): this {
    const w = new ProtoWriter();
    for (const x of xs) w.rawVarint(x);
    return this.message(field, w);
  }
  /** Packed repeated float. */
  floats(field: number, xs: readonly number[]): this {
    return this.bytes(field, new Uint8Array(new Float32Array(xs).buffer));
  }
  message(field: number, w: ProtoWriter): this {
    w.flush();
    this.tag(field, 2);
    this.rawVarint(w.length);
    this.flush();
    this.chunks.push(...w.chunks);
    this.length += w.length;
    return this;
  }
  finish(): Uint8Array {
    this.flush();
    const out = new Uint8Array(this.length);
    let o = 0;
    for (const c of this.chunks) {
      out.set(c, o);
      o += c.length;
    }
    return out;
  }
}
