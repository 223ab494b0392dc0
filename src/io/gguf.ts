/**
 * GGUF files (llama.cpp's model and adapter format), versions 2 and 3: the header (magic, version, counts), the
 * metadata key/values of every value type (arrays included), the tensor infos, the alignment (general.alignment,
 * default 32) and the data offset; reading a tensor's raw bytes or its values as float32 (gguf-quants.ts); and
 * encoding a GGUF file from metadata and tensors. Every check names the file, the field and what was expected.
 * Not here: what a tensor means to a model (gguf-model.ts), the block formats (gguf-quants.ts).
 */
import { type FileHandle, open } from './host.ts';
import { LorakitError } from '../errors.ts';
import { fsError, isSystemError } from './fs-error.ts';
import { GGML_TYPES, type GgmlType, dequantize, ggmlByteLength } from './gguf-quants.ts';

/** GGUF metadata value types, by their ids in the file. */
export const GGUF_VALUE_TYPES = [
  'u8',
  'i8',
  'u16',
  'i16',
  'u32',
  'i32',
  'f32',
  'bool',
  'string',
  'array',
  'u64',
  'i64',
  'f64',
] as const;
/** One GGUF metadata value type. */
export type GgufValueType = (typeof GGUF_VALUE_TYPES)[number];

/** A scalar metadata value: 64-bit integers beyond 2^53 stay bigints, all other numbers are numbers. */
export type GgufScalar = number | bigint | boolean | string;

/** One metadata entry: its type, and for arrays the element type; `value` is a scalar or an array of scalars. */
export interface GgufKv {
  type: GgufValueType;
  itemType?: GgufValueType;
  value: GgufScalar | GgufScalar[];
}

/** One tensor info: ggml dims (`dims[0]` fastest), the row-major shape (dims reversed), type and absolute offset. */
export interface GgufTensorInfo {
  name: string;
  dims: number[];
  shape: number[];
  type: GgmlType;
  /** Absolute byte offset of the tensor's data in the file. */
  offset: number;
  byteLength: number;
  /** Number of values. */
  count: number;
}

/** A parsed GGUF header. */
export interface GgufHeader {
  version: number;
  metadata: Map<string, GgufKv>;
  tensors: Map<string, GgufTensorInfo>;
  alignment: number;
  /** Absolute offset where tensor data starts (a multiple of `alignment`). */
  dataOffset: number;
}

const MAGIC = 0x46554747; // "GGUF" read as a little-endian uint32

/** Thrown inside the parser when the bytes end early: the caller reads more of the file and tries again. */
class NeedMore extends Error {}

