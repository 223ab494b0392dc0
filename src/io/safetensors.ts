/**
 * The safetensors format (huggingface/safetensors): a strict header parser, a file reader that reads only the header
 * and then one tensor at a time with positional reads, an in-memory reader, and a writer whose layout matches the
 * reference (header padded to 8 bytes, tensors ordered by alignment). It knows nothing about models or adapters; see
 * sharded.ts for model folders. Layout: u64 LE header length N, N bytes of UTF-8 JSON, then the data buffer.
 */
import { open, type FileHandle } from './host.ts';
import { LorakitError, internal } from '../errors.ts';
import { type AtomicWriteOptions, writeFileAtomic } from './atomic.ts';
import { fsError, isSystemError } from './fs-error.ts';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from './half.ts';

/** Element types lorakit reads and writes (the F8_*, F6_*, F4 and complex types of newer files are refused). */
export type SafetensorsDType =
  | 'F64'
  | 'F32'
  | 'F16'
  | 'BF16'
  | 'I64'
  | 'I32'
  | 'I16'
  | 'I8'
  | 'U8'
  | 'U16'
  | 'U32'
  | 'U64'
  | 'BOOL';

/** Bytes per element of each supported dtype. */
export const DTYPE_BYTES: Readonly<Record<SafetensorsDType, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  U16: 2,
  U32: 4,
  U64: 8,
  BOOL: 1,
};

/** One tensor's entry in a header; `dataOffset` is the absolute byte offset in the file. */
export interface TensorInfo {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  dataOffset: number;
  byteLength: number;
}

/** A parsed header: tensors in header order, `__metadata__`, and where the data buffer starts (8 + N). */
export interface SafetensorsHeader {
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string>;
  dataStart: number;
}

/** Element types readAs can return. */
export type ReadType =
  | 'f64'
  | 'f32'
  | 'f16'
  | 'bf16'
  | 'i64'
  | 'i32'
  | 'i16'
  | 'i8'
  | 'u64'
  | 'u32'
  | 'u16'
  | 'u8'
  | 'bool';

/** The typed array readAs returns for each ReadType (f16 and bf16 are bit patterns; bool is 0/1 bytes). */
export interface ReadTypeMap {
  f64: Float64Array;
  f32: Float32Array;
  f16: Uint16Array;
  bf16: Uint16Array;
  i64: BigInt64Array;
  i32: Int32Array;
  i16: Int16Array;
  i8: Int8Array;
  u64: BigUint64Array;
  u32: Uint32Array;
  u16: Uint16Array;
  u8: Uint8Array;
  bool: Uint8Array;
}

/** The read API shared by SafetensorsFile and the sharded reader of sharded.ts. */
export interface WeightsReader {
  /** `__metadata__` of the file (of the first shard for a sharded folder). */
  readonly metadata: Record<string, string>;
  names(): string[];
  has(name: string): boolean;
  info(name: string): TensorInfo;
  read(name: string): Promise<Uint8Array>;
  readAs<T extends ReadType>(name: string, type: T): Promise<ReadTypeMap[T]>;
  close(): Promise<void>;
}

/** The reference implementation's limit on the header length. */
export const MAX_HEADER_BYTES = 100_000_000;

// Names that newer safetensors versions define; they get a clearer "not supported" than a made-up name.
const KNOWN_UNSUPPORTED = new Set([
  'F8_E4M3',
  'F8_E5M2',
  'F8_E8M0',
  'F8_E4M3FNUZ',
  'F8_E5M2FNUZ',
  'F6_E2M3',
  'F6_E3M2',
  'F4',
  'C64',
  'C128',
]);

// Typed arrays share the platform's byte order and the format is little-endian; every platform Node ships on is LE.
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function invalid(file: string, what: string): LorakitError {
  return new LorakitError('LK_FILE_INVALID', `${file}: ${what}`, { file });
}

