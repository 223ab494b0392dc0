// The integer products of a quantized Linear (DynamicQuantizeMatMul for per-channel int8 and every backward copy,
// MatMulNBits for 8-bit and 4-bit blocks), forward x·W̃ᵀ and input gradient dY·W̃, against the same products in
// float64 on the host, within the error bound each quantization allows; and against the float W within the bound
// that adds the weights' own rounding.
//
// The bounds. Row i of the float input a (x, or dY·diag(s) in the backward) has largest magnitude rᵢ.
//  - DynamicQuantizeMatMul sees a/r, whose entries lie in [−1, 1]: it quantizes that tensor to uint8 with step
//    Δ = (max(0, max) − min(0, min))/255 ≤ 2/255 and a rounded zero point, so the rounding error of each entry is at
//    most Δ/2 = 1/255, times rᵢ after the rescale. The int32 sums are exact. So
//        |(a·B̃)[i, n] − (a·B̃)_exact[i, n]| ≤ rᵢ/255 · Σₖ |B̃[k, n]|                                   (1)
//  - MatMulNBits with accuracy_level 4 quantizes each 32-block of a row symmetrically to int8 (step amax/127, error
//    ≤ amax/254 ≤ rᵢ/254), so |(x·W̃ᵀ)[i, o] − exact| ≤ rᵢ/254 · Σₖ |W̃[o, k]|                         (2)
//  - int8RowsMatMul (the per-channel forward) multiplies the 32 largest input columns in float and the rest as (1),
//    with rᵢ the largest magnitude of row i outside those columns: an outlier column no longer sets the grid.
//  - Codes use the full ±127: DynamicQuantizeMatMul's weights are uint8 with zero point 128 (nn/quantize.ts
//    INT8_LEVELS: MLAS's AVX2 uint8×int8 kernel saturates with ±127; the last test here is built to hit that), or
//    int8 (s8) where the CPU has VNNI or AMX: the same integer sums, so the same products, bit for bit.
//    Against the float W: per-channel int8 adds |W − W̃| ≤ s_o/2 per entry (quantizeInt8), Q4_0 adds ≤ |d_block|,
//    times Σ|x|.
// Float32 rounding of the rescales adds a relative 1e-6 of Σ|a||B̃|; the test allows 1e-5 of it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Graph, grad } from '../../../src/graph/index.ts';
import {
  type QuantKernels,
  type QuantizedWeight,
  dequantize,
  kernelsFor,
  OUTLIER_COLUMNS,
  quantizeInt8,
  quantizeQ4,
  quantizeQ8,
  quantizedTensors,
} from '../../../src/nn/index.ts';
import { compile } from '../../../src/runtime/index.ts';
import { cpuFeatures } from '../../../src/io/host.ts';
import { randArray, rng } from '../../helpers.ts';

/** s8 codes are right only where the CPU multiplies u8·s8 without saturation (kernelsFor says where). */
const S8 = kernelsFor(cpuFeatures()).codes === 's8';
const CODES = S8 ? (['u8', 's8'] as const) : (['u8'] as const);

const N = 24;
const OUT = 40;
const IN = 96; // three 32-blocks

/** Inputs meant to break a careless quantizer: outlier entries, rows far apart in scale, a zero row, half-steps. */
function adversarial(rows: number, cols: number, seed: number): Float32Array {
  const x = Float32Array.from(randArray(rows * cols, seed));
  const r = rng(seed + 7);
  for (let i = 0; i < rows; i++) {
    const row = x.subarray(i * cols, (i + 1) * cols);
    const kind = i % 6;
    if (kind === 0) row[Math.floor(r() * cols)] = 50; // one outlier coarsens the grid of its row only
    if (kind === 1) row.forEach((v, k) => (row[k] = v * 1e-4)); // a tiny row beside large ones
    if (kind === 2) row.fill(0);
    if (kind === 3) row.forEach((_, k) => (row[k] = ((k % 255) + 0.5) / 127.5 - 1)); // entries on half-steps
    if (kind === 4) row.forEach((v, k) => (row[k] = v * 300));
    if (kind === 5) row.forEach((_, k) => (row[k] = k % 2 ? 1 : -1)); // every rounding error of one sign
  }
  return x;
}

