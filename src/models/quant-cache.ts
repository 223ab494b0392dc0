/**
 * The quantized-weight cache: the int8 codes and scales (or 4-bit blocks) of a model's frozen Linears, written once
 * as a safetensors file under `quantized/` of the lorakit cache root, so a second run neither quantizes in
 * JavaScript again nor copies the codes into the ONNX model: the returned weights point into the file (`stored`
 * spans), every graph references those bytes as external data, and ONNX Runtime memory-maps them like the model's
 * own safetensors file. The arrays stay readable (DoRA's column norms, float64 checks): they are read from the file
 * on first touch.
 *
 * Key: the model folder's real path and the identity (device, inode, size, mtime) of each of its safetensors files
 * (a model replaced in place is a miss), the mode, the quantized modules' names and sizes, the GGUF file whose own
 * blocks were taken, and VERSION (bump it when a quantizer's output changes). File name
 * `<folder hash>-v<VERSION>-<mode>-<key hash>.safetensors`; a new file for a folder deletes that folder's older files
 * of the same version and mode (their source changed). A file that does not parse, is truncated, or lacks a tensor
 * is rebuilt, with a note. Writes are atomic (a temp file renamed into place), so a reader never sees half a file
 * and two processes building the same entry both succeed.
 * Not here: the quantizers (nn/quantize.ts), which modules are quantized (quantize.ts), the graph side
 * (nn/quant-linear.ts).
 */
import { LorakitError } from '../errors.ts';
import { SafetensorsFile, type TensorInfo, writeSafetensors } from '../io/index.ts';
import { createHash, join, mkdir, readFileSync, readdir, realpath, rm, stat } from '../io/host.ts';
import type {
  BlockWeight,
  FileSpan,
  Int8Codes,
  Int8Weight,
  QuantKernels,
  QuantMode,
  QuantizedWeight,
  StoredInt8,
} from '../nn/index.ts';
import { INT8_LEVELS, INT8_ZERO, Q4_BLOCK, blockBits, int8Bytes } from '../nn/index.ts';

/** Bump when a quantizer's output changes for the same input: old files become misses. */
const VERSION = 2; // 2: int8 is 8-bit blocks, backward copies uint8 (code + 128) or int8 (layout); 1: per-row int8 in [−64, 64]
/** `__metadata__.format` of a cache file. */
const FORMAT = 'lorakit-quantized-base';

/** One weight the cache holds: its HF name, kind of quantization and [out, in] sizes. */
export interface CachedWeightSpec {
  name: string;
  out: number;
  in: number;
}

/**
 * How a file stores the per-channel int8 codes, for the kernels that will read them (nn/quant-linear.ts QuantKernels):
 * as uint8 code + 128 or as int8 codes, and, for int8's `int8-rows` forward, with the [in, out] copy beside the
 * [out, in] one, so no graph has ORT convert or transpose the codes into new initializers at load. Each layout is its
 * own file (the slot's variant names it).
 */
export interface CacheLayout {
  codes: Int8Codes;
  /**
   * int8's weights are per output channel, stored [in, out] (the int8-rows forward) and [out, in] (the input
   * gradient); a GGUF's own Q8_0 blocks keep their blocks and backward copy, with that copy [in, out] too.
   */
  rows: boolean;
}

/** The layout the kernels read for a base quantized in `mode`. */
export const cacheLayout = (mode: Exclude<QuantMode, 'none'>, kernels: QuantKernels): CacheLayout => ({
  codes: kernels.codes,
  rows: mode === 'int8' && kernels.inputs === 'int8-rows',
});

/** The slot variant's suffix for a layout: none for the u8, blocks-only layout of earlier files. */
export const layoutSuffix = (l: CacheLayout): string => `${l.codes === 's8' ? '-s8' : ''}${l.rows ? '-rows' : ''}`;

/** Where a model's cache file is, and whether it can be used at all. */
export interface QuantCacheSlot {
  /** The cache file for this model, mode and module list. */
  path: string;
  /** The start of the file names in the cache folder of the same model folder, version and mode. */
  prefix: string;
  key: string;
}