function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isDim(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** True if `name` is a dtype lorakit supports. */
export function isSupportedDType(name: string): name is SafetensorsDType {
  return Object.hasOwn(DTYPE_BYTES, name);
}

function checkDType(dtype: string, file: string, tensor: string): SafetensorsDType {
  if (isSupportedDType(dtype)) return dtype;
  const kind = KNOWN_UNSUPPORTED.has(dtype) ? 'dtype' : 'unknown dtype';
  throw new LorakitError(
    'LK_UNSUPPORTED',
    `${file}: tensor '${tensor}' has ${kind} ${describe(dtype)}, which lorakit does not read; supported: ` +
      `${Object.keys(DTYPE_BYTES).join(', ')}`,
    { file, tensor, dtype },
  );
}

/** Number of elements of `shape`, or -1 if it exceeds `limit` (so huge dims cannot overflow). */
function elementCount(shape: readonly number[], limit: number): number {
  if (shape.some((d) => d === 0)) return 0;
  let n = 1;
  for (const d of shape) {
    n *= d;
    if (n > limit) return -1;
  }
  return n;
}

/**
 * Reads the header length N from the first 8 bytes and checks it against the file size and the 100 MB limit.
 * Returns N; the header is then bytes [8, 8 + N).
 */
export function readHeaderLength(bytes: Uint8Array, fileSize: number, fileName: string): number {
  if (fileSize < 8 || bytes.length < 8) {
    throw invalid(fileName, `expected at least 8 bytes (the header length), found a file of ${fileSize} bytes`);
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, 8);
  const lo = dv.getUint32(0, true);
  const hi = dv.getUint32(4, true);
  const n = hi * 2 ** 32 + lo; // not exact above 2^53, but then it is far beyond both limits anyway
  if (n > MAX_HEADER_BYTES) {
    throw invalid(
      fileName,
      `header length is ${hi === 0 ? n : `${hi}·2^32 + ${lo}`} bytes; expected at most ${MAX_HEADER_BYTES}`,
    );
  }
  if (n > fileSize - 8) {
    throw invalid(
      fileName,
      `header length ${n} runs past the end of the file (expected at most ${fileSize - 8} for a file of ${fileSize} ` +
        `bytes)`,
    );
  }
  return n;
}

/**
 * Parses and validates a safetensors header. `bytes` holds at least the first 8 + N bytes of a file of `fileSize`
 * bytes. Validation follows the reference: UTF-8 JSON object, well-typed entries, supported dtypes, byte length =
 * dtype size × elements, and the tensors tile the data buffer exactly (no overlap, no hole, no trailing bytes).
 */
export function parseHeader(bytes: Uint8Array, fileSize: number, fileName: string): SafetensorsHeader {
  const n = readHeaderLength(bytes, fileSize, fileName);
  if (bytes.length < 8 + n) {
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `parseHeader(${fileName}): expected the first ${8 + n} bytes of the file, got ${bytes.length}`,
    );
  }
  let text: string;
  try {
    // ignoreBOM keeps a BOM in the text, so JSON.parse refuses it as the reference (serde_json) does.
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes.subarray(8, 8 + n));
  } catch {
    throw invalid(fileName, `header (bytes 8..${8 + n}) is not valid UTF-8`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw invalid(fileName, `header is not valid JSON (${(e as Error).message})`);
  }
  if (!isPlainObject(json)) throw invalid(fileName, `expected the header to be a JSON object, found ${describe(json)}`);

  const dataStart = 8 + n;
  const bufferBytes = fileSize - dataStart;
  let metadata: Record<string, string> = {};
  const tensors = new Map<string, TensorInfo>();
  const spans: Array<{ name: string; begin: number; end: number }> = [];

  for (const [name, entry] of Object.entries(json)) {
    if (name === '__metadata__') {
      if (entry === null) continue; // the reference reads null as "no metadata"
      if (!isPlainObject(entry))
        throw invalid(fileName, `expected __metadata__ to be an object of strings, found ${describe(entry)}`);
      for (const [k, v] of Object.entries(entry)) {
        if (typeof v !== 'string')
          throw invalid(fileName, `expected __metadata__['${k}'] to be a string, found ${describe(v)}`);
      }
      metadata = Object.fromEntries(Object.entries(entry)) as Record<string, string>;
      continue;
    }
    const where = `tensor '${name}'`;
    if (!isPlainObject(entry))
      throw invalid(fileName, `${where}: expected an object {dtype, shape, data_offsets}, found ${describe(entry)}`);
    const { dtype, shape, data_offsets: offsets } = entry;
    if (typeof dtype !== 'string')
      throw invalid(fileName, `${where}: expected dtype to be a string, found ${describe(dtype)}`);
    if (!Array.isArray(shape) || !shape.every(isDim)) {
      throw invalid(
        fileName,
        `${where}: expected shape to be an array of non-negative integers, found ${describe(shape)}`,
      );
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isDim)) {
      throw invalid(
        fileName,
        `${where}: expected data_offsets to be [begin, end] with non-negative integers, found ${describe(offsets)}`,
      );
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end) throw invalid(fileName, `${where}: expected data_offsets begin <= end, found [${begin}, ${end}]`);
    if (end > bufferBytes) {
      throw invalid(
        fileName,
        `${where}: data_offsets [${begin}, ${end}] run past the end of the data buffer (${bufferBytes} bytes)`,
      );
    }
    const dt = checkDType(dtype, fileName, name);
    const count = elementCount(shape, bufferBytes);
    const expected = count < 0 ? -1 : count * DTYPE_BYTES[dt];
    if (expected !== end - begin) {
      throw invalid(
        fileName,
        `${where}: ${dt} of shape [${shape.join(', ')}] needs ` +
          `${expected < 0 ? 'more bytes than the file has' : `${expected} bytes`}, ` +
          `found data_offsets [${begin}, ${end}] (${end - begin} bytes)`,
      );
    }
    tensors.set(name, { name, dtype: dt, shape: [...shape], dataOffset: dataStart + begin, byteLength: end - begin });
    spans.push({ name, begin, end });
  }

  // The tensors must tile [0, bufferBytes) exactly; sorting by (begin, end) puts empty tensors before a neighbour
  // starting at the same offset, as the reference does.
  spans.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let pos = 0;
  for (const s of spans) {
    if (s.begin < pos)
      throw invalid(
        fileName,
        `tensor '${s.name}': data_offsets [${s.begin}, ${s.end}] overlap the previous tensor, which ends at ${pos}`,
      );
    if (s.begin > pos)
      throw invalid(
        fileName,
        `tensor '${s.name}': data_offsets start at ${s.begin}, expected ${pos} (bytes ${pos}..${s.begin} belong to ` +
          `no tensor)`,
      );
    pos = s.end;
  }
  if (pos !== bufferBytes) {
    throw invalid(
      fileName,
      `the tensors cover ${pos} bytes of the data buffer, expected all ${bufferBytes} (trailing bytes after the ` +
        `last tensor)`,
    );
  }
  return { tensors, metadata, dataStart };
}