/** Runs y = x·W̃ᵀ and dx = R·W̃ (the gradient of Σ y⊙R) through the quantized layer's graph. */
async function run(
  q: QuantizedWeight,
  x: Float32Array,
  R: Float32Array,
  kernels: QuantKernels = { inputs: 'float', codes: 'u8' },
): Promise<{ y: Float32Array; dx: Float32Array }> {
  const g = new Graph('quant-product');
  const xi = g.input('x', 'f32', [N, IN]);
  const t = quantizedTensors(g, 'w', q, false, kernels);
  const y = t.product(xi);
  const [dx] = grad(y.mul(g.constant(R, 'f32', [N, OUT])).sum(), [xi]);
  g.output('y', y);
  g.output('dx', dx);
  const s = await compile(g, { worker: false });
  const out = await s.run({ x: { data: x, shape: [N, IN] } });
  await s.dispose();
  return { y: out.y.data as Float32Array, dx: out.dx.data as Float32Array };
}

const rowMax = (a: ArrayLike<number>, i: number, cols: number) => {
  let m = 0;
  for (let k = 0; k < cols; k++) m = Math.max(m, Math.abs(a[i * cols + k]));
  return m;
};

/**
 * Checks got ≈ a·M for a [rows, K] and M [K, cols] given as M(k, c), within rowFactor(i)·Σₖ|M(k, c)| plus
 * extra(i, c) plus 1e-5·Σₖ|a||M|; returns the largest error / bound ratio seen.
 */
function checkProduct(
  what: string,
  got: Float32Array,
  a: Float32Array,
  M: (k: number, c: number) => number,
  [rows, K, cols]: number[],
  rowFactor: (i: number) => number,
  extra: (i: number, c: number) => number = () => 0,
): number {
  let worst = 0;
  for (let i = 0; i < rows; i++) {
    for (let c = 0; c < cols; c++) {
      let exact = 0;
      let absSum = 0;
      let mSum = 0;
      for (let k = 0; k < K; k++) {
        exact += a[i * K + k] * M(k, c);
        absSum += Math.abs(a[i * K + k] * M(k, c));
        mSum += Math.abs(M(k, c));
      }
      const bound = rowFactor(i) * mSum + extra(i, c) + 1e-5 * absSum + 1e-30;
      const err = Math.abs(got[i * cols + c] - exact);
      assert.ok(err <= bound, `${what}[${i}, ${c}]: |${got[i * cols + c]} − ${exact}| = ${err} > bound ${bound}`);
      worst = Math.max(worst, err / bound);
    }
  }
  return worst;
}