/** A little-endian cursor over the header bytes that names the field it reads in errors. */
class Cursor {
  pos = 0;
  private readonly dv: DataView;
  private readonly decoder = new TextDecoder('utf-8', { fatal: true });
  constructor(
    private readonly bytes: Uint8Array,
    private readonly file: string,
    private readonly complete: boolean,
  ) {
    this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  private need(n: number, field: string): void {
    if (this.pos + n <= this.bytes.length) return;
    if (!this.complete) throw new NeedMore();
    throw invalid(this.file, field, `${n} more bytes`, `the file ends at byte ${this.bytes.length}`);
  }
  u32(field: string): number {
    this.need(4, field);
    const v = this.dv.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }
  u64(field: string): bigint {
    this.need(8, field);
    const v = this.dv.getBigUint64(this.pos, true);
    this.pos += 8;
    return v;
  }
  /** A uint64 count or size that must fit a JS number and be at most `max`. */
  count(field: string, max: number): number {
    const v = this.u64(field);
    if (v > BigInt(max)) throw invalid(this.file, field, `at most ${max}`, String(v));
    return Number(v);
  }
  string(field: string): string {
    const n = this.count(`${field} (string length)`, this.bytes.length);
    this.need(n, field);
    try {
      const s = this.decoder.decode(this.bytes.subarray(this.pos, this.pos + n));
      this.pos += n;
      return s;
    } catch {
      throw invalid(this.file, field, 'UTF-8 text', 'invalid UTF-8 bytes');
    }
  }
  scalar(type: GgufValueType, field: string): GgufScalar {
    const sizes: Record<string, number> = { u8: 1, i8: 1, u16: 2, i16: 2, u32: 4, i32: 4, f32: 4, bool: 1 };
    if (type === 'string') return this.string(field);
    const size = sizes[type] ?? 8;
    this.need(size, field);
    const p = this.pos;
    this.pos += size;
    const dv = this.dv;
    switch (type) {
      case 'u8':
        return dv.getUint8(p);
      case 'i8':
        return dv.getInt8(p);
      case 'u16':
        return dv.getUint16(p, true);
      case 'i16':
        return dv.getInt16(p, true);
      case 'u32':
        return dv.getUint32(p, true);
      case 'i32':
        return dv.getInt32(p, true);
      case 'f32':
        return dv.getFloat32(p, true);
      case 'f64':
        return dv.getFloat64(p, true);
      case 'bool': {
        const b = dv.getUint8(p);
        if (b > 1) throw invalid(this.file, field, 'a bool (0 or 1)', String(b));
        return b === 1;
      }
      default: {
        const v = type === 'u64' ? dv.getBigUint64(p, true) : dv.getBigInt64(p, true);
        return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
      }
    }
  }
}

/** LK_FILE_INVALID naming the file, the field, what was expected and what was found. */
function invalid(file: string, field: string, expected: string, found: string): LorakitError {
  return new LorakitError('LK_FILE_INVALID', `${file}: ${field}: expected ${expected}, found ${found}`, {
    file,
    field,
  });
}

function valueType(c: Cursor, field: string, file: string): GgufValueType {
  const id = c.u32(`${field} (value type)`);
  const t = GGUF_VALUE_TYPES[id];
  if (t === undefined) throw invalid(file, `${field} (value type)`, `a GGUF value type 0..12`, String(id));
  return t;
}

/** Parses a GGUF header from the first bytes of a file (`complete`: `bytes` is the whole file). */
function parse(bytes: Uint8Array, file: string, fileSize: number, complete: boolean): GgufHeader {
  const c = new Cursor(bytes, file, complete);
  const magic = c.u32('magic');
  if (magic !== MAGIC) {
    const shown = [...bytes.subarray(0, 4)].map((b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : '.')).join('');
    throw invalid(file, 'magic', 'a GGUF file (bytes "GGUF")', `"${shown}"`);
  }
  const version = c.u32('version');
  if (version !== 2 && version !== 3)
    throw new LorakitError(
      'LK_UNSUPPORTED',
      `${file}: version: expected GGUF version 2 or 3, found ${version}` +
        `${version === 1 ? ' (version 1 files predate 64-bit counts; convert them again with llama.cpp)' : ''}`,
      { file, field: 'version' },
    );
  const tensorCount = c.count('tensor_count', fileSize);
  const kvCount = c.count('metadata_kv_count', fileSize);
  const metadata = new Map<string, GgufKv>();
  for (let i = 0; i < kvCount; i++) {
    const key = c.string(`metadata key ${i}`);
    const type = valueType(c, `metadata "${key}"`, file);
    if (type !== 'array') {
      metadata.set(key, { type, value: c.scalar(type, `metadata "${key}"`) });
      continue;
    }
    const itemType = valueType(c, `metadata "${key}" (array)`, file);
    if (itemType === 'array')
      throw new LorakitError('LK_UNSUPPORTED', `${file}: metadata "${key}": nested arrays are not supported`, {
        file,
        field: key,
      });
    const n = c.count(`metadata "${key}" (array length)`, fileSize);
    const value: GgufScalar[] = new Array(n);
    for (let j = 0; j < n; j++) value[j] = c.scalar(itemType, `metadata "${key}"[${j}]`);
    metadata.set(key, { type, itemType, value });
  }
  const align = metadata.get('general.alignment');
  let alignment = 32;
  if (align !== undefined) {
    const v = align.value;
    if (align.type !== 'u32' || typeof v !== 'number' || v === 0 || (v & (v - 1)) !== 0)
      throw invalid(file, 'metadata "general.alignment"', 'a u32 power of two', `${align.type} ${String(v)}`);
    alignment = v;
  }
  const infos: Omit<GgufTensorInfo, 'offset'>[] = [];
  const relOffsets: number[] = [];
  for (let i = 0; i < tensorCount; i++) {
    const name = c.string(`tensor info ${i} name`);
    const field = `tensor "${name}"`;
    const nDims = c.u32(`${field} n_dims`);
    if (nDims < 1 || nDims > 4) throw invalid(file, `${field} n_dims`, '1 to 4 dimensions', String(nDims));
    const dims: number[] = [];
    for (let d = 0; d < nDims; d++) dims.push(c.count(`${field} dims[${d}]`, fileSize * 256));
    const typeId = c.u32(`${field} type`);
    const type = GGML_TYPES.get(typeId);
    if (type === undefined)
      throw new LorakitError(
        'LK_UNSUPPORTED',
        `${file}: ${field} type: ggml type id ${typeId} is not one lorakit knows ` +
          `(${[...GGML_TYPES.values()].map((t) => `${t.id} ${t.name}`).join(', ')})`,
        { file, field },
      );
    const count = dims.reduce((a, b) => a * b, 1);
    if (dims[0]! % type.blockSize !== 0)
      throw invalid(
        file,
        `${field} dims[0]`,
        `a multiple of ${type.name}'s block size ${type.blockSize}`,
        String(dims[0]),
      );
    const rel = c.count(`${field} offset`, fileSize);
    if (rel % alignment !== 0)
      throw invalid(file, `${field} offset`, `a multiple of the alignment ${alignment}`, String(rel));
    if (infos.some((t) => t.name === name))
      throw invalid(file, `tensor info ${i} name`, 'a name used once', `"${name}" twice`);
    infos.push({ name, dims, shape: [...dims].reverse(), type, byteLength: ggmlByteLength(type, count), count });
    relOffsets.push(rel);
  }
  const dataOffset = Math.ceil(c.pos / alignment) * alignment;
  const tensors = new Map<string, GgufTensorInfo>();
  infos.forEach((t, i) => {
    const offset = dataOffset + relOffsets[i]!;
    if (offset + t.byteLength > fileSize)
      throw invalid(
        file,
        `tensor "${t.name}" data`,
        `${t.byteLength} bytes at offset ${offset}`,
        `a file of ${fileSize} bytes (truncated?)`,
      );
    tensors.set(t.name, { ...t, offset });
  });
  return { version, metadata, tensors, alignment, dataOffset };
}

/** Parses a GGUF held in memory (tests, small adapters). */
export function parseGguf(bytes: Uint8Array, file = '(in memory)'): GgufHeader {
  return parse(bytes, file, bytes.length, true);
}

/** A GGUF file on disk: open() reads and checks the header only; each tensor read is one positional read. */
export class GgufFile {
  private fh: FileHandle | undefined;
  private constructor(
    readonly path: string,
    fh: FileHandle,
    readonly header: GgufHeader,
  ) {
    this.fh = fh;
  }