// ---------------------------------------------------------------------------------------------------------------
// Conversions shared by the readers.

const FLOATS = new Set<SafetensorsDType>(['F64', 'F32', 'F16', 'BF16']);
// Integer sources each target holds exactly (widening only; BOOL is 0/1).
const INT_SOURCES: Partial<Record<ReadType, SafetensorsDType[]>> = {
  i64: ['I64', 'I32', 'I16', 'I8', 'U32', 'U16', 'U8', 'BOOL'],
  u64: ['U64', 'U32', 'U16', 'U8', 'BOOL'],
  i32: ['I32', 'I16', 'I8', 'U16', 'U8', 'BOOL'],
  u32: ['U32', 'U16', 'U8', 'BOOL'],
  i16: ['I16', 'I8', 'U8', 'BOOL'],
  u16: ['U16', 'U8', 'BOOL'],
  i8: ['I8', 'BOOL'],
  u8: ['U8', 'BOOL'],
  bool: ['BOOL'],
  // Integers convert to floats only where every value is exact.
  f64: ['I32', 'I16', 'I8', 'U32', 'U16', 'U8', 'BOOL'],
  f32: ['I16', 'I8', 'U16', 'U8', 'BOOL'],
};

/** Whether readAs(…, `type`) accepts a tensor of `dtype`: floats to any float type (rounding), exact integer widening.
 * */