for (const inputs of ['random', 'adversarial'] as const) {
  const make = (seed: number) =>
    inputs === 'random' ? Float32Array.from(randArray(N * IN, seed)) : adversarial(N, IN, seed);
  const W = Float32Array.from(randArray(OUT * IN, 3, -0.2, 0.2));
  const R = Float32Array.from(inputs === 'random' ? randArray(N * OUT, 5) : adversarial(N, OUT, 5));

  for (const codes of CODES)
    test(`int8: x·W̃ᵀ and dY·W̃ through DynamicQuantizeMatMul stay within bound (1) (${inputs} inputs, ${codes})`, async () => {
      const q = quantizeInt8(W, OUT, IN);
      const Wt = dequantize(q); // [out, in]
      const x = make(11);
      const { y, dx } = await run(q, x, R, { inputs: 'int8-rows', codes });
      const fw = checkProduct(
        'y',
        y,
        x,
        (k, o) => Wt[o * IN + k],
        [N, IN, OUT],
        (i) => rowMax(x, i, IN) / 255,
      );
      // against the float W: the weights' rounding, ≤ s_o/2 per entry, times Σ|x|
      const l1 = (i: number) => x.subarray(i * IN, (i + 1) * IN).reduce((s, v) => s + Math.abs(v), 0);
      checkProduct(
        'y vs W',
        y,
        x,
        (k, o) => W[o * IN + k],
        [N, IN, OUT],
        (i) => rowMax(x, i, IN) / 255,
        (i, o) => (q.scale[o] / 2) * l1(i) * 1.0001,
      );
      // backward: a = R·diag(s) against the integer codes, i.e. R·W̃ exactly in the codes' units
      const a = R.map((v, k) => v * q.scale[k % OUT]);
      checkProduct(
        'dx',
        dx,
        a,
        (o, k) => q.q[o * IN + k],
        [N, OUT, IN],
        (i) => rowMax(a, i, OUT) / 255,
      );
      assert.ok(fw > 0, 'the quantized product is not the float one (else the test would test nothing)');
    });

  for (const kind of ['q4', 'q8', 'q8 int8-rows'] as const)
    test(`${kind}: x·W̃ᵀ through MatMulNBits within bound (2), dY·W̃ through its copy (${inputs} inputs)`, async () => {
      const q = kind === 'q4' ? quantizeQ4(W, OUT, IN) : quantizeQ8(W, OUT, IN);
      const Wt = dequantize(q);
      const x = make(13);
      const rows = kind === 'q8 int8-rows';
      const { y, dx } = await run(q, x, R, { inputs: rows ? 'int8-rows' : 'int8', codes: CODES.at(-1)! });
      if (rows) {
        // the forward multiplies by the per-channel copy the backward uses, per row as (1)
        const Wb = dequantize(q.back);
        checkProduct(
          'y',
          y,
          x,
          (k, o) => Wb[o * IN + k],
          [N, IN, OUT],
          (i) => rowMax(x, i, IN) / 255,
        );
      } else
        checkProduct(
          'y',
          y,
          x,
          (k, o) => Wt[o * IN + k],
          [N, IN, OUT],
          (i) => rowMax(x, i, IN) / 254,
        );
      // the backward multiplies by back = W̃ requantized (≤ s_back/2 per entry) with R·diag(s_back) quantized per row
      const b = q.back;
      const a = R.map((v, k) => v * b.scale[k % OUT]);
      const l1 = (i: number) => R.subarray(i * OUT, (i + 1) * OUT).reduce((s, v) => s + Math.abs(v), 0);
      const sMax = Math.max(...b.scale);
      checkProduct(
        'dx',
        dx,
        R,
        (o, k) => Wt[o * IN + k],
        [N, OUT, IN],
        () => 0,
        (i, k) => {
          let codes = 0;
          for (let o = 0; o < OUT; o++) codes += Math.abs(b.q[o * IN + k]);
          return (rowMax(a, i, OUT) / 255) * codes * 1.0001 + (sMax / 2) * l1(i) * 1.0001;
        },
      );
    });
}

test('q4 codes read by MatMulNBits are the ones dequantize() reads: a one-hot input picks one column of W̃', async () => {
  const W = Float32Array.from(randArray(OUT * IN, 21, -1, 1));
  const q = quantizeQ4(W, OUT, IN);
  const Wt = dequantize(q);
  const wMax = Math.max(...Wt.map(Math.abs)); // the kernel's zero-point correction leaves float32 residues of this size
  for (const k of [0, 1, 16, 17, 31, 33, 95]) {
    const x = new Float32Array(N * IN);
    x[k] = 1; // row 0 only; the kernel quantizes 1 to 127·(1/127): exact up to a float32 rounding
    const { y } = await run(q, x, new Float32Array(N * OUT));
    for (let o = 0; o < OUT; o++)
      assert.ok(Math.abs(y[o] - Wt[o * IN + k]) <= 1e-6 * wMax, `column ${k}, row ${o}: ${y[o]} ≠ ${Wt[o * IN + k]}`);
  }
});