const sha = (s: string) => createHash('sha256').update(s).digest('hex');

/**
 * The cache slot of a model folder `dir` in `cacheDir`, or null when the folder holds no safetensors file to key
 * on (an in-memory model): such a model is quantized on every load. `variant` is the mode, with `-head` when the
 * output head is quantized too and the layout's suffix (layoutSuffix): each variant has its own file. `source` names where blocks taken as they are came
 * from (a GGUF file), so such a file and a requantized one are different entries.
 */
export async function quantCacheSlot(
  cacheDir: string,
  dir: string,
  variant: string,
  specs: readonly CachedWeightSpec[],
  source = '',
): Promise<QuantCacheSlot | null> {
  const real = await realpath(dir).catch(() => null);
  if (real === null) return null;
  const names = (await readdir(real).catch(() => [] as string[])).filter((n) =>
    /\.safetensors(\.index\.json)?$/.test(n),
  );
  if (names.length === 0) return null;
  let id = `${FORMAT}\0${VERSION}\0${INT8_LEVELS}\0${Q4_BLOCK}\0${variant}\0${real}\0${source}`;
  for (const n of names.sort()) {
    const s = await stat(join(real, n));
    id += `\0${n}\0${s.dev}\0${s.ino}\0${s.size}\0${s.mtimeMs}`;
  }
  for (const w of specs) id += `\0${w.name}:${w.out}x${w.in}`;
  const key = sha(id);
  // the version leads the variant: a checkout of another version sharing this cache folder (its prefix
  // `<hash>-v<version>-<variant>-`) does not delete this file while a run of this version has it mapped, nor this one theirs
  const prefix = `${sha(real).slice(0, 16)}-v${VERSION}-${variant}-`;
  return { path: join(cacheDir, `${prefix}${key.slice(0, 24)}.safetensors`), prefix, key };
}

/** The tensors of one quantized weight in a cache file, by part, in the layouts the graph reads. */
function partsOf(name: string, q: QuantizedWeight, layout: CacheLayout) {
  const dtype = layout.codes === 's8' ? ('I8' as const) : ('U8' as const);
  if (q.kind === 'int8')
    return {
      [`${name}:int8_t`]: { dtype, shape: [q.in, q.out], data: int8Bytes(q.q, q.out, q.in, true, layout.codes) },
      [`${name}:int8`]: { dtype, shape: [q.out, q.in], data: int8Bytes(q.q, q.out, q.in, false, layout.codes) },
      [`${name}:scale`]: { dtype: 'F32' as const, shape: [q.out], data: q.scale },
    };
  const nb = Math.ceil(q.in / Q4_BLOCK);
  const k = q.kind;
  const per = (Q4_BLOCK * blockBits(k)) / 8;
  const t = layout.rows && k === 'q8';
  return {
    [`${name}:${k}`]: { dtype: 'U8' as const, shape: [q.out, nb, per], data: q.blocks },
    [`${name}:${k}_scale`]: { dtype: 'F32' as const, shape: [q.out * nb], data: q.scales },
    [`${name}:${k}_back`]: { dtype, shape: [q.out, q.in], data: int8Bytes(q.back.q, q.out, q.in, false, layout.codes) },
    ...(t
      ? {
          [`${name}:${k}_back_t`]: {
            dtype,
            shape: [q.in, q.out],
            data: int8Bytes(q.back.q, q.out, q.in, true, layout.codes),
          },
        }
      : {}),
    [`${name}:${k}_back_scale`]: { dtype: 'F32' as const, shape: [q.out], data: q.back.scale },
    ...(q.offsets ? { [`${name}:${k}_offset`]: { dtype: 'F32' as const, shape: [q.out * nb], data: q.offsets } } : {}),
  };
}

/**
 * Writes `weights` to the slot's file atomically and deletes the same folder's older files of this mode. The
 * caller reads it back with `readQuantCache` (so the weights it uses point into the file).
 */
