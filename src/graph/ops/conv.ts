// 2-D convolution (ONNX Conv) and its transpose (ONNX ConvTranspose) on [N, C, H, W], each with shape inference and
// a gradient rule written in the two ops themselves. Not here: 1-D/3-D convolution and auto_pad (lorakit emits
// explicit pads), the Conv2d module (nn/module.ts), adapters on convolutions (peft/).
import { LorakitError } from '../../errors.ts';
import type { Tensor } from '../graph.ts';
import { type Dim, fmtShape } from '../shape.ts';
import type { Attrs, ConvOp, OpDef } from './types.ts';
import { requireFloat, sameDtype } from './util.ts';

/** The attributes of one Conv/ConvTranspose node, validated and with ONNX's defaults filled in. */
export interface ConvParams {
  kernel: [number, number];
  strides: [number, number];
  /** [top, left, bottom, right], ONNX's begin-then-end order. */
  pads: [number, number, number, number];
  dilations: [number, number];
  group: number;
  /** ConvTranspose only: extra rows/columns at the bottom/right of the output. */
  outputPadding: [number, number];
}

/** How a caller spells a 2-D convolution (PyTorch's names; a number applies to both spatial axes). */
export interface Conv2dOptions {
  stride?: number | readonly [number, number];
  /** p, [ph, pw] (symmetric, as torch), or [top, left, bottom, right] (asymmetric, ONNX order). */
  padding?: number | readonly [number, number] | readonly [number, number, number, number];
  dilation?: number | readonly [number, number];
  groups?: number;
}

/** ConvTranspose adds the rows/columns of output that a strided Conv's size formula rounds away. */
export interface ConvTranspose2dOptions extends Conv2dOptions {
  outputPadding?: number | readonly [number, number];
}

const pair = (v: number | readonly number[]): number[] => (typeof v === 'number' ? [v, v] : [...v]);

/** The ONNX attributes of a 2-D Conv/ConvTranspose of weight `w` from PyTorch-style options. */
export function conv2dAttrs(w: Tensor, o: ConvTranspose2dOptions = {}): Attrs {
  const p = pair(o.padding ?? 0);
  const attrs: Attrs = {
    kernel_shape: w.shape.slice(2) as number[],
    strides: pair(o.stride ?? 1),
    pads: p.length === 2 ? [p[0], p[1], p[0], p[1]] : p,
    dilations: pair(o.dilation ?? 1),
    group: o.groups ?? 1,
  };
  if (o.outputPadding !== undefined) attrs.output_padding = pair(o.outputPadding);
  return attrs;
}

/** Reads and checks a node's attributes; `w` is the weight, whose spatial dims are the kernel. */
export function convParams(op: ConvOp, at: Attrs, w: Tensor): ConvParams {
  const ints = (name: string, n: number, dflt: number[], min: number): number[] => {
    const v = at[name] ?? dflt;
    if (!Array.isArray(v) || v.length !== n || v.some((x) => !Number.isInteger(x) || x < min)) {
      throw new LorakitError(
        'LK_INVALID_ARGUMENT',
        `${op}: ${name} must be ${n} integers >= ${min} (2-D convolution), got ${JSON.stringify(v)}`,
      );
    }
    return v;
  };
  if (at.auto_pad !== undefined && at.auto_pad !== 'NOTSET')
    throw new LorakitError('LK_UNSUPPORTED', `${op}: auto_pad ${at.auto_pad} is not supported; give explicit pads`);
  if (at.output_shape !== undefined)
    throw new LorakitError('LK_UNSUPPORTED', `${op}: output_shape is not supported; give pads and output_padding`);
  const [kh, kw] = w.shape.slice(2);
  if (typeof kh !== 'number' || typeof kw !== 'number')
    throw new LorakitError('LK_SHAPE_MISMATCH', `${op}: the kernel dims of weight ${fmtShape(w.shape)} must be static`);
  const kernel = ints('kernel_shape', 2, [kh, kw], 1);
  if (kernel[0] !== kh || kernel[1] !== kw) {
    throw new LorakitError(
      'LK_SHAPE_MISMATCH',
      `${op}: kernel_shape ${fmtShape(kernel)} differs from weight ${fmtShape(w.shape)}`,
    );
  }
  const group = at.group ?? 1;
  if (!Number.isInteger(group) || (group as number) < 1)
    throw new LorakitError('LK_INVALID_ARGUMENT', `${op}: group must be a positive integer, got ${group}`);
  const strides = ints('strides', 2, [1, 1], 1);
  const dilations = ints('dilations', 2, [1, 1], 1);
  const outputPadding = ints('output_padding', 2, [0, 0], 0);
  // ONNX: each output_padding must be below its stride or its dilation, or the extra rows would be a full step.
  if (outputPadding.some((v, i) => v >= Math.max(strides[i], dilations[i]))) {
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `${op}: output_padding ${fmtShape(outputPadding)} must be below strides ${fmtShape(strides)} or dilations ` +
        `${fmtShape(dilations)}`,
    );
  }
  return {
    kernel: [kh, kw],
    strides: strides as [number, number],
    pads: ints('pads', 4, [0, 0, 0, 0], 0) as ConvParams['pads'],
    dilations: dilations as [number, number],
    group: group as number,
    outputPadding: outputPadding as [number, number],
  };
}