test('no saturation: full-range codes (±127) times inputs whose rounded codes are extreme, both signs', async () => {
  // Every weight of a row at ±max, so its codes are ±127 in every product (q8 blocks, the per-row int8 forward and
  // every backward copy), and inputs ±1 with the row's signs, so the activations' codes are extreme too: a kernel
  // that adds uint8×int8 pairs in 16 bits (vpmaddubsw) saturates here and misses the bound by far.
  const W = Float32Array.from(randArray(OUT * IN, 31), (v) => (v > 0 ? 0.2 : -0.2));
  const x = new Float32Array(N * IN);
  for (let i = 0; i < N; i++)
    for (let k = 0; k < IN; k++) x[i * IN + k] = (i % 2 ? -1 : 1) * Math.sign(W[(i % OUT) * IN + k]);
  const R = new Float32Array(N * OUT);
  for (let i = 0; i < N; i++) for (let o = 0; o < OUT; o++) R[i * OUT + o] = (i % 2 ? -1 : 1) * (o % 3 ? 1 : -1);
  const cases = CODES.flatMap((codes) => [
    { q: quantizeInt8(W, OUT, IN), kernels: { inputs: 'int8-rows', codes } as const },
    { q: quantizeQ8(W, OUT, IN), kernels: { inputs: 'int8', codes } as const },
    { q: quantizeQ8(W, OUT, IN), kernels: { inputs: 'int8-rows', codes } as const },
  ]);
  for (const { q, kernels } of cases) {
    const Wt = dequantize(q.kind === 'int8' || kernels.inputs === 'int8' ? q : q.back);
    const { y, dx } = await run(q, x, R, kernels);
    checkProduct(
      `${q.kind} y`,
      y,
      x,
      (k, o) => Wt[o * IN + k],
      [N, IN, OUT],
      (i) => rowMax(x, i, IN) / 254,
    );
    // dY·W̃ through the per-row copy (int8 itself, or the blocks' back copy: W̃ exactly here, every entry ±max)
    const back = q.kind === 'int8' ? q : q.back;
    const a = R.map((v, k) => v * back.scale[k % OUT]);
    checkProduct(
      `${q.kind} dx`,
      dx,
      a,
      (o, k) => back.q[o * IN + k],
      [N, OUT, IN],
      (i) => rowMax(a, i, OUT) / 255,
    );
  }
});

test("int8-rows: the largest input columns multiply in float, so an outlier column does not set the rows' grid", async () => {
  const W = Float32Array.from(randArray(OUT * IN, 41, -0.2, 0.2));
  const q = quantizeInt8(W, OUT, IN);
  const Wt = dequantize(q);
  const x = Float32Array.from(randArray(N * IN, 43));
  const hot = [3, 50, 77]; // outlier channels, as in SmolLM2's hidden states: 100× the rest in every row
  for (let i = 0; i < N; i++) for (const k of hot) x[i * IN + k] *= 100;
  const cold = (i: number) => {
    let m = 0;
    for (let k = 0; k < IN; k++) if (!hot.includes(k)) m = Math.max(m, Math.abs(x[i * IN + k]));
    return m;
  };
  assert.ok(OUTLIER_COLUMNS >= hot.length);
  for (const codes of CODES) {
    const { y } = await run(q, x, new Float32Array(N * OUT), { inputs: 'int8-rows', codes });
    // bound (1) with the row's largest magnitude outside the outlier columns: 100× tighter than a per-row grid's
    const worst = checkProduct(
      'y',
      y,
      x,
      (k, o) => Wt[o * IN + k],
      [N, IN, OUT],
      (i) => cold(i) / 255,
    );
    assert.ok(worst > 1e-3, 'the other columns went through the integer kernel');
  }
});

