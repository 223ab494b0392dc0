// A GGUF's own blocks as a quantized base (src/models/gguf-blocks.ts): Q4_0, Q4_1 and Q8_0 tensors become
// MatMulNBits weights by reordering bytes, not by requantizing. Checked against ggml's dequantization
// (io/gguf-quants.ts, itself checked bit for bit against gguf-py): the weight W̃ the graph multiplies by equals it up
// to float32 rounding, and the product through the integer kernel is within the activation-quantization bound
//     |y − x·W̃ᵀ| ≤ rᵢ/254 · Σₖ |W̃ codes[o, k]|   (MatMulNBits, accuracy_level 4: int8 per 32-block of x)
// where for Q4_1 the codes part is (q − 8)·d and the offset m + 8d goes through a float product (exact to 1e-6).
// The input gradient goes through the per-row copy only (the offset path is detached: no double count). On the real
// SmolLM2 file (skipped when ../shared is absent): q/k rows come out in HF order, equal to the folder's weights.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Graph, grad } from '../../src/graph/index.ts';
import { GgufFile, dequantize as ggmlDequantize, ggmlTypeByName, numberToF16Bits } from '../../src/io/index.ts';
import { fromGguf, nativeBlockWeights } from '../../src/models/gguf-blocks.ts';
import { type BlockWeight, type QuantInputs, dequantize, quantizedTensors } from '../../src/nn/index.ts';
import { compile } from '../../src/runtime/index.ts';
import { randArray, rng } from '../helpers.ts';
import { SMOLLM2_GGUF, skipNote } from '../io/gguf-shared.ts';

const [N, OUT, IN] = [12, 24, 96];

/** Random GGUF blocks of `type` for a [rows, cols] tensor: codes uniform, scales (and Q4_1 minima) float16. */
function randomBlocks(type: 'Q4_0' | 'Q4_1' | 'Q8_0', rows: number, cols: number, seed: number): Uint8Array {
  const t = ggmlTypeByName(type);
  const nb = (rows * cols) / 32;
  const raw = new Uint8Array(nb * t.typeSize);
  const r = rng(seed);
  const f16 = (at: number, v: number) => {
    const h = numberToF16Bits(v);
    raw[at] = h & 255;
    raw[at + 1] = h >> 8;
  };
  for (let b = 0; b < nb; b++) {
    const at = b * t.typeSize;
    f16(at, (r() < 0.5 ? -1 : 1) * (0.002 + 0.02 * r())); // d of either sign (ggml's Q4_0 d is m/−8)
    if (type === 'Q4_1') f16(at + 2, -0.2 * r());
    const qs = at + (type === 'Q4_1' ? 4 : 2);
    for (let j = qs; j < at + t.typeSize; j++) raw[j] = Math.floor(r() * 256);
    if (type === 'Q8_0') raw[qs] = 0x81; // code −127, the extreme
  }
  return raw;
}

/** y = x·W̃ᵀ and dx = R·W̃ (the gradient of Σ y⊙R) through the layer's graph. */
async function run(q: BlockWeight, x: Float32Array, R: Float32Array, inputs: QuantInputs) {
  const g = new Graph('gguf-blocks');
  const xi = g.input('x', 'f32', [N, IN]);
  const y = quantizedTensors(g, 'w', q, false, { inputs, codes: 'u8' }).product(xi);
  const [dx] = grad(y.mul(g.constant(R, 'f32', [N, OUT])).sum(), [xi]);
  g.output('y', y);
  g.output('dx', dx);
  const s = await compile(g, { worker: false });
  const out = await s.run({ x: { data: x, shape: [N, IN] } });
  await s.dispose();
  return { y: out.y.data as Float32Array, dx: out.dx.data as Float32Array };
}