export function canReadAs(dtype: SafetensorsDType, type: ReadType): boolean {
  if (FLOATS.has(dtype) && (type === 'f64' || type === 'f32' || type === 'f16' || type === 'bf16')) return true;
  return INT_SOURCES[type]?.includes(dtype) ?? false;
}

type AnyTyped =
  | Float64Array
  | Float32Array
  | BigInt64Array
  | BigUint64Array
  | Int32Array
  | Uint32Array
  | Int16Array
  | Uint16Array
  | Int8Array
  | Uint8Array;

// A typed view of raw bytes as `dtype` (F16/BF16 as bit patterns); copies when the bytes are not aligned.
function view(bytes: Uint8Array, dtype: SafetensorsDType): AnyTyped {
  const size = DTYPE_BYTES[dtype];
  const b = bytes.byteOffset % size === 0 ? bytes : bytes.slice();
  const n = b.byteLength / size;
  switch (dtype) {
    case 'F64':
      return new Float64Array(b.buffer, b.byteOffset, n);
    case 'F32':
      return new Float32Array(b.buffer, b.byteOffset, n);
    case 'F16':
    case 'BF16':
    case 'U16':
      return new Uint16Array(b.buffer, b.byteOffset, n);
    case 'I64':
      return new BigInt64Array(b.buffer, b.byteOffset, n);
    case 'U64':
      return new BigUint64Array(b.buffer, b.byteOffset, n);
    case 'I32':
      return new Int32Array(b.buffer, b.byteOffset, n);
    case 'U32':
      return new Uint32Array(b.buffer, b.byteOffset, n);
    case 'I16':
      return new Int16Array(b.buffer, b.byteOffset, n);
    case 'I8':
      return new Int8Array(b.buffer, b.byteOffset, n);
    case 'U8':
    case 'BOOL':
      return new Uint8Array(b.buffer, b.byteOffset, n);
  }
}

const READ_CTORS = {
  f64: Float64Array,
  f32: Float32Array,
  f16: Uint16Array,
  bf16: Uint16Array,
  i64: BigInt64Array,
  i32: Int32Array,
  i16: Int16Array,
  i8: Int8Array,
  u64: BigUint64Array,
  u32: Uint32Array,
  u16: Uint16Array,
  u8: Uint8Array,
  bool: Uint8Array,
} as const;

// The dtype whose raw bytes already are the requested type.
const NATIVE: Record<ReadType, SafetensorsDType> = {
  f64: 'F64',
  f32: 'F32',
  f16: 'F16',
  bf16: 'BF16',
  i64: 'I64',
  i32: 'I32',
  i16: 'I16',
  i8: 'I8',
  u64: 'U64',
  u32: 'U32',
  u16: 'U16',
  u8: 'U8',
  bool: 'BOOL',
};

function toF32(src: AnyTyped, dtype: SafetensorsDType): Float32Array {
  if (dtype === 'F16') return f16ToF32(src as Uint16Array);
  if (dtype === 'BF16') return bf16ToF32(src as Uint16Array);
  const out = new Float32Array(src.length);
  out.set(src as Float64Array); // TypedArray#set converts (and rounds F64) element by element
  return out;
}

/** Throws unless readAs(…, `type`) accepts `info`'s dtype: LK_INVALID_ARGUMENT for an unknown type, else
 * LK_DTYPE_MISMATCH. */
