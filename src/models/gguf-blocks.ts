/**
 * Quantized frozen weights taken from the GGUF file a model folder came from (io/gguf-model.ts), instead of
 * requantizing its dequantized float32 copy: a q4 base gets the file's own Q4_0 / Q4_1 blocks, an int8 base the
 * file's Q8_0 blocks. The bytes are reordered, not recomputed: GGUF's Q4 block holds elements j and j+16 in byte j,
 * MatMulNBits elements 2j and 2j+1; Q8_0's int8 codes become MatMulNBits' uint8 bytes by adding 128. Q4_1's
 * minimum m (W = d·q + m) has no place in MatMulNBits' integer path (a float zero point sends ORT to its float
 * kernel), so it is written W = d·(q − 8) + (m + 8d): the symmetric codes go to MatMulNBits and the per-block
 * offset m + 8d to a small float product with the input's block sums (nn/quant-linear.ts).
 * Rows of q/k are put in HF order as the folder's weights are (llama.cpp interleaves the rotary halves).
 * Not here: the GGUF format (io/gguf.ts), the folder (io/gguf-model.ts), quantizing floats (nn/quantize.ts).
 */
import { GgufFile, f16BitsToNumber, ggufTensorName, permuteRotaryRows } from '../io/index.ts';
import { join, readFile } from '../io/host.ts';
import { type BlockWeight, Q4_BLOCK, type QuantMode, blockWeight } from '../nn/index.ts';
import type { LinearInfo } from './quantize.ts';

/** GGUF block types each mode takes as they are. */
const NATIVE: Readonly<Record<Exclude<QuantMode, 'none'>, readonly string[]>> = {
  int8: ['Q8_0'],
  q4: ['Q4_0', 'Q4_1'],
};

/** The GGUF file a model folder was converted from (its `gguf-source.json`), or null for any other folder. */
export async function ggufSourceOf(dir: string): Promise<string | null> {
  const text = await readFile(join(dir, 'gguf-source.json'), 'utf8').catch(() => null);
  if (text === null) return null;
  const path = (JSON.parse(text) as { gguf?: unknown }).gguf;
  return typeof path === 'string' ? path : null;
}

/** What nativeBlockWeights found: the weights it took from the file, by HF name (others are left to the caller). */
export interface NativeBlocks {
  weights: Map<string, BlockWeight>;
  /** The file they came from. */
  file: string;
}

/**
 * The weights of `modules` that `gguf` holds in a block type `mode` takes as it is (Q4_0/Q4_1 for q4, Q8_0 for
 * int8), as BlockWeights. `heads` gives the head counts of q and k for the rotary row order (llama architecture).
 */
export async function nativeBlockWeights(
  gguf: string,
  modules: readonly LinearInfo[],
  mode: Exclude<QuantMode, 'none'>,
  heads: { q: number; kv: number } | null,
): Promise<NativeBlocks> {
  const f = await GgufFile.open(gguf);
  const weights = new Map<string, BlockWeight>();
  try {
    for (const m of modules) {
      const name = ggufTensorName(m.weightName);
      if (!name || !f.header.tensors.has(name) || m.kind !== 'linear') continue;
      const info = f.info(name);
      const [out, inF] = [m.outFeatures, m.inFeatures];
      if (!NATIVE[mode].includes(info.type.name) || info.count !== out * inF || inF % Q4_BLOCK !== 0) continue;
      let rows = Int32Array.from({ length: out }, (_, i) => i); // HF row o is GGUF row rows[o]
      const rope = heads && /\.attn_q\./.test(name) ? heads.q : heads && /\.attn_k\./.test(name) ? heads.kv : 0;
      if (rope) rows = Int32Array.from(permuteRotaryRows(Float32Array.from(rows), rope, 1, true));
      weights.set(m.weightName, fromGguf(info.type.name, await f.raw(name), rows, out, inF));
    }
  } finally {
    await f.close();
  }
  return { weights, file: gguf };
}

/** One tensor's GGUF blocks (type Q4_0, Q4_1 or Q8_0) as a BlockWeight with HF row `o` taken from row rows[o]. */
export function fromGguf(type: string, raw: Uint8Array, rows: Int32Array, out: number, inF: number): BlockWeight {
  const nb = inF / Q4_BLOCK;
  const size = type === 'Q4_0' ? 18 : type === 'Q4_1' ? 20 : 34; // bytes per GGUF block
  const q8 = type === 'Q8_0';
  const per = q8 ? Q4_BLOCK : Q4_BLOCK / 2; // bytes per MatMulNBits block
  const blocks = new Uint8Array(out * nb * per);
  const scales = new Float32Array(out * nb);
  const offsets = type === 'Q4_1' ? new Float32Array(out * nb) : undefined;
  const half = (at: number) => f16BitsToNumber(raw[at]! | (raw[at + 1]! << 8));
  for (let o = 0; o < out; o++) {
    for (let b = 0; b < nb; b++) {
      const src = (rows[o]! * nb + b) * size;
      const dst = o * nb + b;
      const d = half(src);
      scales[dst] = d;
      if (offsets) offsets[dst] = Math.fround(half(src + 2) + 8 * d); // W = d·q + m = d·(q − 8) + (m + 8d)
      const qs = src + (q8 ? 2 : offsets ? 4 : 2);
      const at = dst * per;
      if (q8) {
        // int8 code + INT8_ZERO (128) as a byte is the code's own byte with its top bit flipped
        for (let j = 0; j < Q4_BLOCK; j++) blocks[at + j] = raw[qs + j]! ^ 0x80;
        continue;
      }
      // GGUF: byte j = element j (low nibble) | element j+16 (high); MatMulNBits: byte j = 2j (low) | 2j+1 (high).
      // So bytes 0–7 take the low nibbles of GGUF bytes 2j, 2j+1, and bytes 8–15 the high nibbles of 2j−16, 2j−15.
      for (let j = 0; j < 8; j++) blocks[at + j] = (raw[qs + 2 * j]! & 15) | ((raw[qs + 2 * j + 1]! & 15) << 4);
      for (let j = 8; j < 16; j++) blocks[at + j] = (raw[qs + 2 * j - 16]! >> 4) | (raw[qs + 2 * j - 15]! & 0xf0);
    }
  }
  return blockWeight(q8 ? 'q8' : 'q4', out, inF, blocks, scales, offsets);
}
