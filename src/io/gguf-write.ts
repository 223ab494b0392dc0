/**
 * Writing GGUF version 3 files: the header, metadata key/values of any value type (arrays included), tensor infos
 * and the tensors' bytes, each tensor at a multiple of the alignment (general.alignment when given, else 32), as
 * llama.cpp and gguf-py lay them out. Tensors arrive already encoded (gguf-quants.ts quantizes). Not here: reading
 * (gguf.ts), what goes into an adapter or model file (peft/gguf-export.ts).
 */
import { LorakitError } from '../errors.ts';
import { writeFileAtomic } from './atomic.ts';
import { GGUF_VALUE_TYPES, type GgufKv, type GgufScalar, type GgufValueType } from './gguf.ts';
import { type GgmlType, ggmlByteLength } from './gguf-quants.ts';

/** One tensor to write: ggml dims (`dims[0]` fastest, the reverse of the row-major shape) and its encoded bytes. */
export interface GgufTensorToWrite {
  name: string;
  type: GgmlType;
  dims: number[];
  data: Uint8Array;
}

/** A little-endian byte builder for the header. */
class Bytes {
  private parts: Uint8Array[] = [];
  length = 0;
  private readonly enc = new TextEncoder();
  push(b: Uint8Array): void {
    this.parts.push(b);
    this.length += b.length;
  }
  num(type: GgufValueType, v: number | bigint | boolean): void {
    const size = { u8: 1, i8: 1, bool: 1, u16: 2, i16: 2, u32: 4, i32: 4, f32: 4 }[type as string] ?? 8;
    const b = new Uint8Array(size);
    const dv = new DataView(b.buffer);
    const n = typeof v === 'boolean' ? Number(v) : v;
    switch (type) {
      case 'u8':
      case 'bool':
        dv.setUint8(0, Number(n));
        break;
      case 'i8':
        dv.setInt8(0, Number(n));
        break;
      case 'u16':
        dv.setUint16(0, Number(n), true);
        break;
      case 'i16':
        dv.setInt16(0, Number(n), true);
        break;
      case 'u32':
        dv.setUint32(0, Number(n), true);
        break;
      case 'i32':
        dv.setInt32(0, Number(n), true);
        break;
      case 'f32':
        dv.setFloat32(0, Number(n), true);
        break;
      case 'f64':
        dv.setFloat64(0, Number(n), true);
        break;
      case 'u64':
        dv.setBigUint64(0, BigInt(n), true);
        break;
      case 'i64':
        dv.setBigInt64(0, BigInt(n), true);
        break;
      default:
        throw new Error(`internal: ${type} is not a number type`);
    }
    this.push(b);
  }
  str(s: string): void {
    const b = this.enc.encode(s);
    this.num('u64', BigInt(b.length));
    this.push(b);
  }
  scalar(type: GgufValueType, v: GgufScalar, key: string): void {
    if (type === 'string') {
      if (typeof v !== 'string') throw bad(key, 'a string', v);
      this.str(v);
    } else if (type === 'bool') {
      if (typeof v !== 'boolean') throw bad(key, 'a boolean', v);
      this.num(type, v);
    } else {
      if (typeof v !== 'number' && typeof v !== 'bigint') throw bad(key, 'a number', v);
      this.num(type, v);
    }
  }
  concat(): Uint8Array {
    const out = new Uint8Array(this.length);
    let p = 0;
    for (const b of this.parts) {
      out.set(b, p);
      p += b.length;
    }
    return out;
  }
}

function bad(key: string, expected: string, found: unknown): LorakitError {
  return new LorakitError(
    'LK_INVALID_ARGUMENT',
    `encodeGguf: metadata "${key}": expected ${expected}, found ${JSON.stringify(String(found))}`,
  );
}

/**
 * A GGUF v3 file as byte chunks (header, then each tensor's bytes with alignment padding between). Metadata keeps
 * the given order; tensors are laid out in the given order.
 */
export function encodeGguf(metadata: ReadonlyMap<string, GgufKv>, tensors: readonly GgufTensorToWrite[]): Uint8Array[] {
  const align = metadata.get('general.alignment');
  const alignment = typeof align?.value === 'number' ? align.value : 32;
  const h = new Bytes();
  h.num('u32', 0x46554747); // "GGUF"
  h.num('u32', 3);
  h.num('u64', BigInt(tensors.length));
  h.num('u64', BigInt(metadata.size));
  for (const [key, kv] of metadata) {
    h.str(key);
    h.num('u32', GGUF_VALUE_TYPES.indexOf(kv.type));
    if (kv.type !== 'array') {
      if (Array.isArray(kv.value)) throw bad(key, `a ${kv.type}`, 'an array');
      h.scalar(kv.type, kv.value, key);
      continue;
    }
    if (!Array.isArray(kv.value) || kv.itemType === undefined || kv.itemType === 'array')
      throw bad(key, 'an array with a scalar itemType', kv.value);
    h.num('u32', GGUF_VALUE_TYPES.indexOf(kv.itemType));
    h.num('u64', BigInt(kv.value.length));
    for (const v of kv.value) h.scalar(kv.itemType, v, key);
  }
  let offset = 0;
  const pad = (n: number) => (alignment - (n % alignment)) % alignment;
  for (const t of tensors) {
    const count = t.dims.reduce((a, b) => a * b, 1);
    if (t.data.length !== ggmlByteLength(t.type, count))
      throw new LorakitError(
        'LK_INVALID_ARGUMENT',
        `encodeGguf: tensor "${t.name}": ${count} values of ${t.type.name} take ${ggmlByteLength(t.type, count)} ` +
          `bytes, found ${t.data.length}`,
      );
    h.str(t.name);
    h.num('u32', t.dims.length);
    for (const d of t.dims) h.num('u64', BigInt(d));
    h.num('u32', t.type.id);
    h.num('u64', BigInt(offset));
    offset += t.data.length + pad(t.data.length);
  }
  h.push(new Uint8Array(pad(h.length)));
  const chunks = [h.concat()];
  for (const t of tensors) {
    chunks.push(t.data);
    if (pad(t.data.length)) chunks.push(new Uint8Array(pad(t.data.length)));
  }
  return chunks;
}

/** Writes a GGUF file atomically (see `encodeGguf`). */
export async function writeGguf(
  path: string,
  metadata: ReadonlyMap<string, GgufKv>,
  tensors: readonly GgufTensorToWrite[],
): Promise<void> {
  await writeFileAtomic(path, encodeGguf(metadata, tensors));
}