export async function writeQuantCache(
  slot: QuantCacheSlot,
  mode: Exclude<QuantMode, 'none'>,
  weights: ReadonlyMap<string, QuantizedWeight>,
  layout: CacheLayout,
): Promise<void> {
  const dir = join(slot.path, '..');
  await mkdir(dir, { recursive: true });
  const tensors = Object.assign({}, ...[...weights].map(([n, q]) => partsOf(n, q, layout)));
  // a cache, not a checkpoint: no fsync (a file cut short by a crash fails readQuantCache's checks and is rebuilt)
  const metadata = { format: FORMAT, version: String(VERSION), mode, key: slot.key };
  await writeSafetensors(slot.path, tensors, metadata, { durable: false });
  const mine = slot.path.slice(dir.length + 1);
  for (const n of await readdir(dir).catch(() => [] as string[]))
    if (n.startsWith(slot.prefix) && n !== mine) await rm(join(dir, n), { force: true }).catch(() => {});
}

/** Why a cache file cannot be used (a message for the note), or null when it is valid. */
type Read = { weights: Map<string, QuantizedWeight> } | { problem: string } | null;

/**
 * The weights held in the slot's file, pointing into it: null when the file does not exist, `{problem}` when it
 * exists but is unusable (does not parse, is truncated, has another key, lacks or misshapes a tensor).
 */
export async function readQuantCache(
  slot: QuantCacheSlot,
  mode: Exclude<QuantMode, 'none'>,
  specs: readonly CachedWeightSpec[],
  layout: CacheLayout,
): Promise<Read> {
  let f: SafetensorsFile;
  try {
    f = await SafetensorsFile.open(slot.path);
  } catch (e) {
    if (e instanceof LorakitError && e.code === 'LK_FILE_NOT_FOUND') return null;
    return { problem: (e as Error).message };
  }
  try {
    const m = f.metadata;
    if (m.format !== FORMAT || m.version !== String(VERSION) || m.mode !== mode || m.key !== slot.key)
      return { problem: `its metadata ${JSON.stringify(m)} is not this model's (key ${slot.key.slice(0, 12)}…)` };
    const bytes = lazyBytes(slot.path);
    const part = (name: string, dtype: string, shape: readonly number[]): FileSpan => {
      const t: TensorInfo | undefined = f.has(name) ? f.info(name) : undefined;
      if (!t || t.dtype !== dtype || t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i]))
        throw new LorakitError(
          'LK_FILE_INVALID',
          `tensor '${name}' should be ${dtype} [${shape}], found ${t ? `${t.dtype} [${t.shape}]` : 'none'}`,
        );
      return { path: slot.path, offset: t.dataOffset, length: t.byteLength };
    };
    const weights = new Map<string, QuantizedWeight>();
    const codes = layout.codes === 's8' ? 'I8' : 'U8';
    for (const { name, out, in: inF } of specs) {
      if (layout.rows && !f.has(`${name}:q8`)) {
        // per-channel int8 (a GGUF's own Q8_0 blocks are stored as blocks, below)
        const stored: StoredInt8 = {
          codesInOut: part(`${name}:int8_t`, codes, [inF, out]),
          codesOutIn: part(`${name}:int8`, codes, [out, inF]),
          scale: part(`${name}:scale`, 'F32', [out]),
          signed: layout.codes === 's8',
        };
        weights.set(name, int8Stored(stored, out, inF, bytes));
        continue;
      }
      const k = mode === 'int8' ? 'q8' : 'q4';
      const nb = Math.ceil(inF / Q4_BLOCK);
      const stored = {
        blocks: part(`${name}:${k}`, 'U8', [out, nb, (Q4_BLOCK * blockBits(k)) / 8]),
        scales: part(`${name}:${k}_scale`, 'F32', [out * nb]),
        // only a GGUF's Q4_1 blocks have offsets
        ...(f.has(`${name}:${k}_offset`) ? { offsets: part(`${name}:${k}_offset`, 'F32', [out * nb]) } : {}),
      };
      const back: StoredInt8 = {
        codesOutIn: part(`${name}:${k}_back`, codes, [out, inF]),
        ...(layout.rows && k === 'q8' ? { codesInOut: part(`${name}:${k}_back_t`, codes, [inF, out]) } : {}),
        scale: part(`${name}:${k}_back_scale`, 'F32', [out]),
        signed: layout.codes === 's8',
      };
      weights.set(name, blockStored(k, stored, int8Stored(back, out, inF, bytes), out, inF, bytes));
    }
    return { weights };
  } catch (e) {
    return { problem: (e as Error).message };
  } finally {
    await f.close();
  }
}