test('s8 and u8 codes give the same products bit for bit (the same integer sums)', {
  skip: S8 ? false : 'needs VNNI or AMX (s8 codes saturate on AVX2 alone)',
}, async () => {
  const W = Float32Array.from(randArray(OUT * IN, 51, -0.3, 0.3));
  const x = adversarial(N, IN, 53);
  const R = Float32Array.from(randArray(N * OUT, 55));
  for (const [q, inputs] of [
    [quantizeInt8(W, OUT, IN), 'int8-rows'],
    [quantizeQ8(W, OUT, IN), 'int8-rows'],
    [quantizeQ8(W, OUT, IN), 'int8'],
    [quantizeQ4(W, OUT, IN), 'int8'],
  ] as const) {
    const u = await run(q, x, R, { inputs, codes: 'u8' });
    const s = await run(q, x, R, { inputs, codes: 's8' });
    assert.deepEqual(s.y, u.y, `${q.kind} ${inputs} y`);
    assert.deepEqual(s.dx, u.dx, `${q.kind} ${inputs} dx`);
  }
});

/** A head's dY over a vocabulary of V: odd rows softmax − one-hot, as the loss gives it; row 0 all 1s. */
function vocabGrad(V: number): Float32Array {
  const logits = Float32Array.from(randArray(N * V, 63, -6, 6));
  const dY = adversarial(N, V, 67);
  dY.fill(1, 0, V);
  for (let i = 1; i < N; i += 2) {
    const row = logits.subarray(i * V, (i + 1) * V).map(Math.exp);
    const z = row.reduce((s, v) => s + v, 0);
    row.forEach((v, o) => (dY[i * V + o] = v / z - (o === (i * 37) % V ? 1 : 0)));
  }
  return dY;
}

/**
 * A tied head's input gradient dx = dY·W̃ through `vocab`, from its int8 and Q8_0 (per-channel copy) codes, explicit
 * and by autodiff; checks the graph's ops and each product against the float one within `bound(i, k)` (given a =
 * dY·diag(s) and the codes), and returns the worst error / bound.
 */
async function vocabCase(
  vocab: 'blocks' | 'residual',
  op: string,
  bound: (a: Float32Array, q: { q: Int8Array }, V: number) => (i: number, k: number) => number,
): Promise<number> {
  const V = 300; // three blocks of 128, the last padded
  const W = Float32Array.from(randArray(V * IN, 61, -0.2, 0.2));
  const dY = vocabGrad(V);
  let worst = Number.POSITIVE_INFINITY;
  // per-channel int8, and a GGUF's Q8_0 blocks, whose int8-rows products read their per-channel copy (`back`)
  for (const [kind, codes] of (['int8', 'q8'] as const).flatMap((k) => CODES.map((c) => [k, c] as const))) {
    const w = kind === 'int8' ? quantizeInt8(W, V, IN) : quantizeQ8(W, V, IN);
    const q = w.kind === 'int8' ? w : w.back; // the codes the gradient multiplies by
    const g = new Graph('vocab-grad');
    const xi = g.input('x', 'f32', [N, IN]);
    const float = g.constant(dequantize(q), 'f32', [V, IN]); // a tied head's embedding: left unread
    const t = quantizedTensors(g, 'w', w, false, { inputs: 'int8-rows', codes, vocab }, { float, vocab: true });
    const y = t.product(xi);
    g.output('explicit', t.inputGrad(g.constant(dY, 'f32', [N, V]), xi));
    g.output('autodiff', grad(y.mul(g.constant(dY, 'f32', [N, V])).sum(), [xi])[0]);
    assert.ok(g.nodes.some((n) => n.op === op) && !g.nodes.some((n) => n.inputs.includes(float)), `${vocab}: ${op}`);
    const s = await compile(g, { worker: false });
    const out = await s.run({ x: { data: Float32Array.from(randArray(N * IN, 65)), shape: [N, IN] } });
    await s.dispose();
    const a = dY.map((v, k) => v * q.scale[k % V]);
    for (const name of ['explicit', 'autodiff']) {
      const dx = out[name].data as Float32Array;
      const code = (o: number, k: number) => q.q[o * IN + k];
      const w = checkProduct(`${vocab} ${kind} ${name}`, dx, a, code, [N, V, IN], () => 0, bound(a, q, V));
      worst = Math.min(worst, w);
    }
  }
  return worst;
}

