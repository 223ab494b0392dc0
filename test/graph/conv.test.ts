// Conv and ConvTranspose against an independent float64 host reference: the forward element by element, and dX, dW,
// dB from lorakit's gradient rules against central differences of the reference. ORT's CPU kernels run f32 (and
// f16), not f64, so the graph casts around the op and the tolerance is float32's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Graph, grad } from '../../src/graph/index.ts';
import { compile } from '../../src/runtime/index.ts';
import { LorakitError } from '../../src/errors.ts';
import { assertAllclose, randArray } from '../helpers.ts';

type Shape4 = [number, number, number, number];
interface Params {
  strides: [number, number];
  pads: [number, number, number, number];
  dilations: [number, number];
  group: number;
  outputPadding: [number, number];
}
interface Case {
  name: string;
  op: 'Conv' | 'ConvTranspose';
  x: Shape4;
  w: Shape4;
  bias: boolean;
  p: Partial<Params>;
  /** Declare the batch dim as a symbol (the gradient then reshapes with a run-time N). */
  symbolicBatch?: boolean;
}

const full = (p: Partial<Params>): Params => ({
  strides: [1, 1],
  pads: [0, 0, 0, 0],
  dilations: [1, 1],
  group: 1,
  outputPadding: [0, 0],
  ...p,
});

/** y[n, m, oh, ow] = b[m] + Σ_{c, i, j} x[n, g(m)·C/g + c, oh·s − p + i·d] · w[m, c, i, j] (zero outside x). */
function refConv(x: Float64Array, xs: Shape4, w: Float64Array, ws: Shape4, b: Float64Array | null, p: Params) {
  const [N, C, H, W] = xs;
  const [M, Cg, kh, kw] = ws;
  const [[sh, sw], [pt, pl, pb, pr], [dh, dw], g] = [p.strides, p.pads, p.dilations, p.group];
  const OH = Math.floor((H + pt + pb - dh * (kh - 1) - 1) / sh) + 1;
  const OW = Math.floor((W + pl + pr - dw * (kw - 1) - 1) / sw) + 1;
  const y = new Float64Array(N * M * OH * OW);
  for (let n = 0; n < N; n++)
    for (let m = 0; m < M; m++) {
      const c0 = Math.floor(m / (M / g)) * Cg;
      for (let oh = 0; oh < OH; oh++)
        for (let ow = 0; ow < OW; ow++) {
          let s = b ? b[m] : 0;
          for (let c = 0; c < Cg; c++)
            for (let i = 0; i < kh; i++)
              for (let j = 0; j < kw; j++) {
                const [ih, iw] = [oh * sh - pt + i * dh, ow * sw - pl + j * dw];
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                s += x[((n * C + c0 + c) * H + ih) * W + iw] * w[((m * Cg + c) * kh + i) * kw + j];
              }
          y[((n * M + m) * OH + oh) * OW + ow] = s;
        }
    }
  return { y, shape: [N, M, OH, OW] };
}

/** Scatter form: y[n, g(c)·M/g + m, h·s − p + i·d, ...] += x[n, c, h, w] · w[c, m, i, j], plus b. */
function refConvTranspose(x: Float64Array, xs: Shape4, w: Float64Array, ws: Shape4, b: Float64Array | null, p: Params) {
  const [N, C, H, W] = xs;
  const [, Mg, kh, kw] = ws;
  const [[sh, sw], [pt, pl, pb, pr], [dh, dw], g] = [p.strides, p.pads, p.dilations, p.group];
  const M = Mg * g;
  const OH = sh * (H - 1) + p.outputPadding[0] + dh * (kh - 1) + 1 - pt - pb;
  const OW = sw * (W - 1) + p.outputPadding[1] + dw * (kw - 1) + 1 - pl - pr;
  const y = new Float64Array(N * M * OH * OW);
  if (b) for (let k = 0; k < y.length; k++) y[k] = b[Math.floor(k / (OH * OW)) % M];
  for (let n = 0; n < N; n++)
    for (let c = 0; c < C; c++) {
      const m0 = Math.floor(c / (C / g)) * Mg;
      for (let h = 0; h < H; h++)
        for (let v = 0; v < W; v++)
          for (let m = 0; m < Mg; m++)
            for (let i = 0; i < kh; i++)
              for (let j = 0; j < kw; j++) {
                const [oh, ow] = [h * sh - pt + i * dh, v * sw - pl + j * dw];
                if (oh < 0 || oh >= OH || ow < 0 || ow >= OW) continue;
                y[((n * M + m0 + m) * OH + oh) * OW + ow] +=
                  x[((n * C + c) * H + h) * W + v] * w[((c * Mg + m) * kh + i) * kw + j];
              }
    }
  return { y, shape: [N, M, OH, OW] };
}