export function checkReadAs(info: TensorInfo, type: ReadType, fileName: string): void {
  if (!Object.hasOwn(READ_CTORS, type)) {
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `readAs('${info.name}'): expected a type among ${Object.keys(READ_CTORS).join(', ')}, found ${describe(type)}`,
    );
  }
  if (!canReadAs(info.dtype, type)) {
    const ok = (Object.keys(READ_CTORS) as ReadType[]).filter((t) => canReadAs(info.dtype, t));
    throw new LorakitError(
      'LK_DTYPE_MISMATCH',
      `${fileName}: tensor '${info.name}' is ${info.dtype}, which does not convert to '${type}' without loss; read ` +
        `it as one of ${ok.join(', ')}`,
      { file: fileName, tensor: info.name, dtype: info.dtype, type },
    );
  }
}

/**
 * Converts a tensor's raw little-endian bytes to the typed array of `type` (see canReadAs for what converts).
 * The result may share memory with `bytes` when no conversion is needed and the bytes are aligned.
 */
export function decodeTensor<T extends ReadType>(
  bytes: Uint8Array,
  info: TensorInfo,
  type: T,
  fileName: string,
): ReadTypeMap[T] {
  if (!LITTLE_ENDIAN)
    throw new LorakitError(
      'LK_UNSUPPORTED',
      `${fileName}: safetensors data is little-endian and this platform is big-endian`,
    );
  checkReadAs(info, type, fileName);
  const { dtype } = info;
  if (bytes.length !== info.byteLength)
    internal(`decodeTensor('${info.name}'): got ${bytes.length} bytes, header says ${info.byteLength}`);
  const src = view(bytes, dtype);
  if (NATIVE[type] === dtype) return src as ReadTypeMap[T];
  let out: AnyTyped;
  if (type === 'f32') out = toF32(src, dtype);
  else if (type === 'f64') {
    const f = dtype === 'F16' || dtype === 'BF16' ? toF32(src, dtype) : src;
    out = new Float64Array(f.length);
    out.set(f as Float32Array);
  } else if (type === 'f16')
    out = f32ToF16(toF32(src, dtype)); // F64 rounds twice here (via f32); off by one ulp at worst
  else if (type === 'bf16') out = f32ToBf16(toF32(src, dtype));
  else if (type === 'i64' || type === 'u64') {
    // TypedArray#set refuses to mix number and bigint arrays, hence the loop.
    const o = new READ_CTORS[type](src.length);
    for (let i = 0; i < src.length; i++) o[i] = BigInt(src[i] as number);
    out = o;
  } else {
    const o = new READ_CTORS[type](src.length) as Int32Array;
    o.set(src as Uint8Array);
    out = o;
  }
  return out as ReadTypeMap[T];
}

/** The LK_INVALID_ARGUMENT error for a name that is not in a file, listing the closest few names that are. */
export function unknownTensorError(name: string, available: readonly string[], where: string): LorakitError {
  const prefixLen = (s: string): number => {
    let i = 0;
    while (i < s.length && i < name.length && s[i] === name[i]) i++;
    return i;
  };
  const near = [...available].sort((a, b) => prefixLen(b) - prefixLen(a) || (a < b ? -1 : a > b ? 1 : 0)).slice(0, 5);
  const list =
    near.length === 0
      ? 'it has no tensors'
      : `it has ${available.length} tensors, e.g. ${near.map((s) => `'${s}'`).join(', ')}`;
  return new LorakitError('LK_INVALID_ARGUMENT', `tensor '${name}' is not in ${where}; ${list}`, {
    tensor: name,
    file: where,
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Readers.

// Positional reads move at most ~2 GiB per call, so big tensors are read in slices.
const MAX_READ = 1 << 30;

async function readExactly(
  fh: FileHandle,
  position: number,
  length: number,
  fileName: string,
  what: string,
): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(out, done, Math.min(length - done, MAX_READ), position + done);
    if (bytesRead === 0) {
      throw invalid(
        fileName,
        `${what}: expected ${length} bytes at offset ${position}, the file ended after ${done} (was it truncated ` +
          `after opening?)`,
      );
    }
    done += bytesRead;
  }
  return out;
}

/** The header part shared by the file and buffer readers: metadata, names and entries. */
abstract class HeaderView {
  /** `__metadata__` of the file ({} if absent). */
  readonly metadata: Record<string, string>;
  /** Byte offset of the data buffer (8 + header length). */
  readonly dataStart: number;
  protected readonly tensors: Map<string, TensorInfo>;

  protected constructor(
    protected readonly source: string,
    header: SafetensorsHeader,
  ) {
    this.tensors = header.tensors;
    this.metadata = header.metadata;
    this.dataStart = header.dataStart;
  }

  /** Tensor names in header order. */
  names(): string[] {
    return [...this.tensors.keys()];
  }

  /** Whether the file holds a tensor called `name`. */
  has(name: string): boolean {
    return this.tensors.has(name);
  }

  /** The header entry of `name`; an unknown name throws LK_INVALID_ARGUMENT listing similar names. */
  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw unknownTensorError(name, this.names(), this.source);
    return t;
  }
}