/** The attributes that reproduce `p` on a new node (output_padding only when asked for). */
function attrsOf(p: ConvParams, outputPadding?: readonly number[]): Attrs {
  const a: Attrs = {
    kernel_shape: [...p.kernel],
    strides: [...p.strides],
    pads: [...p.pads],
    dilations: [...p.dilations],
    group: p.group,
  };
  if (outputPadding) a.output_padding = [...outputPadding];
  return a;
}

/** Checks ranks, dtypes, channels and bias of a Conv (x [N, C, H, W], w [M, C/g, kh, kw]) or ConvTranspose
 * (x [N, C, H, W], w [C, M/g, kh, kw]); returns the parameters and M, the output channels. */
function checkOperands(op: ConvOp, ins: readonly (Tensor | null)[], at: Attrs): { p: ConvParams; m: Dim } {
  const [x, w, b] = [ins[0]!, ins[1]!, ins[2] ?? null];
  requireFloat(x, op);
  sameDtype([x, w, b]);
  // Refused here rather than when ORT loads the graph ("Could not find an implementation for Conv(11)").
  if (x.dtype !== 'f32' && x.dtype !== 'f16') {
    throw new LorakitError(
      'LK_UNSUPPORTED',
      `${op}: ONNX Runtime's CPU kernels take f32 or f16, got ${x.dtype}; cast around the op ` +
        `(x.cast('f32')), as float64 gradient checks do`,
    );
  }
  if (x.rank !== 4 || w.rank !== 4) {
    throw new LorakitError(
      'LK_UNSUPPORTED',
      `${op}: lorakit supports 2-D convolution only, input [N, C, H, W] and weight of rank 4; got ` +
        `${fmtShape(x.shape)} and ${fmtShape(w.shape)}`,
    );
  }
  const p = convParams(op, at, w);
  const g = p.group;
  const known = (...ds: Dim[]) => ds.every((d) => typeof d === 'number');
  const [c, w0, w1] = [x.shape[1], w.shape[0], w.shape[1]];
  // Conv: C = g·w[1] and g | M = w[0]; ConvTranspose: C = w[0], g | C, and M = g·w[1].
  const bad =
    op === 'Conv'
      ? (known(c, w1) && c !== g * (w1 as number)) || (known(w0) && (w0 as number) % g !== 0)
      : (known(c, w0) && c !== w0) || (known(c) && (c as number) % g !== 0);
  if (bad) {
    const want = op === 'Conv' ? '[M, C/group, kh, kw] with group | M' : '[C, M/group, kh, kw] with group | C';
    throw new LorakitError(
      'LK_SHAPE_MISMATCH',
      `${op}: input ${fmtShape(x.shape)} and weight ${fmtShape(w.shape)} do not fit with group ${g}; the weight ` +
        `must be ${want}`,
    );
  }
  const m = op === 'Conv' ? w0 : typeof w1 === 'number' ? g * w1 : x.graph.freshDim();
  if (b && (b.rank !== 1 || (known(b.shape[0], m) && b.shape[0] !== m))) {
    throw new LorakitError(
      'LK_SHAPE_MISMATCH',
      `${op}: bias ${fmtShape(b.shape)} must be [${m}], one per output channel (weight ${fmtShape(w.shape)})`,
    );
  }
  return { p, m };
}