  /** Opens `path` and parses its header (reading more of the file while the header runs past what was read). */
  static async open(path: string): Promise<GgufFile> {
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (e) {
      if (isSystemError(e) && e.code === 'ENOENT')
        throw new LorakitError('LK_FILE_NOT_FOUND', `GGUF file ${path} does not exist`, { file: path });
      throw isSystemError(e) ? fsError(e, 'read', path) : e;
    }
    try {
      const st = await fh.stat();
      if (!st.isFile())
        throw new LorakitError('LK_FILE_NOT_FOUND', `${path}: expected a GGUF file, found a folder`, { file: path });
      for (let n = Math.min(st.size, 1 << 20); ; n = Math.min(st.size, n * 4)) {
        const buf = new Uint8Array(n);
        const { bytesRead } = await fh.read(buf, 0, n, 0);
        try {
          return new GgufFile(path, fh, parse(buf.subarray(0, bytesRead), path, st.size, n >= st.size));
        } catch (e) {
          if (!(e instanceof NeedMore)) throw e;
        }
      }
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  /** Metadata value of `key`, or undefined. */
  get(key: string): GgufKv['value'] | undefined {
    return this.header.metadata.get(key)?.value;
  }

  /** Tensor names in file order. */
  names(): string[] {
    return [...this.header.tensors.keys()];
  }

  /** The info of tensor `name`; an unknown name throws LK_INVALID_ARGUMENT. */
  info(name: string): GgufTensorInfo {
    const t = this.header.tensors.get(name);
    if (!t)
      throw new LorakitError('LK_INVALID_ARGUMENT', `${this.path} has no tensor "${name}"`, {
        file: this.path,
        tensor: name,
      });
    return t;
  }

  /** The stored bytes of tensor `name` (blocks as the file holds them). */
  async raw(name: string): Promise<Uint8Array> {
    const t = this.info(name);
    if (!this.fh)
      throw new LorakitError('LK_INVALID_ARGUMENT', `${this.path}: read after close()`, { file: this.path });
    const buf = new Uint8Array(t.byteLength);
    const { bytesRead } = await this.fh.read(buf, 0, t.byteLength, t.offset);
    if (bytesRead !== t.byteLength)
      throw invalid(this.path, `tensor "${name}" data`, `${t.byteLength} bytes`, `${bytesRead} (file changed?)`);
    return buf;
  }

  /** Tensor `name` dequantized to float32, in row-major order of `info(name).shape`. */
  async read(name: string): Promise<Float32Array> {
    const t = this.info(name);
    return dequantize(t.type, await this.raw(name), t.count);
  }

  /** Closes the file; closing twice is harmless. */
  async close(): Promise<void> {
    const fh = this.fh;
    this.fh = undefined;
    await fh?.close();
  }
}