/** A safetensors file on disk: open() reads and validates only the header; each read() is one positional read. */
export class SafetensorsFile extends HeaderView implements WeightsReader {
  private fh: FileHandle | undefined;

  private constructor(
    readonly path: string,
    fh: FileHandle,
    header: SafetensorsHeader,
  ) {
    super(path, header);
    this.fh = fh;
  }

  /** Opens `path` and parses its header; throws LK_FILE_NOT_FOUND, LK_FILE_INVALID or LK_UNSUPPORTED. */
  static async open(path: string): Promise<SafetensorsFile> {
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT')
        throw new LorakitError('LK_FILE_NOT_FOUND', `safetensors file ${path} does not exist`, { file: path });
      throw isSystemError(e) ? fsError(e, 'read', path) : e;
    }
    try {
      const st = await fh.stat();
      if (!st.isFile())
        throw new LorakitError(
          'LK_INVALID_ARGUMENT',
          `${path}: expected a safetensors file, found a folder or special file`,
          { file: path },
        );
      const size = st.size;
      const first = await readExactly(fh, 0, Math.min(8, size), path, 'header length');
      const n = readHeaderLength(first, size, path);
      const head = new Uint8Array(8 + n);
      head.set(first);
      head.set(await readExactly(fh, 8, n, path, 'header'), 8);
      return new SafetensorsFile(path, fh, parseHeader(head, size, path));
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  /** The raw little-endian bytes of `name`, in a fresh buffer of their own (so typed views are aligned). */
  async read(name: string): Promise<Uint8Array> {
    const t = this.info(name);
    if (!this.fh)
      throw new LorakitError('LK_INVALID_ARGUMENT', `${this.path}: read('${name}') after close()`, { file: this.path });
    return readExactly(this.fh, t.dataOffset, t.byteLength, this.path, `tensor '${name}'`);
  }

  /** `name` as a typed array of `type`, converting f16/bf16/f64 to f32 and the like (see canReadAs). */
  async readAs<T extends ReadType>(name: string, type: T): Promise<ReadTypeMap[T]> {
    const t = this.info(name);
    checkReadAs(t, type, this.path); // before reading, so a refused conversion costs no I/O
    return decodeTensor(await this.read(name), t, type, this.path);
  }

  /** Closes the file; later reads throw. Closing twice is harmless. */
  async close(): Promise<void> {
    const fh = this.fh;
    this.fh = undefined;
    await fh?.close();
  }
}

/** A safetensors file held in memory (browser, tests): the same read API, synchronous; reads are views of the bytes. */
export class SafetensorsBuffer extends HeaderView {
  private constructor(
    readonly bytes: Uint8Array,
    readonly fileName: string,
    header: SafetensorsHeader,
  ) {
    super(fileName, header);
  }

  /** Parses the header of `bytes`; `fileName` is only used in error messages. */
  static from(bytes: Uint8Array, fileName = '<memory>'): SafetensorsBuffer {
    return new SafetensorsBuffer(bytes, fileName, parseHeader(bytes, bytes.length, fileName));
  }

  /** The raw bytes of `name`: a view into the buffer, not a copy. */
  read(name: string): Uint8Array {
    const t = this.info(name);
    return this.bytes.subarray(t.dataOffset, t.dataOffset + t.byteLength);
  }