/** Conv output size along one axis: ⌊(H + p₀ + p₁ − d(k−1) − 1)/s⌋ + 1; a symbol is kept when the size is unchanged. */
function convDim(x: Tensor, h: Dim, k: number, s: number, p0: number, p1: number, d: number): Dim {
  const extra = p0 + p1 - d * (k - 1);
  if (typeof h !== 'number') return s === 1 && extra === 0 ? h : x.graph.freshDim();
  return Math.floor((h + extra - 1) / s) + 1;
}

/** ConvTranspose output size along one axis: s(H − 1) + op + d(k − 1) + 1 − p₀ − p₁. */
function convTransposeDim(x: Tensor, h: Dim, k: number, s: number, p0: number, p1: number, d: number, op: number): Dim {
  const extra = op + d * (k - 1) - p0 - p1;
  if (typeof h !== 'number') return s === 1 && extra === 0 ? h : x.graph.freshDim();
  return s * (h - 1) + extra + 1;
}

/** The static [H, W] of `t` [N, C, H, W], or LK_NO_GRADIENT: the backward's padding depends on them. */
function spatial(t: Tensor, op: ConvOp): [number, number] {
  const [h, w] = t.shape.slice(2);
  if (typeof h !== 'number' || typeof w !== 'number') {
    throw new LorakitError(
      'LK_NO_GRADIENT',
      `${op} gradient needs static spatial dims (its output_padding depends on them), got ${t.toString()}`,
    );
  }
  return [h, w];
}

/**
 * dW of y = Conv(x, W) (x [N, C, H, W], dy [N, M, OH, OW]) → [M, C/g, kh, kw], as one grouped Conv:
 * dW[m, c, i, j] = Σ_{n, oh, ow} dY[n, m, oh, ow] · X[n, g(m)·C/g + c, oh·s − p + i·d], a convolution over (oh, ow)
 * of X with "batch" c, "channels" (g, n) and kernel dY[n, m] in which stride and dilation swap roles. ConvTranspose's
 * dW is the same sum with x and dy exchanged.
 */
function convWeightGrad(x: Tensor, dy: Tensor, p: ConvParams, op: ConvOp): Tensor {
  const [h, w] = spatial(x, op);
  const [oh, ow] = spatial(dy, op);
  const [kh, kw] = p.kernel;
  const [[sh, sw], [dh, dw], g] = [p.strides, p.dilations, p.group];
  const cg = (x.shape[1] as number) / g;
  const xr =
    g === 1
      ? x.transpose([1, 0, 2, 3]) // [C, N, H, W]
      : x
          .reshape([0, g, cg, h, w]) // [N, g, C/g, H, W]
          .transpose([2, 1, 0, 3, 4]) // [C/g, g, N, H, W]
          .reshape([cg, -1, h, w]); // [C/g, g·N, H, W]: group k of the channels is batch n of group k
  const k = dy.transpose([1, 0, 2, 3]); // [M, N, OH, OW]: one kernel per output channel, over the N images
  // Pad the end only as far as the forward read: rows up to d(k−1) + s(OH−1) past the top padding.
  const [pt, pl] = [p.pads[0], p.pads[1]];
  const pb = Math.max(0, dh * (kh - 1) + sh * (oh - 1) + 1 - h - pt);
  const pr = Math.max(0, dw * (kw - 1) + sw * (ow - 1) + 1 - w - pl);
  const z = x.graph.op('Conv', [xr, k], {
    kernel_shape: [oh, ow],
    strides: [dh, dw],
    pads: [pt, pl, pb, pr],
    dilations: [sh, sw],
    group: g,
  }); // [C/g, M, ≥kh, ≥kw]: rows past kh exist when the forward never read the input's last rows
  const zk = z.shape[2] === kh && z.shape[3] === kw ? z : z.slice([0, 0], [kh, kw], [2, 3]);
  return zk.transpose([1, 0, 2, 3]); // [M, C/g, kh, kw]
}