// q4 always rounds x per block; q8 does with int8 inputs (accuracy_level 4) and multiplies float x with float inputs
const CASES = [
  ['Q4_0', 'int8'],
  ['Q4_1', 'int8'],
  ['Q8_0', 'float'],
  ['Q8_0', 'int8'],
] as const;
for (const [type, inputs] of CASES) {
  test(`${type}, ${inputs} inputs: the file's blocks reordered give ggml's W, and x·W̃ᵀ is within its bound`, async () => {
    const raw = randomBlocks(type, OUT, IN, 7);
    const want = ggmlDequantize(ggmlTypeByName(type), raw, OUT * IN); // [OUT, IN] in file row order
    const rows = Int32Array.from({ length: OUT }, (_, o) => (o * 5) % OUT); // HF row o = file row 5o mod 24
    const q = fromGguf(type, raw, rows, OUT, IN);
    assert.equal(q.kind, type === 'Q8_0' ? 'q8' : 'q4');
    assert.equal(q.offsets !== undefined, type === 'Q4_1');
    const Wt = dequantize(q);
    const wMax = want.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    for (let o = 0; o < OUT; o++)
      for (let k = 0; k < IN; k++) {
        const [got, ref] = [Wt[o * IN + k], want[rows[o] * IN + k]];
        assert.ok(Math.abs(got - ref) <= 1e-6 * wMax, `W̃[${o}, ${k}] = ${got}, ggml ${ref}`);
      }

    const x = Float32Array.from(randArray(N * IN, 11));
    x[5] = 40; // an outlier: it coarsens its own 32-block only
    const R = Float32Array.from(randArray(N * OUT, 12));
    const { y, dx } = await run(q, x, R, inputs);
    const nb = IN / 32;
    const codesPart = (o: number, k: number) => Wt[o * IN + k] - (q.offsets ? q.offsets[o * nb + (k >> 5)] : 0);
    let worst = 0;
    for (let i = 0; i < N; i++) {
      const r = Math.max(...x.subarray(i * IN, (i + 1) * IN).map(Math.abs));
      for (let o = 0; o < OUT; o++) {
        let [exact, codes, abs] = [0, 0, 0];
        for (let k = 0; k < IN; k++) {
          exact += x[i * IN + k] * want[rows[o] * IN + k];
          codes += Math.abs(codesPart(o, k));
          abs += Math.abs(x[i * IN + k] * want[rows[o] * IN + k]);
        }
        // int8 inputs: x quantized per 32-block (accuracy_level 4); float: x times the unpacked blocks (level 0)
        const bound = (inputs === 'float' ? 0 : (r / 254) * codes) + 1e-5 * abs;
        const err = Math.abs(y[i * OUT + o] - exact);
        assert.ok(err <= bound, `y[${i}, ${o}] = ${y[i * OUT + o]}, exact ${exact}: error ${err} > ${bound}`);
        worst = Math.max(worst, err / bound);
      }
    }
    if (inputs === 'int8')
      assert.ok(worst > 1e-3, 'the product went through the integer kernel (else it would be exact)');
    // dx = R·W̃ through the per-row copy (≤ s/2 per entry) with R·diag(s) quantized per row; counted once
    const b = q.back;
    const sMax = Math.max(...b.scale);
    for (let i = 0; i < N; i++) {
      const Ri = R.subarray(i * OUT, (i + 1) * OUT);
      const aMax = Math.max(...Ri.map((v, o) => Math.abs(v * b.scale[o])));
      const l1 = Ri.reduce((s, v) => s + Math.abs(v), 0);
      for (let k = 0; k < IN; k++) {
        let [exact, codes] = [0, 0];
        for (let o = 0; o < OUT; o++) {
          exact += Ri[o] * Wt[o * IN + k];
          codes += Math.abs(b.q[o * IN + k]);
        }
        const bound = ((aMax / 255) * codes + (sMax / 2) * l1) * 1.0001 + 1e-6;
        assert.ok(Math.abs(dx[i * IN + k] - exact) <= bound, `dx[${i}, ${k}] = ${dx[i * IN + k]}, exact ${exact}`);
      }
    }
  });
}

test('the real SmolLM2 GGUF: q4 takes its Q4_1 blocks, q/k rows in HF order, W̃ = the dequantized weights', {
  skip: skipNote(),
}, async () => {
  const f = await GgufFile.open(SMOLLM2_GGUF);
  const heads = { q: 9, kv: 3 }; // SmolLM2-135M: 9 query heads, 3 key/value heads of 64
  const names = ['q_proj', 'k_proj'].map((p) => `model.layers.1.self_attn.${p}.weight`);
  const modules = names.map((weightName, i) => ({
    kind: 'linear' as const,
    path: weightName.replace(/\.weight$/, ''),
    weightName,
    inFeatures: 576,
    outFeatures: i === 0 ? 576 : 192,
    biasName: null,
  }));
  const { weights } = await nativeBlockWeights(SMOLLM2_GGUF, modules, 'q4', heads);
  assert.deepEqual([...weights.keys()], names);
  for (const [name, q] of weights) {
    assert.ok(q.offsets, `${name}: Q4_1 blocks carry offsets`);
    const gg = name.replace('model.layers.1.self_attn.', 'blk.1.').replace(/(\w)_proj/, 'attn_$1');
    const flat = await f.read(gg); // [out, in] in llama.cpp's row order
    const h = name.includes('q_proj') ? 9 : name.includes('k_proj') ? 3 : 0;
    const hd = q.out / (h || 1);
    const Wt = dequantize(q);
    for (let o = 0; o < q.out; o++) {
      // HF row h·hd + a·hd/2 + i is GGUF row h·hd + 2i + a (q and k only)
      const [hh, rest] = [Math.floor(o / hd), o % hd];
      const src = h ? hh * hd + 2 * (rest % (hd / 2)) + Math.floor(rest / (hd / 2)) : o;
      for (let k = 0; k < q.in; k++) {
        const [got, ref] = [Wt[o * q.in + k], flat[src * q.in + k]];
        assert.ok(Math.abs(got - ref) <= 1e-6 * (Math.abs(ref) + 1e-3), `${name}[${o}, ${k}] = ${got}, file ${ref}`);
      }
    }
  }
  await f.close();
});