  /** `name` as a typed array of `type` (see canReadAs); may be a view into the buffer when no conversion is needed. */
  readAs<T extends ReadType>(name: string, type: T): ReadTypeMap[T] {
    return decodeTensor(this.read(name), this.info(name), type, this.fileName);
  }

  /** Nothing to release; kept so code can treat both readers alike. */
  close(): void {}
}

// ---------------------------------------------------------------------------------------------------------------
// Writer.

/** Typed arrays accepted as tensor data; a Uint8Array is taken as raw little-endian bytes of any dtype. */
export type TensorData =
  | Float64Array
  | Float32Array
  | Uint16Array
  | BigInt64Array
  | BigUint64Array
  | Int32Array
  | Uint32Array
  | Int16Array
  | Int8Array
  | Uint8Array;

/** One tensor to write. */
export interface TensorToWrite {
  dtype: SafetensorsDType;
  shape: readonly number[];
  data: TensorData;
}

/** Tensors to write: a list of named tensors, or a record from name to tensor. */
export type TensorsToWrite = ReadonlyArray<TensorToWrite & { name: string }> | Readonly<Record<string, TensorToWrite>>;

// The typed array that holds each dtype's values natively.
const DATA_CTOR: Record<SafetensorsDType, { name: string }> = {
  F64: Float64Array,
  F32: Float32Array,
  F16: Uint16Array,
  BF16: Uint16Array,
  I64: BigInt64Array,
  U64: BigUint64Array,
  I32: Int32Array,
  U32: Uint32Array,
  I16: Int16Array,
  U16: Uint16Array,
  I8: Int8Array,
  U8: Uint8Array,
  BOOL: Uint8Array,
};

// The reference writer's order (its Dtype enum, descending): element size never increases along it, so every tensor
// starts at a multiple of its element size, and the same tensors give the same bytes as Python's save_file.
const LAYOUT_RANK: Record<SafetensorsDType, number> = {
  U64: 0,
  I64: 1,
  F64: 2,
  F32: 3,
  U32: 4,
  I32: 5,
  BF16: 6,
  F16: 7,
  U16: 8,
  I16: 9,
  I8: 10,
  U8: 11,
  BOOL: 12,
};

function bad(what: string): LorakitError {
  return new LorakitError('LK_INVALID_ARGUMENT', `encodeSafetensors: ${what}`);
}

/**
 * Lays out a file: the 8-byte length + padded header, and the tensors' bytes in file order (views, not copies).
 * Order: the reference's dtype order (element size descending), then name, so views of the file are aligned.
 */
export function planSafetensors(
  tensors: TensorsToWrite,
  metadata?: Record<string, string>,
): { header: Uint8Array; chunks: Uint8Array[]; byteLength: number } {
  const list: Array<TensorToWrite & { name: string }> = Array.isArray(tensors)
    ? [...(tensors as ReadonlyArray<TensorToWrite & { name: string }>)]
    : Object.entries(tensors as Record<string, TensorToWrite>).map(([name, t]) => ({ ...t, name }));
  const seen = new Set<string>();
  for (const t of list) {
    const where = `tensor '${t.name}'`;
    if (typeof t.name !== 'string') throw bad(`expected each tensor name to be a string, found ${describe(t.name)}`);
    if (t.name === '__metadata__') throw bad(`'__metadata__' is reserved for metadata and cannot name a tensor`);
    if (seen.has(t.name)) throw bad(`tensor name '${t.name}' appears twice`);
    seen.add(t.name);
    if (typeof t.dtype !== 'string' || !isSupportedDType(t.dtype)) {
      throw new LorakitError(
        'LK_UNSUPPORTED',
        `encodeSafetensors: ${where} has dtype ${describe(t.dtype)}; supported: ${Object.keys(DTYPE_BYTES).join(', ')}`,
      );
    }
    if (!Array.isArray(t.shape) || !t.shape.every(isDim))
      throw bad(`${where}: expected shape to be an array of non-negative integers, found ${describe(t.shape)}`);
    const d = t.data;
    if (!ArrayBuffer.isView(d) || d instanceof DataView)
      throw bad(`${where}: expected data to be a typed array, found ${describe(d)}`);
    const native = DATA_CTOR[t.dtype];
    if (!(d instanceof Uint8Array) && d.constructor !== native) {
      throw new LorakitError(
        'LK_DTYPE_MISMATCH',
        `encodeSafetensors: ${where} is ${t.dtype}, expected data as ${native.name} (or raw bytes as Uint8Array), ` +
          `found ${d.constructor.name}`,
      );
    }
    const count = elementCount(t.shape, Number.MAX_SAFE_INTEGER);
    const expected = count < 0 ? -1 : count * DTYPE_BYTES[t.dtype];
    if (expected !== d.byteLength) {
      throw new LorakitError(
        'LK_SHAPE_MISMATCH',
        `encodeSafetensors: ${where}: ${t.dtype} of shape [${t.shape.join(', ')}] needs ` +
          `${expected < 0 ? 'too many' : expected} bytes, found data of ${d.byteLength} bytes`,
      );
    }
    if (t.dtype === 'BOOL') {
      const b = new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
      const i = b.findIndex((v) => v > 1);
      if (i >= 0) throw bad(`${where}: BOOL values must be 0 or 1, found ${b[i]} at element ${i}`);
    }
  }
  if (metadata !== undefined) {
    if (!isPlainObject(metadata))
      throw bad(`expected metadata to be an object of strings, found ${describe(metadata)}`);
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw bad(`expected metadata['${k}'] to be a string, found ${describe(v)}`);
    }
  }

