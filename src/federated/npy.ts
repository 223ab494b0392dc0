/**
 * NumPy .npy files (format 1.0) for the arrays Flower carries: Flower's `Array.from_numpy_ndarray` stores
 * `np.save(buf, a, allow_pickle=False)` bytes, so a tensor crosses the wire as exactly the file NumPy would write.
 * float32 ('<f4'), float16 ('<f2') and bfloat16 are supported. NumPy has no bfloat16 of its own: ml_dtypes'
 * bfloat16 saves with descr '<V2' (two raw bytes), and the Array's `dtype` field ("bfloat16") says how to read them,
 * so decoding takes that field. The header is written byte for byte as NumPy 2.x writes it (the 64-byte alignment
 * and the spare room for the first axis to grow), so object ids computed here equal Python's for the same tensor.
 * Not here: fortran order, other dtypes, pickled objects (never accepted, as Flower never allows them).
 */
import { LorakitError } from '../errors.ts';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../io/index.ts';

/** The dtypes a federated tensor travels in (Flower's `Array.dtype` spelling). */
export type WireDType = 'float32' | 'float16' | 'bfloat16';

/** A tensor as it crosses the wire: values widened to f32, its shape and the dtype it travels in. */
export interface WireTensor {
  dtype: WireDType;
  shape: number[];
  data: Float32Array;
}

const DESCR: Record<WireDType, string> = { float32: '<f4', float16: '<f2', bfloat16: '<V2' };
const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // "\x93NUMPY"
const ARRAY_ALIGN = 64; // numpy.lib.format.ARRAY_ALIGN
const GROWTH_AXIS_MAX_DIGITS = 21; // numpy.lib.format.GROWTH_AXIS_MAX_DIGITS: room to rewrite a growing first axis

/** Python's repr of a tuple of ints: `()`, `(3,)`, `(2, 3)`. */
function shapeRepr(shape: readonly number[]): string {
  if (shape.length === 1) return `(${shape[0]},)`;
  return `(${shape.join(', ')})`;
}

/** The .npy bytes of `t` as `np.save` writes them (little-endian, C order). */
export function encodeNpy(t: WireTensor): Uint8Array {
  const n = t.shape.reduce((a, b) => a * b, 1);
  if (n !== t.data.length) {
    throw new LorakitError('LK_SHAPE_MISMATCH', `npy: shape [${t.shape}] holds ${n} values, got ${t.data.length}`);
  }
  let header = `{'descr': '${DESCR[t.dtype]}', 'fortran_order': False, 'shape': ${shapeRepr(t.shape)}, }`;
  if (t.shape.length > 0) header += ' '.repeat(GROWTH_AXIS_MAX_DIGITS - String(t.shape[0]).length);
  const hlen = header.length + 1; // + '\n'
  const pad = ARRAY_ALIGN - ((MAGIC.length + 2 + 2 + hlen) % ARRAY_ALIGN);
  header = `${header}${' '.repeat(pad)}\n`;
  const body = t.dtype === 'float32' ? t.data : t.dtype === 'float16' ? f32ToF16(t.data) : f32ToBf16(t.data);
  const out = new Uint8Array(10 + header.length + body.byteLength);
  out.set(MAGIC, 0);
  out[6] = 1; // format version 1.0
  out[7] = 0;
  new DataView(out.buffer).setUint16(8, header.length, true);
  for (let i = 0; i < header.length; i++) out[10 + i] = header.charCodeAt(i);
  out.set(new Uint8Array(body.buffer, body.byteOffset, body.byteLength), 10 + header.length);
  return out;
}

/** Reads .npy bytes; `dtype` is the Array's dtype field (needed for bfloat16, which the file calls '<V2'). */
export function decodeNpy(bytes: Uint8Array, dtype: string, where: string): WireTensor {
  const bad = (what: string) => new LorakitError('LK_FILE_INVALID', `${where}: not a NumPy .npy array: ${what}`);
  if (bytes.length < 10 || MAGIC.some((m, i) => bytes[i] !== m)) throw bad('the magic "\\x93NUMPY" is missing');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const major = bytes[6];
  const hlen = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const start = major === 1 ? 10 : 12;
  const header = new TextDecoder('latin1').decode(bytes.subarray(start, start + hlen));
  const descr = /'descr':\s*'([^']*)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) throw bad(`header ${header.trim()}`);
  if (fortran === 'True') throw new LorakitError('LK_UNSUPPORTED', `${where}: Fortran-order arrays are not supported`);
  const shape = shapeText
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
    .map(Number);
  const wire: WireDType | undefined =
    descr === '<f4' ? 'float32' : descr === '<f2' ? 'float16' : /^[<|]V2$/.test(descr) ? 'bfloat16' : undefined;
  if (wire === undefined || (wire === 'bfloat16' && dtype !== 'bfloat16')) {
    throw new LorakitError(
      'LK_UNSUPPORTED',
      `${where}: arrays of dtype ${dtype} (npy descr ${descr}) are not supported; float32, float16 and bfloat16 are`,
    );
  }
  const n = shape.reduce((a, b) => a * b, 1);
  const width = wire === 'float32' ? 4 : 2;
  const offset = start + hlen;
  if (bytes.length - offset !== n * width) {
    throw bad(`shape (${shape}) needs ${n * width} bytes of data, found ${bytes.length - offset}`);
  }
  const raw = bytes.slice(offset); // a copy: aligned for the typed-array view
  const data =
    wire === 'float32'
      ? new Float32Array(raw.buffer, 0, n)
      : wire === 'float16'
        ? f16ToF32(new Uint16Array(raw.buffer, 0, n))
        : bf16ToF32(new Uint16Array(raw.buffer, 0, n));
  return { dtype: wire, shape, data };
}