const cases: Case[] = [
  {
    name: 'stride 2, asymmetric pads [1, 0, 2, 1], 3×2 kernel, bias',
    op: 'Conv',
    x: [2, 3, 7, 6],
    w: [4, 3, 3, 2],
    bias: true,
    p: { strides: [2, 2], pads: [1, 0, 2, 1] },
  },
  {
    name: 'dilation 2, pads [2, 1, 1, 2], no bias',
    op: 'Conv',
    x: [1, 2, 8, 7],
    w: [3, 2, 3, 3],
    bias: false,
    p: { dilations: [2, 2], pads: [2, 1, 1, 2] },
  },
  {
    name: 'groups 2, stride [2, 1], dilation [1, 2], bias',
    op: 'Conv',
    x: [2, 4, 6, 7],
    w: [6, 2, 2, 3],
    bias: true,
    p: { group: 2, strides: [2, 1], dilations: [1, 2], pads: [0, 1, 1, 0] },
  },
  {
    name: 'groups 2 with a symbolic batch dim',
    op: 'Conv',
    x: [2, 4, 6, 7],
    w: [6, 2, 2, 3],
    bias: true,
    p: { group: 2, strides: [2, 1], dilations: [1, 2], pads: [0, 1, 1, 0] },
    symbolicBatch: true,
  },
  {
    name: 'depthwise (groups = C = 3, two filters each), stride 2, padding 1, bias',
    op: 'Conv',
    x: [2, 3, 6, 6],
    w: [6, 1, 3, 3],
    bias: true,
    p: { group: 3, strides: [2, 2], pads: [1, 1, 1, 1] },
  },
  {
    name: 'stride 2 that never reads the last row and column (the weight gradient slices its output)',
    op: 'Conv',
    x: [1, 2, 8, 8],
    w: [2, 2, 3, 3],
    bias: false,
    p: { strides: [2, 2] },
  },
  {
    name: 'stride [3, 2] with dilation 2 (input gradient needs output_padding [2, 0])',
    op: 'Conv',
    x: [1, 2, 8, 5],
    w: [2, 2, 2, 2],
    bias: true,
    p: { strides: [3, 2], dilations: [2, 2] },
  },
  { name: '1×1 kernel, bias', op: 'Conv', x: [2, 3, 4, 4], w: [5, 3, 1, 1], bias: true, p: {} },
  {
    name: 'stride 2, output_padding 1, pads [1, 0, 0, 1], bias',
    op: 'ConvTranspose',
    x: [2, 3, 3, 4],
    w: [3, 2, 3, 2],
    bias: true,
    p: { strides: [2, 2], pads: [1, 0, 0, 1], outputPadding: [1, 1] },
  },
  {
    name: 'groups 2, dilation 2, stride [1, 2], output_padding [0, 1]',
    op: 'ConvTranspose',
    x: [1, 4, 4, 3],
    w: [4, 3, 2, 2],
    bias: false,
    p: { group: 2, dilations: [2, 2], strides: [1, 2], outputPadding: [0, 1], pads: [1, 1, 0, 0] },
  },
];

const size = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

for (const c of cases) {
  test(`${c.op} ${c.name}: forward, dX, dW, dB equal a float64 host reference and its differences`, async () => {
    const p = full(c.p);
    const ref = c.op === 'Conv' ? refConv : refConvTranspose;
    const outChannels = c.op === 'Conv' ? c.w[0] : c.w[1] * p.group;
    const shapes = [c.x, c.w, [outChannels]];
    const vals = [randArray(size(c.x), 1), randArray(size(c.w), 2), c.bias ? randArray(outChannels, 3) : null];
    const expected = ref(vals[0]!, c.x, vals[1]!, c.w, vals[2], p);
    const r = randArray(expected.y.length, 4);

    const g = new Graph('conv');
    const x = g.input('x', 'f64', c.symbolicBatch ? ['N', ...c.x.slice(1)] : c.x);
    const w = g.input('w', 'f64', c.w);
    const b = c.bias ? g.input('b', 'f64', [outChannels]) : null;
    const opts = { stride: p.strides, padding: p.pads, dilation: p.dilations, groups: p.group };
    const [xf, wf, bf] = [x.cast('f32'), w.cast('f32'), b ? b.cast('f32') : null];
    const y = (
      c.op === 'Conv'
        ? xf.conv2d(wf, bf, opts)
        : xf.convTranspose2d(wf, bf, { ...opts, outputPadding: p.outputPadding })
    ).cast('f64');
    assert.deepEqual(y.shape, c.symbolicBatch ? ['N', ...expected.shape.slice(1)] : expected.shape);
    const loss = y.mul(g.constant(r, 'f64', expected.shape)).sum();
    const ins = b ? [x, w, b] : [x, w];
    g.output('y', y);
    grad(loss, ins).forEach((d, i) => g.output(`d${i}`, d));
    const s = await compile(g, { worker: false });
    const feeds = Object.fromEntries(ins.map((t, i) => [t.name, { data: vals[i]!, shape: shapes[i] }]));
    const out = await s.run(feeds);
    await s.dispose();
    assertAllclose(out.y.data as Float64Array, expected.y, { rtol: 1e-5, atol: 1e-5, what: `${c.op} forward` });

    // L = Σ y ⊙ r is linear in each operand, so central differences are exact up to rounding.
    const hostLoss = () => ref(vals[0]!, c.x, vals[1]!, c.w, vals[2], p).y.reduce((a, v, k) => a + v * r[k], 0);
    const h = 1e-3;
    ins.forEach((_, i) => {
      const v = vals[i]!;
      const numeric = v.map((v0, k) => {
        v[k] = v0 + h;
        const lp = hostLoss();
        v[k] = v0 - h;
        const lm = hostLoss();
        v[k] = v0;
        return (lp - lm) / (2 * h);
      });
      assertAllclose(out[`d${i}`].data as Float64Array, numeric, {
        rtol: 1e-5,
        atol: 1e-5,
        what: `${c.op} d${['X', 'W', 'B'][i]}`,
      });
    });
  });
}