export const convOps: Record<ConvOp, OpDef> = {
  // y[n, m, oh, ow] = b[m] + Σ_{c, i, j} x[n, g(m)·C/g + c, oh·s − p + i·d] · W[m, c, i, j], zero outside x
  Conv: {
    infer: (ins, at) => {
      const { p, m } = checkOperands('Conv', ins, at);
      const [x, [kh, kw], [sh, sw], [pt, pl, pb, pr], [dh, dw]] = [ins[0]!, p.kernel, p.strides, p.pads, p.dilations];
      const out = [convDim(x, x.shape[2], kh, sh, pt, pb, dh), convDim(x, x.shape[3], kw, sw, pl, pr, dw)];
      if (out.some((d) => typeof d === 'number' && d < 1)) {
        throw new LorakitError(
          'LK_SHAPE_MISMATCH',
          `Conv: input ${fmtShape(x.shape)} is smaller than the dilated kernel of weight ` +
            `${fmtShape(ins[1]!.shape)} (pads ${fmtShape(p.pads)}, dilations ${fmtShape(p.dilations)})`,
        );
      }
      return [{ dtype: x.dtype, shape: [x.shape[0], m, ...out] }];
    },
    // Conv is linear in x: dX = Convᵀ(dY, W) = ConvTranspose(dY, W), with output_padding = the input rows the size
    // formula's floor dropped, so dX is [H, W] again. dW: convWeightGrad. dB = Σ_{n, oh, ow} dY.
    vjp: (n, [dy], need) => {
      const [x, w] = [n.inputs[0]!, n.inputs[1]!];
      const p = convParams('Conv', n.attrs, w);
      const [h, wd] = spatial(x, 'Conv');
      const [[kh, kw], [sh, sw], [pt, pl, pb, pr], [dh, dw]] = [p.kernel, p.strides, p.pads, p.dilations];
      const outPad = [(h + pt + pb - dh * (kh - 1) - 1) % sh, (wd + pl + pr - dw * (kw - 1) - 1) % sw];
      const dx = need[0] ? dy!.graph.op('ConvTranspose', [dy!, w], attrsOf(p, outPad)) : null; // [N, C, H, W]
      const dW = need[1] ? convWeightGrad(x, dy!, p, 'Conv') : null; // [M, C/g, kh, kw]
      const db = need[2] ? dy!.sum([0, 2, 3]) : null; // [M]
      return [dx, dW, db];
    },
  },
  // The adjoint of Conv in its input: y[n, g(c)·M/g + m, h·s − p + i·d] += x[n, c, h, w] · W[c, m, i, j] (+ b)
  ConvTranspose: {
    infer: (ins, at) => {
      const { p, m } = checkOperands('ConvTranspose', ins, at);
      const [x, [kh, kw], [sh, sw], [pt, pl, pb, pr], [dh, dw]] = [ins[0]!, p.kernel, p.strides, p.pads, p.dilations];
      const [oph, opw] = p.outputPadding;
      const out = [
        convTransposeDim(x, x.shape[2], kh, sh, pt, pb, dh, oph),
        convTransposeDim(x, x.shape[3], kw, sw, pl, pr, dw, opw),
      ];
      if (out.some((d) => typeof d === 'number' && d < 1)) {
        throw new LorakitError(
          'LK_SHAPE_MISMATCH',
          `ConvTranspose: pads ${fmtShape(p.pads)} remove the whole output of input ${fmtShape(x.shape)} and ` +
            `weight ${fmtShape(ins[1]!.shape)}`,
        );
      }
      return [{ dtype: x.dtype, shape: [x.shape[0], m, ...out] }];
    },
    // ConvTranspose(·, W) = Conv(·, W)ᵀ, so dX = Conv(dY, W) (output_padding < stride makes it [H, W] again);
    // dW is Conv's weight gradient with the roles of x and dy exchanged; dB = Σ_{n, h, w} dY.
    vjp: (n, [dy], need) => {
      const [x, w] = [n.inputs[0]!, n.inputs[1]!];
      const p = convParams('ConvTranspose', n.attrs, w);
      const dx = need[0] ? dy!.graph.op('Conv', [dy!, w], attrsOf(p)) : null; // [N, C, H, W]
      const dW = need[1] ? convWeightGrad(dy!, x, p, 'ConvTranspose') : null; // [C, M/g, kh, kw]
      const db = need[2] ? dy!.sum([0, 2, 3]) : null; // [M]
      return [dx, dW, db];
    },
  },
};