  // Names compare as UTF-8 bytes, as Rust strings do (UTF-16 order differs once surrogate pairs appear).
  const enc = new TextEncoder();
  const keys = new Map(list.map((t) => [t, enc.encode(t.name)]));
  const byBytes = (a: Uint8Array, b: Uint8Array): number => {
    for (let i = 0; i < a.length && i < b.length; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
    return a.length - b.length;
  };
  list.sort((a, b) => LAYOUT_RANK[a.dtype] - LAYOUT_RANK[b.dtype] || byBytes(keys.get(a)!, keys.get(b)!));
  // Object.fromEntries makes plain data properties, so even a tensor named '__proto__' reaches the JSON.
  const entries: Array<[string, unknown]> = [];
  if (metadata !== undefined) entries.push(['__metadata__', metadata]);
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const t of list) {
    const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    entries.push([t.name, { dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, offset + bytes.length] }]);
    offset += bytes.length;
    if (bytes.length > 0) chunks.push(bytes);
  }
  const json = new TextEncoder().encode(JSON.stringify(Object.fromEntries(entries)));
  const n = Math.ceil(json.length / 8) * 8; // pad so the data buffer starts 8-aligned
  const header = new Uint8Array(8 + n).fill(0x20, 8);
  new DataView(header.buffer).setBigUint64(0, BigInt(n), true);
  header.set(json, 8);
  return { header, chunks, byteLength: header.length + offset };
}

/** Encodes tensors (+ optional `__metadata__`) as one safetensors file in memory. */
export function encodeSafetensors(tensors: TensorsToWrite, metadata?: Record<string, string>): Uint8Array {
  const { header, chunks, byteLength } = planSafetensors(tensors, metadata);
  const out = new Uint8Array(byteLength);
  out.set(header);
  let pos = header.length;
  for (const c of chunks) {
    out.set(c, pos);
    pos += c.length;
  }
  return out;
}

/** Writes a safetensors file atomically (`options` as writeFileAtomic's), streaming the tensors' bytes without
 * concatenating them. */
export async function writeSafetensors(
  path: string,
  tensors: TensorsToWrite,
  metadata?: Record<string, string>,
  options: AtomicWriteOptions = {},
): Promise<void> {
  const { header, chunks } = planSafetensors(tensors, metadata);
  await writeFileAtomic(path, [header, ...chunks], options);
}