/** The LorakitError that `fn` throws (the assertion fails when it throws nothing or something else). */
function thrown(fn: () => unknown): LorakitError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof LorakitError, String(e));
    return e;
  }
  assert.fail('expected a LorakitError');
}

test('Conv on a 3-D input is LK_UNSUPPORTED and names both shapes', () => {
  const g = new Graph();
  const e = thrown(() => g.input('x', 'f32', [1, 3, 8]).conv2d(g.input('w', 'f32', [4, 3, 3])));
  assert.equal(e.code, 'LK_UNSUPPORTED');
  assert.match(e.message, /2-D convolution only.*\[1, 3, 8\] and \[4, 3, 3\]/);
});

test('Conv in f64 is LK_UNSUPPORTED before ONNX Runtime sees it (its kernels take f32 and f16)', () => {
  const g = new Graph();
  const e = thrown(() => g.input('x', 'f64', [1, 2, 4, 4]).conv2d(g.input('w', 'f64', [2, 2, 3, 3])));
  assert.equal(e.code, 'LK_UNSUPPORTED');
  assert.match(e.message, /take f32 or f16, got f64/);
});

test('Conv whose weight has the wrong input channels for its groups prints both shapes', () => {
  const g = new Graph();
  const x = g.input('x', 'f32', ['N', 4, 8, 8]);
  const e = thrown(() => x.conv2d(g.input('w', 'f32', [6, 4, 3, 3]), null, { groups: 2 }));
  assert.equal(e.code, 'LK_SHAPE_MISMATCH');
  assert.match(e.message, /input \[N, 4, 8, 8\] and weight \[6, 4, 3, 3\] do not fit with group 2/);
  const bias = thrown(() => x.conv2d(g.input('w2', 'f32', [6, 2, 3, 3]), g.input('b', 'f32', [4]), { groups: 2 }));
  assert.match(bias.message, /bias \[4\] must be \[6\]/);
});

test('Conv with a dilated kernel larger than the padded input is LK_SHAPE_MISMATCH', () => {
  const g = new Graph();
  const x = g.input('x', 'f32', [1, 1, 4, 4]);
  const e = thrown(() => x.conv2d(g.input('w', 'f32', [1, 1, 3, 3]), null, { dilation: 2 }));
  assert.equal(e.code, 'LK_SHAPE_MISMATCH');
  assert.match(e.message, /smaller than the dilated kernel/);
});

test('Conv keeps a symbolic spatial dim when the size is unchanged, and refuses output_padding >= stride', () => {
  const g = new Graph();
  const x = g.input('x', 'f32', ['N', 2, 'H', 'W']);
  assert.deepEqual(x.conv2d(g.input('w', 'f32', [3, 2, 3, 3]), null, { padding: 1 }).shape, ['N', 3, 'H', 'W']);
  const w = g.input('wt', 'f32', [2, 3, 3, 3]);
  const e = thrown(() => x.convTranspose2d(w, null, { stride: 2, outputPadding: 2 }));
  assert.equal(e.code, 'LK_INVALID_ARGUMENT');
  assert.match(e.message, /output_padding \[2, 2\] must be below strides \[2, 2\]/);
});

test('Conv runs in f16 (the other dtype its CPU kernel takes), within f16 rounding of the reference', async () => {
  const p = full({ strides: [2, 1], pads: [1, 1, 0, 0], group: 2 });
  const [xs, ws]: Shape4[] = [
    [1, 4, 5, 5],
    [4, 2, 3, 3],
  ];
  const [x, w, b] = [randArray(size(xs), 5), randArray(size(ws), 6), randArray(4, 7)];
  const g = new Graph();
  const [xi, wi, bi] = [g.input('x', 'f64', xs), g.input('w', 'f64', ws), g.input('b', 'f64', [4])];
  const h = (t: typeof xi) => t.cast('f16');
  g.output('y', h(xi).conv2d(h(wi), h(bi), { stride: p.strides, padding: p.pads, groups: 2 }).cast('f64'));
  const s = await compile(g, { worker: false });
  const out = await s.run({ x: { data: x, shape: xs }, w: { data: w, shape: ws }, b: { data: b, shape: [4] } });
  await s.dispose();
  assertAllclose(out.y.data as Float64Array, refConv(x, xs, w, ws, b, p).y, { rtol: 1e-2, atol: 1e-2, what: 'f16' });
});