/** The whole file's bytes, read on the first call only (shared by every weight of one base). */
function lazyBytes(path: string): () => Uint8Array {
  let b: Uint8Array | undefined;
  return () => {
    b ??= readFileSync(path) as Uint8Array;
    return b;
  };
}

/** A copy of a span's bytes as `Ctor` (a copy, so the view is aligned and outlives the file). */
function arrayOf<A>(bytes: () => Uint8Array, s: FileSpan, Ctor: new (b: ArrayBuffer) => A): A {
  const b = bytes();
  return new Ctor(b.buffer.slice(b.byteOffset + s.offset, b.byteOffset + s.offset + s.length) as ArrayBuffer);
}

/** An int8 weight whose arrays are read from its file on first touch. */
function int8Stored(stored: StoredInt8, out: number, inF: number, bytes: () => Uint8Array): Int8Weight {
  let q: Int8Array | undefined;
  let scale: Float32Array | undefined;
  return {
    kind: 'int8',
    out,
    in: inF,
    stored,
    get q() {
      if (!q) {
        // the file holds code + INT8_ZERO as uint8 or the codes as int8 (signed), [out, in] (codesOutIn) or
        // [in, out] (codesInOut)
        const [span, transposed] = stored.codesOutIn ? [stored.codesOutIn, false] : [stored.codesInOut!, true];
        const b = arrayOf(bytes, span, Uint8Array);
        const z = stored.signed ? 0 : INT8_ZERO;
        const c = stored.signed ? new Int8Array(b.buffer, b.byteOffset, b.length) : b;
        q = new Int8Array(b.length);
        if (!transposed) for (let k = 0; k < b.length; k++) q[k] = c[k] - z;
        else for (let i = 0; i < inF; i++) for (let o = 0; o < out; o++) q[o * inF + i] = c[i * out + o] - z;
      }
      return q;
    },
    get scale() {
      scale ??= arrayOf(bytes, stored.scale, Float32Array);
      return scale;
    },
  };
}

/** A block weight whose arrays are read from its file on first touch. */
function blockStored(
  kind: 'q4' | 'q8',
  stored: NonNullable<BlockWeight['stored']>,
  back: Int8Weight,
  out: number,
  inF: number,
  bytes: () => Uint8Array,
): BlockWeight {
  let blocks: Uint8Array | undefined;
  let scales: Float32Array | undefined;
  let offsets: Float32Array | undefined;
  return {
    kind,
    out,
    in: inF,
    back,
    stored,
    get blocks() {
      blocks ??= arrayOf(bytes, stored.blocks, Uint8Array);
      return blocks;
    },
    get scales() {
      scales ??= arrayOf(bytes, stored.scales, Float32Array);
      return scales;
    },
    get offsets() {
      if (stored.offsets) offsets ??= arrayOf(bytes, stored.offsets, Float32Array);
      return offsets;
    },
  };
}

/** The cache's description of the modules quantize.ts selects (quantizedModules). */
export function cachedSpecs(
  modules: readonly { weightName: string; outFeatures: number; inFeatures: number }[],
): CachedWeightSpec[] {
  return modules.map((m) => ({ name: m.weightName, out: m.outFeatures, in: m.inFeatures }));
}