test("a head's input gradient over the vocabulary: W̃'s own codes in blocks of 128, within bound (3)", async () => {
  // (3) VocabBackward: a = dY·diag(s) is rounded per block of VOCAB_BLOCK entries of a row (step amax/127), so
  //     |dx[i, k] − (dY·W̃)[i, k]| ≤ Σ_blocks (amax of a[i, block] / 254) · Σ_{o ∈ block} |q[o, k]|
  // and a row of probabilities keeps its small entries, which a grid per row (1) drops.
  const blocks = (a: Float32Array, q: { q: Int8Array }, V: number) => (i: number, k: number) => {
    let b = 0;
    for (let o0 = 0; o0 < V; o0 += 128) {
      let [amax, codeSum] = [0, 0];
      for (let o = o0; o < Math.min(V, o0 + 128); o++) {
        amax = Math.max(amax, Math.abs(a[i * V + o]));
        codeSum += Math.abs(q.q[o * IN + k]);
      }
      b += (amax / 254) * codeSum;
    }
    return b;
  };
  const worst = await vocabCase('blocks', 'MatMulNBits', blocks);
  assert.ok(worst > 1e-3, 'the products went through the integer kernel');
});

test("a head's vocabulary gradient as residual rows (AMX): two integer products, within bound (4)", async () => {
  // (4) VocabResidual: each row of a = dY·diag(s) is rounded to int8 by its amax r, and the rest again on a grid
  //     254× finer, so |a − ã| ≤ r / (2·127·254) per entry:
  //     |dx[i, k] − (dY·W̃)[i, k]| ≤ r_i / 64516 · Σ_o |q[o, k]|,
  // a bound 127× below a grid per row's (1), which a single rounding breaks.
  const residual = (a: Float32Array, q: { q: Int8Array }, V: number) => (i: number, k: number) => {
    let [amax, codeSum] = [0, 0];
    for (let o = 0; o < V; o++) {
      amax = Math.max(amax, Math.abs(a[i * V + o]));
      codeSum += Math.abs(q.q[o * IN + k]);
    }
    return (amax / 64516) * codeSum;
  };
  const worst = await vocabCase('residual', 'MatMulInteger', residual);
  assert.ok(worst > 1e-3, 'the products rounded (through the integer kernel)');
});

test("inputRows gives W̃'s rows exactly, as each backward multiplies by them (the fused head's W̃[t])", async () => {
  const [V, ids] = [300, [299, 0, 131, 131]];
  const W = Float32Array.from(randArray(V * IN, 71, -0.2, 0.2));
  for (const kind of ['int8', 'q8'] as const) {
    const w = kind === 'int8' ? quantizeInt8(W, V, IN) : quantizeQ8(W, V, IN);
    const q = w.kind === 'int8' ? w : w.back; // the codes every int8-rows input gradient multiplies by
    const float = dequantize(q);
    const ways = [
      ['float', { vocab: true }], // with the float weight below
      ...(['blocks', 'residual'] as const).map((v) => [v, { vocab: true }] as const),
      ['blocks', { vocab: false }], // no vocabulary: the per-row copy
    ] as const;
    for (const [[vocab, head], codes] of ways.flatMap((way) => CODES.map((c) => [way, c] as const))) {
      const g = new Graph('rows');
      const f = vocab === 'float' ? g.constant(float, 'f32', [V, IN]) : undefined;
      const kernels = { inputs: 'int8-rows', codes, vocab } as const;
      const t = quantizedTensors(g, 'w', w, false, kernels, { vocab: head.vocab, float: f });
      g.output('rows', t.inputRows(g.constant(BigInt64Array.from(ids, BigInt), 'i64', [ids.length])));
      const out = await (await compile(g, { worker: false })).run({});
      const want = ids.flatMap((o) => Array.from(float.subarray(o * IN, (o + 1) * IN)));
      assert.deepEqual(Array.from(out.rows.data as Float32Array), want, `${kind} ${codes} ${vocab} ${head.vocab}`);
    }
  }
});
